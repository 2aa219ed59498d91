"""The trading engine: events in (tick, timer, fill, rejection, command), order intents out.

One engine serves one account. It owns the candle aggregation, the strategy's candle windows,
the open positions and their exit state, the day's P&L and the risk state. It never talks to a
broker or a database itself: intents go back to the caller (an executor), records go to the
injected Journal. Time comes from the injected Clock; the harness advances it.

Order pacing: every order, entry or exit, obeys the order rate limits. An exit is never refused:
it waits in a queue and goes at the first slot, before any entry; while an exit waits, no entry
is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal
from fractions import Fraction
from hashlib import sha256
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from upstox_bot import faults
from upstox_bot.clock import DAY_MS, IST_OFFSET_MS, MINUTE_MS, NseCalendar
from upstox_bot.domain import (
    IST,
    AccountSnapshot,
    AuditRecord,
    Candle,
    ClientOrderId,
    Direction,
    ExitReason,
    Fill,
    Instrument,
    InstrumentKind,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
    RiskRule,
    Signal,
    SignalId,
    SignalStatus,
    Tick,
    Trade,
    ms_to_datetime,
    reduce_to_fields,
)
from upstox_bot.errors import Conflict, InvalidTransition, NotFound
from upstox_bot.feed.candles import CandleResampler, TickAggregator
from upstox_bot.money import format_rupees
from upstox_bot.options.selection import check_smallest_lot
from upstox_bot.risk.checks import BookState, EntryRequest, RiskManager
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.signals.base import Strategy, StrategySignal
from upstox_bot.signals.series import CandleSeries
from upstox_bot.trading import order_state
from upstox_bot.trading.charges import OrderExecution
from upstox_bot.trading.exits import ExitManager, ExitRules
from upstox_bot.trading.ports import ChargesModel, Journal, OrderChange
from upstox_bot.trading.routing import InstrumentRouter, StockRouter

log = logging.getLogger(__name__)


def _round_half_away(value: Fraction) -> int:
    """`value` rounded to a whole number, halves away from zero (money's half up)."""
    whole = (abs(value.numerator) * 2 + value.denominator) // (2 * value.denominator)
    return whole if value >= 0 else -whole


class EngineClock(Protocol):
    def now(self) -> datetime: ...

    def now_ms(self) -> int: ...


def derive_id(prefix: str, *parts: object) -> str:
    """A short stable id from its parts: the same cause always gives the same id.

    The prefix, a dash and the first 16 hex digits of the SHA-256 of the parts joined by "|".
    """
    text = "|".join([part if isinstance(part, str) else str(part) for part in parts])
    return prefix + "-" + sha256(text.encode()).digest()[:8].hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    account: str
    capital_paise: int  # capital at the start of the current day
    candle_interval_s: int = 60
    signal_cooldown_s: int = 300
    kill_switch_square_off: bool = True
    snapshot_every_minute: bool = True  # journal the account each minute with positions open
    series_capacity: int = 300
    # Build audit records and account snapshots for the journal. A backtest, whose journal
    # drops both, turns this off so that they are not built only to be thrown away.
    audit_records: bool = True
    # Recompute the risk limits from each day's opening capital (capital plus the realised
    # P&L of every day before). False keeps the limits on the capital they were built with.
    limits_follow_capital: bool = True

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(slots=True)
class DayState:
    trading_date: date
    capital_paise: int
    realised_paise: int = 0  # net of charges
    charges_paise: int = 0
    trades: int = 0
    orders: int = 0
    loss_limit_hit: bool = False
    square_off_done: bool = False

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(slots=True, kw_only=True)
class EngineState:
    """What the store says about an account's trading day, for `Engine.restore` (one call).

    Everything the engine held in memory that a restart must not lose: the day (its date, its
    opening capital, its money and counters), open positions with their stop state, orders in
    flight, exits waiting for a slot and how many exit orders each position has had, the
    strategy's candle windows, the entry cool-downs, the order-rate windows and last prices.
    """

    trading_date: date
    capital_paise: int  # the day's opening capital
    positions: Sequence[Position] = ()
    unfinished_orders: Sequence[Order] = ()  # not filled, cancelled or rejected; oldest first
    reference_prices: Mapping[str, int] = field(default_factory=dict)  # entry id -> paise
    realised_paise: int = 0  # the day's net realised P&L
    charges_paise: int = 0
    trades: int = 0
    orders: int = 0  # orders created on the day
    loss_limit_hit: bool = False
    last_prices: Mapping[str, int] = field(default_factory=dict)  # paise by instrument
    candles: Mapping[str, Sequence[Candle]] = field(default_factory=dict)  # oldest first
    last_entry_signal_ms: Mapping[str, int] = field(default_factory=dict)
    sent_ms: Sequence[int] = ()  # orders sent in the rate windows (epoch ms)
    queued_exits: Mapping[str, ExitReason] = field(default_factory=dict)  # triggered, not sent
    exit_attempts: Mapping[str, int] = field(default_factory=dict)  # exit orders per position
    market: Mapping[str, Any] | None = None  # `Engine.market_state()` saved at the checkpoint

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


class Engine:
    """The core trading loop for one account (plain Python, single-threaded)."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        instruments: Mapping[str, Instrument],
        strategy: Strategy,
        risk: RiskManager,
        exits: ExitManager,
        journal: Journal,
        charges: ChargesModel,
        clock: EngineClock,
        router: InstrumentRouter | None = None,
    ) -> None:
        """Wire the engine. `instruments` are the stocks strategies watch; `router` says what is
        traded on their signals (default: the stock itself, StockRouter)."""
        self._config = config
        self._instruments = dict(instruments)
        self._strategy = strategy
        self._risk = risk
        self._exits = exits
        self.journal = journal
        self._charges = charges
        self.clock = clock
        self.router: InstrumentRouter = router if router is not None else StockRouter()
        self._aggregator = TickAggregator(60)
        self._resampler = (
            CandleResampler(config.candle_interval_s) if config.candle_interval_s > 60 else None
        )
        self._series: dict[str, CandleSeries] = {}
        self._stale_candles = 0  # closed candles refused as not newer than their window's last
        self._last_price: dict[str, int] = {}
        self._positions: dict[str, Position] = {}
        self._orders: dict[str, Order] = {}  # orders not yet terminal
        self._pending_entries: dict[str, OrderIntent] = {}  # by instrument
        self._exit_queue: dict[str, ExitReason] = {}  # by instrument, oldest first
        self._exit_attempts: dict[str, int] = {}
        self._last_entry_signal_ms: dict[str, int] = {}
        self._unrealised_paise = 0  # kept in step with the positions: O(1) per tick
        now = clock.now()
        self._day = DayState(trading_date=_ist_date(now), capital_paise=config.capital_paise)
        self._next_timer_ms = (clock.now_ms() // MINUTE_MS + 1) * MINUTE_MS
        self._square_off_ms = _ms_of_day(exits.rules.square_off)
        self._day_index = -1
        self._records = config.audit_records
        if config.limits_follow_capital and risk.limits.capital_paise != config.capital_paise:
            risk.reconfigure(replace(risk.limits, capital_paise=config.capital_paise))

    # --- read-only views: the state changes only through the engine's own methods ---------

    @property
    def config(self) -> EngineConfig:
        return self._config

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """The stocks the strategy watches, by instrument key."""
        return self._instruments

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def risk(self) -> RiskManager:
        """The risk manager (read it; change it through `reconfigure` and the commands)."""
        return self._risk

    @property
    def exits(self) -> ExitManager:
        return self._exits

    @property
    def charges(self) -> ChargesModel:
        return self._charges

    @property
    def positions(self) -> Mapping[str, Position]:
        """Open positions by instrument key."""
        return self._positions

    @property
    def orders(self) -> Mapping[str, Order]:
        """Orders not yet terminal, by client order id."""
        return self._orders

    @property
    def pending_entries(self) -> Mapping[str, OrderIntent]:
        """Entries on their way (not completely filled), by instrument key."""
        return self._pending_entries

    @property
    def exit_queue(self) -> Mapping[str, ExitReason]:
        """Exits waiting for an order slot, by instrument key, oldest first."""
        return self._exit_queue

    @property
    def exit_attempts(self) -> Mapping[str, int]:
        return self._exit_attempts

    @property
    def last_price(self) -> Mapping[str, int]:
        """The last traded price (paise) by instrument key."""
        return self._last_price

    @property
    def last_entry_signal_ms(self) -> Mapping[str, int]:
        return self._last_entry_signal_ms

    @property
    def series(self) -> Mapping[str, CandleSeries]:
        """The strategy's windows of closed candles, by instrument key."""
        return self._series

    @property
    def stale_candles(self) -> int:
        """Closed candles refused as not newer than their window's last."""
        return self._stale_candles

    @property
    def day(self) -> DayState:
        """A copy of the day's state (its date, opening capital, money and counters)."""
        return replace(self._day)

    @property
    def trading_date(self) -> date:
        return self._day.trading_date

    @property
    def realised_paise(self) -> int:
        """The day's realised P&L, net of charges."""
        return self._day.realised_paise

    @property
    def loss_limit_hit(self) -> bool:
        return self._day.loss_limit_hit

    @property
    def square_off_done(self) -> bool:
        return self._day.square_off_done

    @property
    def capital_paise(self) -> int:
        """The current day's opening capital."""
        return self._day.capital_paise

    # --- queries ---------------------------------------------------------------------------

    @property
    def unrealised_paise(self) -> int:
        """Unrealised P&L of the open positions at their last prices (gross of charges)."""
        return self._unrealised_paise

    @property
    def day_pnl_paise(self) -> int:
        return self._day.realised_paise + self.unrealised_paise

    @property
    def open_position_count(self) -> int:
        # An entry partly filled and still working is one position, not two.
        if not self._pending_entries:
            return len(self._positions)
        return len(self._positions.keys() | self._pending_entries.keys())

    def available_paise(self) -> int:
        """Cash not tied up in open positions or entries on their way (their unfilled part)."""
        # A future ties up its margin, anything else its value (RiskManager.blocked_paise).
        blocked = self._risk.blocked_paise
        used = sum(
            blocked(self._instrument_or_none(p.instrument_key), p.entry_price_paise * p.quantity)
            for p in self._positions.values()
        )
        for intent in self._pending_entries.values():
            order = self._orders.get(intent.client_order_id)
            unfilled = intent.quantity - (order.filled_quantity if order is not None else 0)
            used += blocked(
                self._instrument_or_none(intent.instrument_key),
                intent.reference_price_paise * max(unfilled, 0),
            )
        return self._day.capital_paise + self._day.realised_paise - used

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot(
            trading_date=self._day.trading_date.isoformat(),
            capital_paise=self._day.capital_paise,
            realised_pnl_paise=self._day.realised_paise,
            unrealised_pnl_paise=self.unrealised_paise,
            charges_paise=self._day.charges_paise,
            open_positions=len(self._positions),
            trades=self._day.trades,
            orders=self._day.orders,
            loss_limit_paise=self._risk.loss_limit_paise,
            loss_limit_hit=self._day.loss_limit_hit,
            kill_switch=self._risk.kill_switch.active,
        )

    # --- events ----------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[OrderIntent]:
        """Apply one tick: candles, exit checks, loss limit. Returns the orders to place now."""
        return self.on_trade(tick.instrument_key, tick.ts_ms, tick.ltp_paise, tick.ltq, tick.volume)

    def on_trade(
        self, key: str, ts_ms: int, price: int, ltq: int, volume: int = 0
    ) -> list[OrderIntent]:
        """`on_tick` for the tick's fields (a backtest feeds its trades without Ticks)."""
        intents: list[OrderIntent] = []
        if ts_ms >= self._next_timer_ms:
            intents.extend(self.on_timer(ts_ms))
        self._last_price[key] = price
        closed = self._aggregator.on_trade(key, ts_ms, price, ltq, volume)
        if closed is not None:
            intents.extend(self._on_base_candle(closed))
        position = self._positions.get(key)
        if position is not None:
            was_trailing = position.trailing_active
            self._unrealised_paise += (
                position.direction.sign * (price - position.last_price_paise) * position.quantity
            )
            reason, changed = self._exits.on_price(position, price)
            if changed:
                self.journal.position_updated(position)
                if not was_trailing and self._records:
                    self._audit(
                        "exit.trailing_armed",
                        "position",
                        key,
                        self.clock.now(),
                        {
                            "price_paise": price,
                            "target_paise": position.target_paise,
                            "trail_stop_paise": position.trail_stop_paise,
                        },
                    )
            if reason is not None and not position.exit_pending and key not in self._exit_queue:
                self._queue_exit(key, reason)
            self._check_loss_limit()
        if self._exit_queue:
            intents.extend(self._drain_exits())
        return intents

    def on_quiet_trade(
        self, instrument_key: str, ts_ms: int, price_paise: int, ltq: int
    ) -> list[OrderIntent] | None:
        """Apply a trade, as `on_tick` with that tick would, when it needs no timer, no exit
        check and no queued exit: before the next timer, with no position in the instrument
        and no exit waiting. A backtest feeds most trades of the minutes it steps this way,
        without building a Tick.

        Returns:
            The orders to place now (as `on_tick`); None, with nothing changed, when the trade
            needs `on_tick`.
        """
        if ts_ms >= self._next_timer_ms or self._exit_queue or instrument_key in self._positions:
            return None
        self._last_price[instrument_key] = price_paise
        closed = self._aggregator.on_trade(instrument_key, ts_ms, price_paise, ltq)
        if closed is None:
            return []
        intents = self._on_base_candle(closed)
        if self._exit_queue:
            intents.extend(self._drain_exits())
        return intents

    def on_timer(self, now_ms: int) -> list[OrderIntent]:
        """Advance market time: close candles, square off, roll the day, release queued exits."""
        intents: list[OrderIntent] = []
        # IST day and time of day by integer arithmetic: this runs once a minute, and once a
        # bar in backtests, so no datetime is built unless the day changes.
        day_index, ms_of_day = divmod(now_ms + IST_OFFSET_MS, DAY_MS)
        if day_index != self._day_index:
            self._day_index = day_index
            new_date = ms_to_datetime(now_ms).astimezone(IST).date()
            if new_date != self._day.trading_date:
                self._roll_day(new_date)
        if self._positions:
            self._check_expiry_exits()
        if self._exit_queue:
            intents.extend(self._drain_exits())
        for candle in self._aggregator.flush(now_ms):
            intents.extend(self._on_base_candle(candle))
        if self._resampler is not None:
            for candle in self._resampler.flush(now_ms):
                intents.extend(self._on_strategy_candle(candle))
        if (
            not self._day.square_off_done
            and self._square_off_ms is not None
            and ms_of_day >= self._square_off_ms
        ):
            self._day.square_off_done = True
            for key in list(self._positions):
                self.request_exit(key, ExitReason.SQUARE_OFF)
        if self._exit_queue:
            intents.extend(self._drain_exits())
        if now_ms >= self._next_timer_ms:
            self._next_timer_ms = (now_ms // MINUTE_MS + 1) * MINUTE_MS
            if self._positions and self._config.snapshot_every_minute:
                self._journal_account()
                # The stored positions carry the unrealised P&L the account shows, at the same
                # last prices, once a minute (not on every tick).
                for position in self._positions.values():
                    self.journal.position_updated(position)
        return intents

    def _on_base_candle(self, candle: Candle) -> list[OrderIntent]:
        self.journal.candle(candle)
        if self._resampler is None:
            return self._on_strategy_candle(candle)
        intents: list[OrderIntent] = []
        for multiple in self._resampler.on_candle(candle):
            self.journal.candle(multiple)
            intents.extend(self._on_strategy_candle(multiple))
        return intents

    def _on_strategy_candle(self, candle: Candle) -> list[OrderIntent]:
        key = candle.instrument_key
        series = self._series.get(key)
        if series is None:
            series = CandleSeries(key, candle.interval_s, self._config.series_capacity)
            self._series[key] = series
        last = series.last_start_ms
        if last is not None and candle.start_ms <= last:
            # The window holds this minute already (a candle closed again after a rebuild
            # from the store): deciding on it twice would be wrong, stopping the engine worse.
            self._stale_candles += 1
            log.error(
                "candle.stale",
                extra={"key": key, "start_ms": candle.start_ms, "last_start_ms": last},
            )
            return []
        series.append(candle)
        strategy = self._strategy
        if len(series) < strategy.startup_candles or key not in self._instruments:
            return []
        now = None
        try:
            # may_signal first: on most candles it says there is nothing to evaluate.
            if strategy.may_signal(series):
                held = self._held_for(key)
                now = self.clock.now()
                said = strategy.evaluate(series, position=held[1] if held else None, now=now)
            else:
                said = ()
        except Exception:
            # A strategy bug must not stop exits or other instruments: log, skip this candle.
            log.exception("strategy.error", extra={"strategy": strategy.name, "key": key})
            return []
        if not said or now is None:
            return []
        intents: list[OrderIntent] = []
        for s in said:
            intent = self._on_signal(s, candle, now)
            if intent is not None:
                intents.append(intent)
        return intents

    def _on_signal(self, said: StrategySignal, candle: Candle, now: datetime) -> OrderIntent | None:
        key = candle.instrument_key
        signal = Signal(
            signal_id=SignalId(
                derive_id(
                    "sg",
                    self._config.account,
                    self._strategy.name,
                    key,
                    candle.start_ms,
                    candle.interval_s,
                    said.type.value,
                )
            ),
            instrument_key=key,
            strategy=self._strategy.name,
            type=said.type,
            strength=min(1.0, max(0.0, said.strength)),
            reason=said.reason,
            price_paise=candle.close_paise,
            candle_start_ms=candle.start_ms,
            created_at=now,
            indicators=dict(said.indicators),
        )
        if not said.type.is_entry:
            # An exit signal on the stock closes what its entry opened: the stock, its future,
            # or the option (a call for EXIT_LONG, a put for EXIT_SHORT).
            held = self._held_for(key)
            if held is None or held[1] is not said.type.direction:
                self.journal.signal(signal, SignalStatus.IGNORED)
                return None
            self.journal.signal(signal, SignalStatus.ACCEPTED)
            self.request_exit(held[0], ExitReason.SIGNAL)
            return None
        now_ms = self.clock.now_ms()
        last = self._last_entry_signal_ms.get(key)
        cooldown_ms = self._config.signal_cooldown_s * 1000
        if last is not None and now_ms - last < cooldown_ms:
            self.journal.signal(signal, SignalStatus.IGNORED)
            return None
        self._last_entry_signal_ms[key] = now_ms
        self.journal.signal(signal, SignalStatus.NEW)
        return self._try_entry(signal, now, now_ms)

    def _held_for(self, underlying_key: str) -> tuple[str, Direction] | None:
        """The position held on a stock (itself or one of its contracts): its key and the
        signal direction it stands for."""
        router = self.router
        for key, position in self._positions.items():
            if router.underlying_key(key) == underlying_key:
                return key, router.signal_direction(key, position.direction)
        return None

    def _holds(self, underlying_key: str) -> bool:
        """Whether a position or an entry on its way is on this stock or one of its contracts."""
        router = self.router
        return any(
            router.underlying_key(key) == underlying_key
            for keys in (self._positions, self._pending_entries)
            for key in keys
        )

    def request_entry(self, signal: Signal) -> OrderIntent | None:
        """Run an entry signal raised outside the strategy (a manual trade) through the same
        routing, risk checks and pacing; the caller journals the signal first.

        Returns:
            The order intent to execute, or None when a rule refused it (decision journaled).
        """
        if not signal.type.is_entry:
            raise ValueError("request_entry takes an entry signal")
        return self._try_entry(signal, self.clock.now(), self.clock.now_ms())

    def _try_entry(self, signal: Signal, now: datetime, now_ms: int) -> OrderIntent | None:
        underlying_key = signal.instrument_key
        route = self.router.route(
            self._instruments[underlying_key],
            direction=signal.type.direction,
            spot_paise=self._last_price.get(underlying_key, 0),
            at_ms=now_ms,
            trading_date=self._day.trading_date,
        )
        instrument = route.instrument
        key = instrument.instrument_key if instrument is not None else underlying_key
        direction = route.direction or signal.type.direction
        price = route.price_paise
        stop, target = self._exits.rules.levels(direction, price) if price else (0, 0)
        if self._exit_queue:
            decision = RiskDecision(
                approved=False,
                rule=RiskRule.ORDER_SPACING,
                reason="an exit is waiting for an order slot; exits go first",
                instrument_key=key,
                signal_id=signal.signal_id,
                price_paise=price,
                decided_at=now,
            )
        elif instrument is None:
            decision = RiskDecision(
                approved=False,
                rule=route.rule or RiskRule.NO_CONTRACT,
                reason=route.reason,
                instrument_key=key,
                signal_id=signal.signal_id,
                decided_at=now,
            )
        elif instrument.kind is not InstrumentKind.EQUITY and price > 0 and stop == price:
            decision = RiskDecision(
                approved=False,
                rule=RiskRule.NO_PRICE,
                reason=(
                    f"{instrument.trading_symbol} at {format_rupees(price)} is too cheap for a stop"
                ),
                instrument_key=key,
                signal_id=signal.signal_id,
                price_paise=price,
                decided_at=now,
            )
        else:
            # The book is read only here: a refusal above needs none of it.
            book = BookState(
                open_positions=self.open_position_count,
                in_position=self._holds(underlying_key),
                day_pnl_paise=self.day_pnl_paise,
                loss_limit_hit=self._day.loss_limit_hit,
                available_paise=self.available_paise(),
            )
            decision = self._check_routed_entry(
                instrument, direction, signal, price, stop, target, book, now, now_ms
            )
        self.journal.risk_decision(decision)
        if not decision.approved:
            self.journal.signal_status(signal.signal_id, SignalStatus.REJECTED)
            if self._records:
                self._audit(
                    "risk.refused",
                    "signal",
                    signal.signal_id,
                    now,
                    {
                        "rule": decision.rule.value if decision.rule else None,
                        "reason": decision.reason,
                        "instrument_key": key,
                        **({"underlying_key": underlying_key} if key != underlying_key else {}),
                    },
                )
            return None
        self.journal.signal_status(signal.signal_id, SignalStatus.ACCEPTED)
        intent = OrderIntent(
            client_order_id=ClientOrderId(
                derive_id("ub", self._config.account, "entry", signal.signal_id)
            ),
            instrument_key=key,
            side=direction.entry_side,
            quantity=decision.quantity,
            lots=decision.lots,
            purpose=OrderPurpose.ENTRY,
            reason=signal.reason,
            created_at=now,
            signal_id=signal.signal_id,
            reference_price_paise=price,
        )
        self._risk.rate_limiter.record(now_ms)
        self._pending_entries[key] = intent
        if self._records:
            self._audit(
                "order.intent",
                "order",
                intent.client_order_id,
                now,
                {
                    "purpose": "entry",
                    "instrument_key": key,
                    "side": intent.side.value,
                    "quantity": intent.quantity,
                    "signal_id": signal.signal_id,
                    **(
                        {"underlying_key": underlying_key, "route": route.reason}
                        if key != underlying_key
                        else {}
                    ),
                },
            )
        return intent

    def _check_routed_entry(
        self,
        instrument: Instrument,
        direction: Direction,
        signal: Signal,
        price: int,
        stop: int,
        target: int,
        book: BookState,
        now: datetime,
        now_ms: int,
    ) -> RiskDecision:
        margin = self._risk.margin_fraction(instrument)
        if instrument.kind is not InstrumentKind.EQUITY and price > 0:
            # F&O trade in whole lots: a contract whose one lot breaks the position cap or the
            # risk per trade is refused naming that rule, whatever the book looks like.
            smallest = check_smallest_lot(
                contract=instrument,
                price_paise=price,
                stop_paise=stop,
                limits=self._risk.limits,
                signal_id=signal.signal_id,
                at=now,
                fill_paise=self._risk.sizing_fill_paise(price, instrument.tick_size_paise),
                margin_fraction=margin,
            )
            if not smallest.approved:
                return smallest
        return self._risk.check_entry(
            EntryRequest(
                instrument_key=instrument.instrument_key,
                direction=direction,
                signal_id=signal.signal_id,
                price_paise=price,
                stop_paise=stop,
                target_paise=target,
                lot_size=instrument.lot_size,
                at=now,
                at_ms=now_ms,
                tick_paise=instrument.tick_size_paise,
                margin_fraction=margin,
            ),
            book,
        )

    # --- exits -----------------------------------------------------------------------------

    def request_exit(self, instrument_key: str, reason: ExitReason) -> None:
        """Queue the exit of an open position (idempotent while one is queued or working).

        Raises:
            NotFound: no open position in that instrument.
        """
        position = self._positions.get(instrument_key)
        if position is None:
            raise NotFound(f"no open position in {instrument_key}")
        if position.exit_pending or instrument_key in self._exit_queue:
            return
        self._queue_exit(instrument_key, reason)

    def _queue_exit(self, key: str, reason: ExitReason) -> None:
        self._exit_queue[key] = reason
        position = self._positions[key]
        if self._records:
            self._audit(
                "exit.triggered",
                "position",
                key,
                self.clock.now(),
                {
                    "reason": reason.value,
                    "price_paise": position.last_price_paise,
                    "stop_paise": position.stop_paise,
                    "trail_stop_paise": position.trail_stop_paise,
                    "target_paise": position.target_paise,
                },
            )

    def _drain_exits(self) -> list[OrderIntent]:
        intents: list[OrderIntent] = []
        now_ms = self.clock.now_ms()
        while self._exit_queue:
            if not self._risk.rate_limiter.check(now_ms).allowed:
                break
            key, reason = next(iter(self._exit_queue.items()))
            del self._exit_queue[key]
            position = self._positions.get(key)
            if position is None or position.exit_pending:
                continue
            attempt = self._exit_attempts.get(key, 0) + 1
            self._exit_attempts[key] = attempt
            now = self.clock.now()
            intent = OrderIntent(
                client_order_id=ClientOrderId(
                    derive_id("ub", self._config.account, "exit", position.entry_order_id, attempt)
                ),
                instrument_key=key,
                side=position.direction.exit_side,
                quantity=position.quantity,
                lots=position.lots,
                purpose=OrderPurpose.EXIT,
                reason=reason.value,
                created_at=now,
                exit_reason=reason,
                reference_price_paise=position.last_price_paise,
            )
            position.exit_pending = True
            self.journal.position_updated(position)
            self._risk.rate_limiter.record(now_ms)
            intents.append(intent)
            if faults.ENABLED:
                faults.point("exit.sent")
        return intents

    # --- order lifecycle -------------------------------------------------------------------

    def on_order_created(self, order: Order) -> None:
        """Track an order the executor recorded (status PENDING or later)."""
        self._orders[order.client_order_id] = order
        self._day.orders += 1

    def on_fill(self, fill: Fill) -> None:
        """Apply a fill to its order, then to the position (open, or close into a trade)."""
        order = self._orders.get(fill.client_order_id)
        if order is None:
            raise NotFound(f"fill for unknown order {fill.client_order_id}")
        order_state.apply_fill(order, fill.quantity, fill.price_paise, fill.filled_at)
        self.journal.order(order)
        self.journal.fill(fill)
        if faults.ENABLED:
            faults.point("fill.applied")
        if self._records:
            self._audit(
                "order.filled" if order.status is OrderStatus.FILLED else "order.partial",
                "order",
                order.client_order_id,
                fill.filled_at,
                {
                    "quantity": fill.quantity,
                    "price_paise": fill.price_paise,
                    "filled_quantity": order.filled_quantity,
                },
            )
        if order.purpose is OrderPurpose.ENTRY:
            self._apply_entry_fill(order, fill)
        elif order.status is OrderStatus.FILLED:
            self._close_position(order, fill.filled_at)
        if order.status.is_terminal:
            del self._orders[order.client_order_id]

    def _apply_entry_fill(self, order: Order, fill: Fill) -> None:
        key = order.instrument_key
        if order.status is OrderStatus.FILLED:
            # A part-filled entry keeps the rest reserved until it fills or ends (on_order_closed).
            self._pending_entries.pop(key, None)
        position = self._positions.get(key)
        price = order.average_price_paise or fill.price_paise
        direction = Direction.LONG if order.side.value == "buy" else Direction.SHORT
        stop, target = self._exits.rules.levels(direction, price)
        if position is None:
            position = Position(
                instrument_key=key,
                direction=direction,
                quantity=order.filled_quantity,
                lots=order.filled_quantity // self._lot_size(key),
                entry_price_paise=price,
                entry_at=fill.filled_at,
                entry_order_id=order.client_order_id,
                stop_paise=stop,
                target_paise=target,
                best_price_paise=price,
                last_price_paise=self._last_price.get(key, price),
                strategy=self._strategy.name,
                entry_value_paise=order.executed_value_paise,
                entry_quantity=order.filled_quantity,
            )
            self._positions[key] = position
            self._unrealised_paise += position.unrealised_pnl_paise
            self.journal.position_opened(position)
            event = "position.opened"
        else:
            self._unrealised_paise -= position.unrealised_pnl_paise
            position.quantity = order.filled_quantity
            position.lots = order.filled_quantity // self._lot_size(key)
            position.entry_price_paise, position.stop_paise = price, stop
            position.target_paise, position.best_price_paise = target, price
            position.entry_value_paise = order.executed_value_paise
            position.entry_quantity = order.filled_quantity
            self._unrealised_paise += position.unrealised_pnl_paise
            self.journal.position_updated(position)
            event = "position.increased"
        if self._records:
            self._audit(
                event,
                "position",
                key,
                fill.filled_at,
                {
                    "direction": direction.value,
                    "quantity": position.quantity,
                    "entry_price_paise": price,
                    "stop_paise": stop,
                    "target_paise": target,
                },
            )
        self._journal_account()

    def _instrument_or_none(self, key: str) -> Instrument | None:
        return self._instruments.get(key) or self.router.instrument_or_none(key)

    def _lot_size(self, key: str) -> int:
        instrument = self._instrument_or_none(key)
        if instrument is None:
            raise NotFound(f"unknown instrument {key}")
        return instrument.lot_size

    def lot_size(self, instrument_key: str) -> int:
        """Units in one lot of what is traded in that instrument (1 for a stock).

        Raises:
            NotFound: the engine does not know the instrument.
        """
        return self._lot_size(instrument_key)

    def on_order_acknowledged(self, client_order_id: str, broker_order_id: str) -> None:
        """The broker took a working order and named it (a live broker, after the send)."""
        order = self._orders.get(client_order_id)
        if order is None or order.broker_order_id == broker_order_id:
            return
        order.broker_order_id = broker_order_id
        self.journal.order(order)

    def on_order_modified(self, client_order_id: str, change: OrderChange, *, by: str) -> None:
        """The broker changed a working order: record its new price, quantity or type. An
        entry's smaller quantity releases the cash it no longer needs."""
        order = self._orders.get(client_order_id)
        if order is None:
            log.warning("order.modify.ignored", extra={"client_order_id": client_order_id})
            return
        before = (order.order_type, order.limit_price_paise, order.quantity)
        if change.order_type is not None:
            order.order_type = change.order_type
        elif change.price_paise is not None and order.order_type is OrderType.MARKET:
            order.order_type = OrderType.LIMIT
        elif change.price_paise is not None and order.order_type is OrderType.STOP_MARKET:
            order.order_type = OrderType.STOP_LIMIT
        if change.price_paise is not None:
            order.limit_price_paise = change.price_paise
        if change.quantity is not None and change.quantity > order.filled_quantity:
            order.quantity = change.quantity
            order.lots = change.quantity // self._lot_size(order.instrument_key)
            intent = self._pending_entries.get(order.instrument_key)
            if intent is not None and intent.client_order_id == client_order_id:
                self._pending_entries[order.instrument_key] = replace(
                    intent, quantity=order.quantity, lots=order.lots
                )
        now = self.clock.now()
        order.updated_at = now
        self.journal.order(order)
        if self._records:
            self._audit(
                "order.modified",
                "order",
                client_order_id,
                now,
                {
                    "order_type": [before[0].value, order.order_type.value],
                    "limit_price_paise": [before[1], order.limit_price_paise],
                    "quantity": [before[2], order.quantity],
                    "trigger_price_paise": change.trigger_price_paise,
                },
                actor=by,
            )

    def _close_position(self, order: Order, at: datetime) -> None:
        key = order.instrument_key
        position = self._positions.pop(key)
        self._unrealised_paise -= position.unrealised_pnl_paise
        exit_price = order.average_price_paise or position.last_price_paise
        position.last_price_paise = exit_price
        trade = self._book_trade(
            position,
            order,
            trade_id=derive_id("tr", position.entry_order_id),
            quantity=order.quantity,
            lots=position.lots,
            exit_price_paise=exit_price,
            at=at,
        )
        gross, charges = trade.gross_pnl_paise, trade.charges_paise
        self._exit_attempts.pop(key, None)
        self.journal.position_closed(position, trade)
        if self._records:
            self._audit(
                "position.closed",
                "position",
                key,
                at,
                {
                    "exit_reason": trade.exit_reason.value,
                    "exit_price_paise": exit_price,
                    "gross_pnl_paise": gross,
                    "charges_paise": charges,
                    "net_pnl_paise": trade.net_pnl_paise,
                    "trade_id": trade.trade_id,
                },
            )
        self._check_loss_limit()
        self._journal_account()

    def _book_trade(
        self,
        position: Position,
        order: Order,
        *,
        trade_id: str,
        quantity: int,
        lots: int,
        exit_price_paise: int,
        at: datetime,
    ) -> Trade:
        """The trade of `quantity` of the position closed by `order` at `exit_price_paise`,
        booked into the day's realised P&L, charges and trade count.

        The gross P&L comes from the orders' exact values (their fills' price x quantity), not
        from averages rounded to the paisa; it is rounded once, half away from zero.
        """
        key = position.instrument_key
        exit_filled = order.filled_quantity
        exit_value = order.executed_value_paise
        entry_quantity = position.entry_quantity or position.quantity
        if exit_filled == quantity and position.entry_quantity == quantity:
            # The usual round trip: one entry and one exit of the same shares, exact integers.
            gross = position.direction.sign * (exit_value - position.entry_value_paise)
        else:
            if exit_filled:
                exact = Fraction(exit_value * quantity, exit_filled)
            else:
                exact = Fraction(exit_price_paise * quantity)
            exact -= position.entry_value_of(quantity)
            gross = position.direction.sign * _round_half_away(exact)
        instrument = self._instrument_or_none(key)
        charges = self._charges(
            direction=position.direction,
            entry_price_paise=position.entry_price_paise,
            exit_price_paise=exit_price_paise,
            quantity=quantity,
            trading_date=self._day.trading_date,
            kind=instrument.kind if instrument is not None else InstrumentKind.EQUITY,
            instrument_key=key,
            entry_order=OrderExecution(
                order_id=position.entry_order_id,
                side=position.direction.entry_side,
                quantity=entry_quantity,
                value_paise=position.entry_value_paise
                or position.entry_price_paise * entry_quantity,
            ),
            exit_order=OrderExecution(
                order_id=order.client_order_id,
                side=order.side,
                quantity=exit_filled or quantity,
                value_paise=exit_value if exit_filled else exit_price_paise * quantity,
            ),
        )
        trade = Trade(
            trade_id=trade_id,
            instrument_key=position.instrument_key,
            direction=position.direction,
            quantity=quantity,
            lots=lots,
            entry_price_paise=position.entry_price_paise,
            exit_price_paise=exit_price_paise,
            entry_at=position.entry_at,
            exit_at=at,
            gross_pnl_paise=gross,
            charges_paise=charges,
            net_pnl_paise=gross - charges,
            exit_reason=order.exit_reason or ExitReason.MANUAL,
            entry_order_id=position.entry_order_id,
            exit_order_id=order.client_order_id,
            strategy=position.strategy,
        )
        self._day.realised_paise += trade.net_pnl_paise
        self._day.charges_paise += charges
        self._day.trades += 1
        return trade

    def on_order_cancelled(self, client_order_id: str, *, by: str) -> None:
        """A working entry order was cancelled at the broker: free its slot and its cash.

        Raises:
            NotFound: no working order with that id.
            Conflict: it is an exit (an exit is never dropped: close the position instead).
        """
        order = self._orders.get(client_order_id)
        if order is None:
            raise NotFound(f"no working order {client_order_id}")
        if order.purpose is OrderPurpose.EXIT:
            raise Conflict("an exit order is not cancelled: a stop must never be lost")
        now = self.clock.now()
        order_state.transition(order, OrderStatus.CANCELLED, now)
        del self._orders[client_order_id]
        self._pending_entries.pop(order.instrument_key, None)
        self.journal.order(order)
        if self._records:
            self._audit("order.cancelled", "order", client_order_id, now, {}, actor=by)

    def on_order_closed(
        self, client_order_id: str, status: OrderStatus, reason: str, *, by: str = "broker"
    ) -> None:
        """An order ended at the broker without filling in full (cancelled there, or rejected
        for the rest); the fills it had were applied before. Settle what it leaves.

        Nothing filled: a rejection is :meth:`on_order_rejected`; a cancelled entry frees its
        slot and cash, a cancelled exit goes back in the queue. Part filled: an entry's filled
        quantity stays the position (opened by its fills, stop and target from their price) and
        the rest is released; an exit's filled quantity is realised as a trade (charges on that
        part), the rest of the position stays open and its exit is queued again: an exit is
        never dropped. An order the engine no longer follows is ignored (a repeated report).

        Args:
            status: REJECTED or CANCELLED, as the broker ended it.
            reason: the broker's message (audited).
            by: who asked for the cancel (audit actor); ``broker`` when nobody here did.
        """
        order = self._orders.get(client_order_id)
        if order is None:
            log.warning("order.close.ignored", extra={"client_order_id": client_order_id})
            return
        if order.filled_quantity == 0 and status is OrderStatus.REJECTED:
            self.on_order_rejected(client_order_id, reason)
            return
        now = self.clock.now()
        order_state.transition(order, OrderStatus.CANCELLED, now)
        del self._orders[client_order_id]
        self.journal.order(order)
        key = order.instrument_key
        if self._records:
            self._audit(
                "order.cancelled",
                "order",
                client_order_id,
                now,
                {
                    "reason": reason,
                    "broker_status": status.value,
                    "filled_quantity": order.filled_quantity,
                    "released_quantity": order.quantity - order.filled_quantity,
                    "average_price_paise": order.average_price_paise,
                },
                actor=by,
            )
        if order.purpose is OrderPurpose.ENTRY:
            self._pending_entries.pop(key, None)
            if order.filled_quantity:
                self._journal_account()
            return
        position = self._positions.get(key)
        if position is None:
            return
        if order.filled_quantity:
            self._reduce_position(position, order, now)
        position.exit_pending = False
        self.journal.position_updated(position)
        self._queue_exit(key, order.exit_reason or ExitReason.MANUAL)
        if order.filled_quantity:
            self._journal_account()

    def _reduce_position(self, position: Position, order: Order, at: datetime) -> None:
        # The filled part of an exit that ended early: a trade of its own (the position row
        # closes with that part) and the rest of the position opens again under the same entry.
        key = position.instrument_key
        filled = min(order.filled_quantity, position.quantity - 1)
        lot = self._lot_size(key)
        exit_price = order.average_price_paise or position.last_price_paise
        self._unrealised_paise -= position.unrealised_pnl_paise
        part = replace(
            position,
            quantity=filled,
            lots=filled // lot,
            last_price_paise=exit_price,
            exit_pending=False,
        )
        trade = self._book_trade(
            position,
            order,
            trade_id=derive_id("tr", position.entry_order_id, order.client_order_id),
            quantity=filled,
            lots=part.lots,
            exit_price_paise=exit_price,
            at=at,
        )
        gross, charges = trade.gross_pnl_paise, trade.charges_paise
        self.journal.position_closed(part, trade)
        position.quantity -= filled
        position.lots = position.quantity // lot
        position.exit_pending = False
        self._unrealised_paise += position.unrealised_pnl_paise
        self.journal.position_opened(position)
        if self._records:
            self._audit(
                "position.reduced",
                "position",
                key,
                at,
                {
                    "exit_reason": trade.exit_reason.value,
                    "closed_quantity": filled,
                    "open_quantity": position.quantity,
                    "exit_price_paise": exit_price,
                    "gross_pnl_paise": gross,
                    "charges_paise": charges,
                    "net_pnl_paise": trade.net_pnl_paise,
                    "trade_id": trade.trade_id,
                },
            )
        self._check_loss_limit()

    def on_order_rejected(self, client_order_id: str, reason: str) -> None:
        """A broker refused an order: free the entry slot, or queue the exit again."""
        order = self._orders.pop(client_order_id, None)
        if order is None:
            raise NotFound(f"rejection for unknown order {client_order_id}")
        now = self.clock.now()
        try:
            order_state.transition(order, OrderStatus.REJECTED, now, reason=reason)
        except InvalidTransition:
            log.warning("order.reject.ignored", extra={"client_order_id": client_order_id})
            return
        self.journal.order(order)
        if self._records:
            self._audit("order.rejected", "order", client_order_id, now, {"reason": reason})
        key = order.instrument_key
        if order.purpose is OrderPurpose.ENTRY:
            self._pending_entries.pop(key, None)
            return
        position = self._positions.get(key)
        if position is not None:
            # The position is still open: its exit goes back in the queue, never dropped.
            position.exit_pending = False
            self.journal.position_updated(position)
            self._queue_exit(key, order.exit_reason or ExitReason.MANUAL)

    # --- recovery: rebuilding state after a restart (the kernel's recovery drives these) ---

    def restore(self, state: EngineState) -> None:
        """Put a freshly built engine (no position, no order) into the recorded state.

        Call it once, with the clock at the restart point and before the engine sees any new
        event. Orders in flight are tracked
        again (an entry keeps its slot and its cash reserved); a position flagged as exiting
        with no exit order in flight is released, so that its exit triggers again. The
        executor then settles the unfinished orders through the broker (by their tags).

        Raises:
            Conflict: the engine already holds positions or orders.
        """
        if self._positions or self._orders:
            raise Conflict("restore needs a fresh engine")
        now_ms = self.clock.now_ms()
        self._day = DayState(
            trading_date=state.trading_date,
            capital_paise=state.capital_paise,
            realised_paise=state.realised_paise,
            charges_paise=state.charges_paise,
            trades=state.trades,
            orders=state.orders,
            loss_limit_hit=state.loss_limit_hit,
        )
        day_index, ms_of_day = divmod(now_ms + IST_OFFSET_MS, DAY_MS)
        if ms_to_datetime(now_ms).astimezone(IST).date() == state.trading_date:
            self._day_index = day_index
            self._day.square_off_done = (
                self._square_off_ms is not None and ms_of_day >= self._square_off_ms
            )
        if self._config.limits_follow_capital:
            self._risk.reconfigure(replace(self._risk.limits, capital_paise=state.capital_paise))
        self._last_price.update(state.last_prices)
        market = state.market
        if market is not None:  # exact, where the store's candle closes are only a fallback
            self._aggregator.restore_state(list(market.get("candles") or []))
            if self._resampler is not None:
                self._resampler.restore_state(list(market.get("multiples") or []))
            self._last_price.update({str(k): int(v) for k, v in dict(market["prices"]).items()})
        for position in state.positions:
            key = position.instrument_key
            position.last_price_paise = self._last_price.get(
                key, position.last_price_paise or position.entry_price_paise
            )
            self._positions[key] = position
            self._unrealised_paise += position.unrealised_pnl_paise
            self._last_price.setdefault(key, position.last_price_paise)
        exiting: set[str] = set()
        for order in state.unfinished_orders:
            self._orders[order.client_order_id] = order
            if order.purpose is OrderPurpose.ENTRY:
                reference = state.reference_prices.get(order.client_order_id) or (
                    self._last_price.get(order.instrument_key, 0)
                )
                self._pending_entries[order.instrument_key] = _intent_of(order, reference)
            else:
                exiting.add(order.instrument_key)
        for key, position in self._positions.items():
            if position.exit_pending and key not in exiting:
                position.exit_pending = False
                self.journal.position_updated(position)
        capacity = self._config.series_capacity
        for key, candles in state.candles.items():
            if not candles:
                continue
            series = CandleSeries(key, candles[0].interval_s, capacity)
            for candle in candles[-capacity:]:
                series.append(candle)
            self._series[key] = series
        self._last_entry_signal_ms.update(state.last_entry_signal_ms)
        self._risk.rate_limiter.restore(state.sent_ms)
        self._exit_attempts.update(state.exit_attempts)
        for key, reason in state.queued_exits.items():
            held = self._positions.get(key)
            if held is not None and not held.exit_pending:
                self._exit_queue[key] = reason
        self._next_timer_ms = (now_ms // MINUTE_MS + 1) * MINUTE_MS

    def market_state(self) -> dict[str, Any]:
        """The market state only memory holds (the candles being built, with each instrument's
        volume baseline, and the last prices), as JSON data. A harness saves it with its
        checkpoint; `restore` puts it back exactly, so that a restart needs no replay."""
        return {
            "candles": self._aggregator.state(),
            "multiples": [] if self._resampler is None else self._resampler.state(),
            "prices": dict(self._last_price),
        }

    # --- backtest fast path: bars proved to change nothing but the candles and prices ---

    @property
    def next_timer_ms(self) -> int:
        """The time from which the next tick runs `on_timer` first."""
        return self._next_timer_ms

    def extend_candles(
        self, instrument_key: str, start_ms: npt.NDArray[np.int64], rows: npt.NDArray[np.float64]
    ) -> None:
        """Add closed strategy candles that the caller knows make no signal, without evaluating
        them: the window ends up as if each had closed in turn (`rows` as `CandleSeries.extend`
        takes them: open, high, low, close in rupees, and volume)."""
        series = self._series.get(instrument_key)
        if series is None:
            series = CandleSeries(
                instrument_key, self._config.candle_interval_s, self._config.series_capacity
            )
            self._series[instrument_key] = series
        series.extend(start_ms, rows)

    def refuses_entries_when_flat(self, at_ms: int) -> bool:
        """Whether a candle closing at `at_ms` can change nothing but records, whatever the
        strategy says: the book is flat (no position, order, pending entry or queued exit), so
        an exit signal is ignored, and the risk manager would refuse every entry then (kill
        switch, entries paused, entry window, or the daily loss limit, the day's P&L being
        realised); with no signal cooldown, the time a refused entry leaves is never read."""
        if (
            self._positions
            or self._orders
            or self._pending_entries
            or self._exit_queue
            or self._config.signal_cooldown_s
        ):
            return False
        if self._day.loss_limit_hit or self._risk.loss_limit_breached(self.day_pnl_paise):
            return True
        return self._risk.refuses_every_entry(ms_to_datetime(at_ms))

    def aggregate_trade(self, instrument_key: str, ts_ms: int, price_paise: int, ltq: int) -> bool:
        """Feed a trade to the candle aggregator alone (a backtest building the candles of a
        span it skips); True when the trade closed a candle, which such a span never does."""
        return self._aggregator.on_trade(instrument_key, ts_ms, price_paise, ltq) is not None

    def apply_quiet_prices(self, prices: Mapping[str, int]) -> None:
        """Move last prices (and the open positions' unrealised P&L) to where ticks the caller
        proved to touch no exit level and no loss limit left them."""
        for key, price in prices.items():
            self._last_price[key] = price
            position = self._positions.get(key)
            if position is not None:
                self._unrealised_paise += (
                    position.direction.sign
                    * (price - position.last_price_paise)
                    * position.quantity
                )
                position.last_price_paise = price

    # --- commands --------------------------------------------------------------------------

    def reconfigure(
        self,
        *,
        limits: RiskLimits | None = None,
        exit_rules: ExitRules | None = None,
        signal_cooldown_s: int | None = None,
        kill_switch_square_off: bool | None = None,
        strategy: Strategy | None = None,
        charges: ChargesModel | None = None,
    ) -> None:
        """Apply changed settings to the running engine (what is not given stays).

        `limits` take the current day's opening capital when the limits follow the capital
        (the capital they carry is then ignored). New exit rules apply to new positions; the
        open ones keep the levels they were opened with.
        """
        if limits is not None:
            if self._config.limits_follow_capital:
                limits = replace(limits, capital_paise=self._day.capital_paise)
            self._risk.reconfigure(limits)
        if exit_rules is not None:
            self._exits.rules = exit_rules
            self._square_off_ms = _ms_of_day(exit_rules.square_off)
        if signal_cooldown_s is not None or kill_switch_square_off is not None:
            self._config = replace(
                self._config,
                signal_cooldown_s=self._config.signal_cooldown_s
                if signal_cooldown_s is None
                else signal_cooldown_s,
                kill_switch_square_off=self._config.kill_switch_square_off
                if kill_switch_square_off is None
                else kill_switch_square_off,
            )
        if strategy is not None:
            self._strategy = strategy
        if charges is not None:
            self._charges = charges

    def pause_entries(self, reason: str | None) -> None:
        """Refuse new entries while `reason` is set (an unusable Upstox token, a refused IP);
        None resumes them. Exits go on."""
        self._risk.entries_paused = reason

    def set_margins(self, fractions: Mapping[str, Decimal]) -> None:
        """The share of a future's value its position blocks, by instrument key (Upstox's
        margin API when trading live)."""
        self._risk.margin_fractions.update(fractions)

    def use_calendar(self, calendar: NseCalendar) -> None:
        """Trade by this calendar from now on (holidays refreshed from Upstox)."""
        self._risk.calendar = calendar

    def ban(self, instrument_keys: frozenset[str]) -> None:
        """Take no new entry in these instruments (the F&O ban list)."""
        self._risk.banned = instrument_keys

    def set_kill_switch(self, active: bool, *, reason: str, by: str) -> None:
        """Turn the kill switch on or off; on closes open positions when configured so."""
        now = self.clock.now()
        changed = self._risk.kill_switch.set(active, reason=reason, at=now, by=by)
        if changed and self._records:
            self._audit(
                "kill_switch." + ("on" if active else "off"),
                "account",
                self._config.account,
                now,
                {"reason": reason},
                actor=by,
            )
        if active and self._config.kill_switch_square_off:
            for key in list(self._positions):
                self.request_exit(key, ExitReason.KILL_SWITCH)
        self._journal_account()

    # --- day and loss limit ----------------------------------------------------------------

    def _check_expiry_exits(self) -> None:
        # Stock F&O settle physically: a contract is closed on its expiry exit date.
        today = self._day.trading_date
        for key, position in self._positions.items():
            exit_date = self.router.exit_date(key)
            if exit_date is None or exit_date > today:
                continue
            if not position.exit_pending and key not in self._exit_queue:
                self._queue_exit(key, ExitReason.EXPIRY)

    def _check_loss_limit(self) -> None:
        if not self._day.loss_limit_hit and self._risk.loss_limit_breached(self.day_pnl_paise):
            self._day.loss_limit_hit = True
            now = self.clock.now()
            if self._records:
                self._audit(
                    "risk.daily_loss_limit_hit",
                    "account",
                    self._config.account,
                    now,
                    {
                        "day_pnl_paise": self.day_pnl_paise,
                        "limit_paise": self._risk.limits.daily_loss_limit_paise,
                    },
                )
            self._journal_account()

    def _roll_day(self, new_date: date) -> None:
        self._journal_account()
        self._day = DayState(
            trading_date=new_date,
            capital_paise=self._day.capital_paise + self._day.realised_paise,
        )
        if self._config.limits_follow_capital:
            # The limits of a day come from its opening capital, whether the process ran
            # through the night or started that morning.
            self._risk.reconfigure(
                replace(self._risk.limits, capital_paise=self._day.capital_paise)
            )
        self._last_entry_signal_ms.clear()
        if self._records:
            self._audit(
                "day.started",
                "account",
                self._config.account,
                self.clock.now(),
                {"trading_date": new_date.isoformat()},
            )

    # --- audit -----------------------------------------------------------------------------

    def _journal_account(self) -> None:
        if self._records:
            self.journal.account(self.snapshot())

    def _audit(
        self,
        event: str,
        entity: str,
        entity_id: str,
        at: datetime,
        data: Mapping[str, object],
        actor: str = "engine",
    ) -> None:
        self.journal.audit(
            AuditRecord(
                event=event, entity=entity, entity_id=entity_id, at=at, data=dict(data), actor=actor
            )
        )


def _ist_date(at: datetime) -> date:
    return at.astimezone(IST).date()


def _intent_of(order: Order, reference_price_paise: int) -> OrderIntent:
    return OrderIntent(
        client_order_id=order.client_order_id,
        instrument_key=order.instrument_key,
        side=order.side,
        quantity=order.quantity,
        lots=order.lots,
        purpose=order.purpose,
        reason=order.reason,
        created_at=order.created_at,
        order_type=order.order_type,
        limit_price_paise=order.limit_price_paise,
        signal_id=order.signal_id,
        exit_reason=order.exit_reason,
        reference_price_paise=reference_price_paise,
    )


def _ms_of_day(at: time | None) -> int | None:
    return None if at is None else ((at.hour * 60 + at.minute) * 60 + at.second) * 1000
