"""Trading a stock's future or option on its signals: choice, whole lots, exits, expiry exit."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tests.support.factories import (
    ManualClock,
    ScriptedStrategy,
    ist,
    ist_ms,
    make_engine,
    make_instrument,
    make_limits,
    make_position,
    make_tick,
)
from upstox_bot.clock import NseCalendar
from upstox_bot.domain import (
    Direction,
    ExitReason,
    InstrumentKind,
    OptionType,
    OrderPurpose,
    RiskRule,
    SignalStatus,
    SignalType,
    Tick,
)
from upstox_bot.feed.derivatives import ChainPricer, DerivativeTicks
from upstox_bot.options.chain import simulate_fno_chain
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineState
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.routing import ContractBook, StockRouter

CALENDAR = NseCalendar.default()
SBIN = make_instrument(instrument_key="NSE_EQ|SBIN", trading_symbol="SBIN")
SBIN_LOT = 750
SPOT = 94_050  # Rs 940.50
BIG = make_limits(capital_paise=1_000_000_000)  # Rs 1 crore: one SBIN future lot fits


def _book(trade: InstrumentKind, day: date, **kw: Any) -> ContractBook:
    return ContractBook(
        [SBIN],
        trade=trade,
        calendar=CALENDAR,
        pricer=ChainPricer(),
        option_min_days_to_expiry=kw.pop("min_days", 7),
        expiry_exit_sessions=kw.pop("sessions", 1),
        contracts=simulate_fno_chain(SBIN, SPOT, day, CALENDAR, lot_size=SBIN_LOT),
    )


class FnoHarness:
    """An engine trading SBIN's contracts, the paper broker, and the derived contract ticks."""

    def __init__(
        self,
        script: dict[int, list[SignalType]],
        trade: InstrumentKind,
        *,
        day: date = date(2026, 11, 25),
        **kw: Any,
    ) -> None:
        self.day = day
        self.book = _book(trade, day, **{k: kw.pop(k) for k in ("min_days", "sessions") if k in kw})
        self.engine, self.journal, self.clock = make_engine(
            ScriptedStrategy(script),
            instruments=[SBIN],
            clock=ManualClock(ist(9, 15, day=day)),
            **kw,
        )
        # the same engine, trading SBIN's contracts
        self.engine = Engine(
            config=self.engine.config,
            instruments=self.engine.instruments,
            strategy=self.engine.strategy,
            risk=self.engine.risk,
            exits=self.engine.exits,
            journal=self.journal,
            charges=self.engine.charges,
            clock=self.clock,
            router=self.book,
        )
        self.broker = PaperBroker(
            clock=self.clock,
            slippage_bps=Decimal(0),
            tick_size_paise=lambda key: (self.book.instrument_or_none(key) or SBIN).tick_size_paise,
        )
        self.executor = OrderExecutor(engine=self.engine, broker=self.broker, journal=self.journal)
        self.feed = DerivativeTicks(
            self.book,
            self.book.pricer,  # type: ignore[arg-type]
            lambda: self.engine.positions.keys() | self.engine.pending_entries.keys(),
        )

    def tick(self, hour: int, minute: int, second: int, price: int) -> list[Tick]:
        """One SBIN trade and the watched contracts' ticks derived from it."""
        ms = ist_ms(hour, minute, second, day=self.day)
        self.clock.set_ms(ms)
        seen = []
        for tick in self.feed.wrap(
            [make_tick(instrument_key=SBIN.instrument_key, ts_ms=ms, ltp_paise=price)]
        ):
            seen.append(tick)
            self.executor.apply_fills(self.broker.on_tick(tick))
            self.executor.execute(self.engine.on_tick(tick))
        return seen

    def timer(self, hour: int, minute: int) -> None:
        ms = ist_ms(hour, minute, day=self.day)
        self.clock.set_ms(ms)
        self.executor.execute(self.engine.on_timer(ms))

    def signal_at_10(self, price: int = SPOT) -> None:
        """The 10:00 candle closes at 10:01 (scripted signal); the next trade fills."""
        self.tick(10, 0, 1, price)
        self.timer(10, 1)
        self.tick(10, 1, 0, price)


def test_future_is_traded_in_whole_lots_on_a_long_signal() -> None:
    h = FnoHarness({ist_ms(10, 0): [SignalType.ENTRY_LONG]}, InstrumentKind.FUTURE, limits=BIG)
    h.signal_at_10()
    ((key, position),) = h.engine.positions.items()
    contract = h.book.instrument_or_none(key)
    assert contract is not None
    assert contract.kind is InstrumentKind.FUTURE
    assert contract.expiry == "2026-12-29"  # November's expired on the 24th
    assert position.direction is Direction.LONG
    assert position.quantity % SBIN_LOT == 0
    assert position.lots == position.quantity // SBIN_LOT >= 1
    # the future trades above the spot by the cost of carry (34 days at 7 %)
    assert SPOT < position.entry_price_paise < SPOT * 1.01
    (order,) = h.journal.orders.values()
    assert order.instrument_key == key
    assert order.lots == position.lots
    intent_audit = next(a for a in h.journal.audits if a.event == "order.intent")
    assert intent_audit.data["underlying_key"] == SBIN.instrument_key


def test_short_signal_sells_the_future_only_when_shorts_are_allowed() -> None:
    script = {ist_ms(10, 0): [SignalType.ENTRY_SHORT]}
    refused = FnoHarness(script, InstrumentKind.FUTURE, limits=BIG)
    refused.signal_at_10()
    assert not refused.engine.positions
    assert refused.journal.decisions[-1].rule is RiskRule.SHORTS_DISABLED

    allowed = FnoHarness(
        script,
        InstrumentKind.FUTURE,
        limits=make_limits(capital_paise=1_000_000_000, allow_short=True),
    )
    allowed.signal_at_10()
    ((_, position),) = allowed.engine.positions.items()
    assert position.direction is Direction.SHORT


@pytest.mark.parametrize(
    ("signal", "option_type"),
    [(SignalType.ENTRY_LONG, OptionType.CALL), (SignalType.ENTRY_SHORT, OptionType.PUT)],
)
def test_option_is_the_atm_call_or_put_always_bought(
    signal: SignalType, option_type: OptionType
) -> None:
    # ALLOW_SHORT is off (make_limits): a short signal still buys a put
    h = FnoHarness({ist_ms(10, 0): [signal]}, InstrumentKind.OPTION)
    h.signal_at_10()
    ((key, position),) = h.engine.positions.items()
    option = h.book.instrument_or_none(key)
    assert option is not None
    assert option.option_type is option_type
    assert option.strike_paise == 94_000  # the strike nearest Rs 940.50 (Rs 10 steps)
    assert position.direction is Direction.LONG
    assert position.quantity == position.lots * SBIN_LOT
    # Rs 1 lakh, 30 % cap: one lot of a ~Rs 30 premium x 750 fits, the stop is on the premium
    assert position.entry_price_paise * position.quantity <= 3_000_000
    assert position.stop_paise < position.entry_price_paise < position.target_paise


def test_option_expiry_with_too_few_days_left_is_skipped() -> None:
    # 2026-12-22: December's expiry (29th) is 7 days away, not more than 7: January's is used
    day = date(2026, 12, 22)
    h = FnoHarness(
        {ist_ms(10, 0, day=day): [SignalType.ENTRY_LONG]}, InstrumentKind.OPTION, day=day
    )
    h.signal_at_10()
    ((key, _),) = h.engine.positions.items()
    option = h.book.instrument_or_none(key)
    assert option is not None
    assert option.expiry == "2027-01-25"  # the last Tuesday, 26th, is Republic Day


def test_one_lot_too_big_is_refused_naming_the_position_cap() -> None:
    # Rs 1 lakh, 30 % cap = Rs 30,000; one SBIN future lot is worth about Rs 7 lakh
    h = FnoHarness({ist_ms(10, 0): [SignalType.ENTRY_LONG]}, InstrumentKind.FUTURE)
    h.signal_at_10()
    assert not h.engine.positions
    assert not h.journal.orders
    decision = h.journal.decisions[-1]
    assert not decision.approved
    assert decision.rule is RiskRule.POSITION_SIZE
    assert "lot 750" in decision.reason
    assert decision.instrument_key.endswith("_FUT")
    ((_, status),) = h.journal.signals.values()
    assert status is SignalStatus.REJECTED


def test_no_contract_for_the_stock_is_refused_with_no_contract() -> None:
    h = FnoHarness({ist_ms(10, 0): [SignalType.ENTRY_LONG]}, InstrumentKind.OPTION, min_days=90)
    h.signal_at_10()
    decision = h.journal.decisions[-1]
    assert decision.rule is RiskRule.NO_CONTRACT
    assert decision.instrument_key == SBIN.instrument_key
    assert "more than 90 days" in decision.reason


def test_exit_signal_on_the_stock_closes_the_put_of_a_short_signal() -> None:
    script = {
        ist_ms(10, 0): [SignalType.ENTRY_SHORT],
        ist_ms(10, 3): [SignalType.EXIT_LONG],  # not what the put stands for: ignored
        ist_ms(10, 5): [SignalType.EXIT_SHORT],
    }
    h = FnoHarness(script, InstrumentKind.OPTION)
    h.signal_at_10()
    ((key, _),) = h.engine.positions.items()
    h.tick(10, 3, 1, SPOT)
    h.timer(10, 4)
    assert key in h.engine.positions
    statuses = [s for _, s in h.journal.signals.values()]
    assert statuses[-1] is SignalStatus.IGNORED
    h.tick(10, 5, 1, SPOT)
    h.timer(10, 6)  # EXIT_SHORT on SBIN: the put's exit order goes
    ticks = h.tick(10, 6, 1, SPOT)  # the put's next tick fills it
    assert [t.instrument_key for t in ticks] == [key, SBIN.instrument_key]
    assert not h.engine.positions
    (trade,) = h.journal.trades
    assert trade.instrument_key == key
    assert trade.exit_reason is ExitReason.SIGNAL


def test_strategy_sees_the_signal_direction_the_contract_stands_for() -> None:
    seen: list[Direction | None] = []

    class Recording(ScriptedStrategy):
        def evaluate(self, candles: Any, *, position: Direction | None, now: Any) -> list[Any]:
            seen.append(position)
            return super().evaluate(candles, position=position, now=now)

    h = FnoHarness({}, InstrumentKind.OPTION)
    h.engine.reconfigure(strategy=Recording({ist_ms(10, 0): [SignalType.ENTRY_SHORT]}))
    h.signal_at_10()
    h.tick(10, 1, 30, SPOT)
    h.timer(10, 2)
    assert seen == [None, Direction.SHORT]  # a bought put is a short view


def test_position_is_closed_on_its_expiry_exit_date() -> None:
    # Monday 2026-12-28 is one session before December's expiry (Tuesday the 29th)
    day = date(2026, 12, 28)
    h = FnoHarness({}, InstrumentKind.FUTURE, day=day, limits=BIG)
    future = next(
        c
        for c in h.book.contracts_of(SBIN.instrument_key)
        if c.kind is InstrumentKind.FUTURE and c.expiry == "2026-12-29"
    )
    assert h.book.exit_date(future.instrument_key) == day
    held = make_position(
        instrument_key=future.instrument_key,
        quantity=SBIN_LOT,
        lots=1,
        entry_price_paise=95_000,
        stop_paise=90_250,
        target_paise=98_800,
        entry_at=ist(14, 0, day=date(2026, 12, 24)),
    )
    h.engine.restore(
        EngineState(
            trading_date=h.engine.trading_date,
            capital_paise=h.engine.capital_paise,
            positions=[held],
        )
    )
    h.timer(9, 15)  # the day's first timer: the exit goes
    (order,) = h.journal.orders.values()
    assert order.purpose is OrderPurpose.EXIT
    assert order.exit_reason is ExitReason.EXPIRY
    h.tick(9, 15, 5, SPOT)  # the future's tick fills it
    (trade,) = h.journal.trades
    assert trade.exit_reason is ExitReason.EXPIRY
    assert trade.lots == 1


def test_a_future_inside_its_exit_window_is_not_entered() -> None:
    day = date(2026, 12, 28)
    h = FnoHarness(
        {ist_ms(10, 0, day=day): [SignalType.ENTRY_LONG]},
        InstrumentKind.FUTURE,
        day=day,
        limits=BIG,
    )
    h.signal_at_10()
    ((key, _),) = h.engine.positions.items()
    assert h.book.instrument_or_none(key).expiry == "2027-01-25"  # type: ignore[union-attr]


def test_stock_router_trades_the_stock_itself() -> None:
    route = StockRouter().route(
        SBIN, direction=Direction.SHORT, spot_paise=SPOT, at_ms=0, trading_date=date(2026, 11, 25)
    )
    assert (route.instrument, route.direction, route.price_paise) == (SBIN, Direction.SHORT, SPOT)
    assert StockRouter().underlying_key("X") == "X"
    assert StockRouter().exit_date("X") is None


def test_book_maps_contracts_back_to_their_stock_and_signal_direction() -> None:
    book = _book(InstrumentKind.OPTION, date(2026, 11, 25))
    put = next(c for c in book.contracts_of(SBIN.instrument_key) if c.option_type is OptionType.PUT)
    call = next(
        c for c in book.contracts_of(SBIN.instrument_key) if c.option_type is OptionType.CALL
    )
    assert book.underlying_key(put.instrument_key) == SBIN.instrument_key
    assert book.signal_direction(put.instrument_key, Direction.LONG) is Direction.SHORT
    assert book.signal_direction(call.instrument_key, Direction.LONG) is Direction.LONG
    assert book.underlying_key(SBIN.instrument_key) == SBIN.instrument_key
    other = simulate_fno_chain(
        make_instrument(instrument_key="NSE_EQ|X", trading_symbol="X"),
        10_000,
        date(2026, 11, 25),
        CALENDAR,
    )
    assert book.add_contracts(other) == 0  # not a stock of the book
    no_price = book.route(
        SBIN, direction=Direction.LONG, spot_paise=0, at_ms=0, trading_date=date(2026, 11, 25)
    )
    assert no_price.instrument is None
    assert no_price.rule is RiskRule.NO_PRICE


def test_book_refuses_equity() -> None:
    with pytest.raises(ValueError, match="StockRouter"):
        ContractBook(
            [SBIN],
            trade=InstrumentKind.EQUITY,
            calendar=CALENDAR,
            pricer=ChainPricer(),
            option_min_days_to_expiry=7,
            expiry_exit_sessions=1,
        )


def test_an_exit_caused_by_a_stock_trade_fills_at_the_next_trade_not_its_own() -> None:
    # The 10:05 candle closes on the first trade after it (10:06:01, no timer in between): the
    # exit signal sends the put's exit order while that trade is handled. The put's tick
    # derived from the same trade must not fill it; the next trade's does (as for a stock).
    script = {ist_ms(10, 0): [SignalType.ENTRY_SHORT], ist_ms(10, 5): [SignalType.EXIT_SHORT]}
    h = FnoHarness(script, InstrumentKind.OPTION)
    h.signal_at_10()
    ((key, _),) = h.engine.positions.items()
    h.tick(10, 5, 1, SPOT)
    h.tick(10, 6, 1, SPOT - 500)  # closes the 10:05 candle: the exit goes now
    assert key in h.engine.positions
    assert h.engine.positions[key].exit_pending
    h.tick(10, 6, 2, SPOT - 1_000)  # the next trade fills it, priced from this trade
    (trade,) = h.journal.trades
    put = h.book.instrument_or_none(key)
    assert put is not None
    assert trade.exit_price_paise == ChainPricer().price_paise(
        put, spot_paise=SPOT - 1_000, at_ms=ist_ms(10, 6, 2, day=h.day)
    )
