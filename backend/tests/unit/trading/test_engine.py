"""The engine end to end on scripted ticks: entries, exits, pacing, kill switch, loss limit."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pytest

from tests.support.factories import (
    ScriptedStrategy,
    ist_ms,
    make_engine,
    make_instrument,
    make_limits,
    make_tick,
)
from upstox_bot.domain import (
    Candle,
    ExitReason,
    Order,
    OrderIntent,
    OrderStatus,
    SignalStatus,
    SignalType,
)
from upstox_bot.errors import Conflict
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineState, derive_id
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.journal import MemoryJournal

A = "NSE_EQ|A"
B = "NSE_EQ|B"


class Harness:
    def __init__(self, script: dict[int, list[SignalType]] | None = None, **kw: Any) -> None:
        instruments = [
            make_instrument(instrument_key=A, trading_symbol="A"),
            make_instrument(instrument_key=B, trading_symbol="B"),
        ]
        self.engine, self.journal, self.clock = make_engine(
            ScriptedStrategy(script), instruments=instruments, **kw
        )
        self.broker = PaperBroker(
            clock=self.clock, slippage_bps=Decimal(0), tick_size_paise=lambda _k: 1
        )
        self.executor = OrderExecutor(engine=self.engine, broker=self.broker, journal=self.journal)

    def tick(self, key: str, ms: int, price: int) -> None:
        """One trade: working paper orders fill at it first, then the engine sees it."""
        self.clock.set_ms(ms)
        tick = make_tick(instrument_key=key, ts_ms=ms, ltp_paise=price)
        self.executor.apply_fills(self.broker.on_tick(tick))
        self.executor.execute(self.engine.on_tick(tick))
        # the running unrealised total never drifts from the positions it sums
        expected = sum(p.unrealised_pnl_paise for p in self.engine.positions.values())
        assert self.engine.unrealised_paise == expected

    def timer(self, ms: int) -> None:
        self.clock.set_ms(ms)
        self.executor.execute(self.engine.on_timer(ms))


def _enter_a_at_10(h: Harness, price: int = 10_000) -> None:
    h.tick(A, ist_ms(10, 0, 1), price)
    h.timer(ist_ms(10, 1))  # closes the 10:00 candle: scripted entry, order sent
    h.tick(A, ist_ms(10, 1), price)  # the next trade fills it


def test_entry_signal_becomes_a_filled_position_with_levels() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    position = h.engine.positions[A]
    # Sized for the worst fill, one 5-paise tick above Rs 100.00 (no slippage): the 30% cap of
    # Rs 1,00,000 is 30,00,000 paise, and 30,00,000 // 10,005 = 299 shares (300 would be worth
    # 30,01,500 paise at that fill, over the cap).
    assert (position.quantity, position.entry_price_paise) == (299, 10_000)
    assert (position.stop_paise, position.target_paise) == (9_500, 10_400)
    (order,) = h.journal.orders.values()
    assert order.status is OrderStatus.FILLED
    (signal, status) = next(iter(h.journal.signals.values()))
    assert status is SignalStatus.ACCEPTED
    assert signal.indicators == {"close": 100.0}
    assert h.journal.decisions[-1].approved


def test_stop_loss_closes_the_position_and_books_the_trade() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    h.tick(A, ist_ms(10, 2), 9_600)
    h.tick(A, ist_ms(10, 3), 9_500)  # stop touched: exit order sent
    assert h.engine.positions[A].exit_pending
    h.tick(A, ist_ms(10, 3, 1), 9_480)  # filled at the next trade
    assert A not in h.engine.positions
    (trade,) = h.journal.trades
    assert trade.exit_reason is ExitReason.STOP_LOSS
    assert trade.gross_pnl_paise == -520 * 299  # (94.80 - 100.00) x 299 shares
    assert h.engine.day.realised_paise == trade.net_pnl_paise


def test_exit_waits_for_the_thirty_second_gap_then_goes() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)  # entry order at 10:01:00
    h.tick(A, ist_ms(10, 1, 10), 9_000)  # stop hit 10 s later: must wait
    assert A in h.engine.positions
    assert A in h.engine.exit_queue
    h.tick(A, ist_ms(10, 1, 29), 9_100)
    assert A in h.engine.positions
    h.tick(A, ist_ms(10, 1, 30), 9_200)  # the slot opens: exit sent
    h.tick(A, ist_ms(10, 1, 31), 9_250)  # and filled
    assert A not in h.engine.positions
    (trade,) = h.journal.trades
    assert trade.exit_reason is ExitReason.STOP_LOSS
    assert trade.exit_price_paise == 9_250
    sent = [at for _, at in h.journal.sent]
    assert (sent[1] - sent[0]).total_seconds() == 30


def test_queued_exit_goes_before_a_new_entry() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG], ist_ms(10, 1): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)  # entry at 10:01:00
    h.tick(A, ist_ms(10, 1, 5), 9_400)  # stop hit: the exit must wait for 10:01:30
    h.tick(B, ist_ms(10, 1, 6), 5_000)
    h.timer(ist_ms(10, 2))  # no tick since: the exit goes now, then B's entry signal arrives
    h.tick(A, ist_ms(10, 2, 1), 9_400)
    assert not h.engine.positions
    assert h.journal.trades[0].exit_reason is ExitReason.STOP_LOSS
    refused = h.journal.decisions[-1]
    assert refused.instrument_key == B
    assert refused.rule is not None
    assert refused.rule.value == "order_spacing"


def test_take_profit_then_trailing_exit() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    prices = ((10, 10_400), (20, 11_000), (40, 10_900), (50, 10_780), (51, 10_770))
    for second, price in prices:
        h.tick(A, ist_ms(10, 2, second), price)
    (trade,) = h.journal.trades
    assert trade.exit_reason is ExitReason.TRAILING_STOP
    assert trade.exit_price_paise == 10_770
    assert any(a.event == "exit.trailing_armed" for a in h.journal.audits)


def test_square_off_at_fifteen_fifteen() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    h.tick(A, ist_ms(15, 14, 59), 10_100)
    assert A in h.engine.positions
    h.timer(ist_ms(15, 15))
    h.tick(A, ist_ms(15, 15, 1), 10_100)
    (trade,) = h.journal.trades
    assert trade.exit_reason is ExitReason.SQUARE_OFF


def test_exit_signal_closes_the_position() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG], ist_ms(10, 5): [SignalType.EXIT_LONG]})
    _enter_a_at_10(h)
    h.tick(A, ist_ms(10, 5, 1), 10_050)
    h.timer(ist_ms(10, 6))
    h.tick(A, ist_ms(10, 6, 1), 10_050)
    (trade,) = h.journal.trades
    assert trade.exit_reason is ExitReason.SIGNAL


def test_kill_switch_blocks_entries_and_closes_positions() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG], ist_ms(10, 2): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    h.engine.set_kill_switch(True, reason="test", by="tester")
    h.tick(A, ist_ms(10, 1, 30), 10_000)  # the queued kill-switch exit goes at the first slot
    h.tick(A, ist_ms(10, 1, 31), 10_000)
    assert not h.engine.positions
    assert h.journal.trades[0].exit_reason is ExitReason.KILL_SWITCH
    h.tick(B, ist_ms(10, 2, 1), 5_000)
    h.timer(ist_ms(10, 3))
    assert not h.engine.positions
    assert h.journal.decisions[-1].rule is not None
    assert h.journal.decisions[-1].rule.value == "kill_switch"


def test_no_entry_after_the_daily_loss_limit() -> None:
    # capital Rs 10,000 -> loss limit Rs 200; 30% = Rs 3,000 = 29 shares at the worst fill of
    # Rs 100.05 (30 x 100.05 = 3,001.50 is over the cap)
    h = Harness(
        {ist_ms(10, 0): [SignalType.ENTRY_LONG], ist_ms(10, 3): [SignalType.ENTRY_LONG]},
        limits=make_limits(capital_paise=1_000_000),
    )
    _enter_a_at_10(h)
    assert h.engine.positions[A].quantity == 29
    h.tick(A, ist_ms(10, 2), 9_300)  # stop 9,500: loss 7 x 29 = Rs 203 > Rs 200 limit
    assert h.engine.day.loss_limit_hit
    h.tick(B, ist_ms(10, 3, 1), 5_000)
    h.timer(ist_ms(10, 4))
    assert h.journal.decisions[-1].rule is not None
    assert h.journal.decisions[-1].rule.value == "daily_loss_limit"
    assert any(a.event == "risk.daily_loss_limit_hit" for a in h.journal.audits)


def test_same_candle_signal_is_not_raised_twice_and_cooldown_applies() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG], ist_ms(10, 2): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    h.tick(A, ist_ms(10, 2, 1), 10_000)
    h.timer(ist_ms(10, 3))  # second entry signal within the 5-minute cooldown
    statuses = [s for _, s in h.journal.signals.values()]
    assert statuses == [SignalStatus.ACCEPTED, SignalStatus.IGNORED]


def test_rejected_exit_is_queued_again_not_lost() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    h.engine.request_exit(A, ExitReason.MANUAL)
    h.clock.set_ms(ist_ms(10, 1, 30))
    intents = h.engine.on_timer(ist_ms(10, 1, 30))
    (intent,) = intents
    order = _created(h.engine, intent)
    h.engine.on_order_rejected(order.client_order_id, "exchange down")
    assert A in h.engine.exit_queue
    assert not h.engine.positions[A].exit_pending


def _created(engine: Engine, intent: OrderIntent) -> Order:
    order = Order.from_intent(intent)
    engine.on_order_created(order)
    return order


def test_memory_journal_holds_every_audit_with_time() -> None:
    journal = MemoryJournal()
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]}, journal=journal)
    _enter_a_at_10(h)
    events = [a.event for a in journal.audits]
    assert events[:3] == ["order.intent", "order.filled", "position.opened"]


def test_a_working_entry_can_be_cancelled_and_frees_its_slot() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    h.tick(A, ist_ms(10, 0, 1), 10_000)
    h.timer(ist_ms(10, 1))  # entry sent; it would fill at the next trade
    (order_id,) = list(h.engine.orders)
    assert h.broker.cancel(order_id)
    h.engine.on_order_cancelled(order_id, by="tester")
    assert A not in h.engine.pending_entries
    h.tick(A, ist_ms(10, 1, 1), 10_000)  # the next trade fills nothing
    assert not h.engine.positions
    assert h.journal.orders[order_id].status.value == "cancelled"
    assert not h.broker.cancel(order_id)  # already closed


def test_an_exit_order_is_never_cancelled() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)
    h.tick(A, ist_ms(10, 2), 9_400)  # stop: exit sent
    (exit_id,) = list(h.engine.orders)
    with pytest.raises(Conflict):
        h.engine.on_order_cancelled(exit_id, by="tester")
    assert h.engine.positions[A].exit_pending


def test_a_candle_closed_again_after_a_rebuild_is_skipped_not_fatal() -> None:
    # A rebuilt engine whose window already holds the 10:00 candle sees it close again.
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG], ist_ms(10, 1): [SignalType.ENTRY_LONG]})
    held_day = h.engine.trading_date
    held = Candle(
        instrument_key=A,
        interval_s=60,
        start_ms=ist_ms(10, 0),
        open_paise=10_000,
        high_paise=10_000,
        low_paise=10_000,
        close_paise=10_000,
        volume=1,
    )
    h.engine.restore(
        EngineState(
            trading_date=held_day, capital_paise=h.engine.capital_paise, candles={A: [held]}
        )
    )
    h.tick(A, ist_ms(10, 0, 1), 10_000)
    h.timer(ist_ms(10, 1))
    assert h.engine.stale_candles == 1
    assert not h.engine.orders, "no decision is taken twice on one minute"
    h.tick(A, ist_ms(10, 1, 1), 10_000)
    h.timer(ist_ms(10, 2))  # the next minute is decided as usual
    assert h.engine.series[A].last_start_ms == ist_ms(10, 1)
    assert len(h.engine.orders) == 1


def test_derived_ids_are_stable_across_versions() -> None:
    """Order ids are derived, stored and sent to the broker as tags: a restart must derive the
    same ones, so their recipe is pinned (prefix, dash, 16 hex digits of SHA-256 of the parts)."""
    parts = ("paper-1", "entry", "sg-0123456789abcdef", 1_735_000_000_000, 60, 2.5, None)
    text = "paper-1|entry|sg-0123456789abcdef|1735000000000|60|2.5|None"
    assert derive_id("ub", *parts) == "ub-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    assert derive_id("ub", "a", 1) == "ub-df4504ce92500fe8"
    assert derive_id("ub", "a", 1) != derive_id("ub", "a", "1 ")


def test_stored_positions_carry_the_unrealised_pnl_the_account_shows() -> None:
    h = Harness({ist_ms(10, 0): [SignalType.ENTRY_LONG]})
    _enter_a_at_10(h)  # 299 shares at 100.00
    # A dip above the stop moves no stop state, so nothing else rewrites the row.
    h.tick(A, ist_ms(10, 1, 20), 9_900)
    h.timer(ist_ms(10, 2))  # the minute's snapshot
    stored = h.journal.positions[A]
    # (99.00 - 100.00) x 299 = -Rs 299.00, the same figure as the account's
    assert stored.last_price_paise == 9_900
    assert stored.unrealised_pnl_paise == -100 * 299 == -29_900
    assert h.journal.accounts[-1].unrealised_pnl_paise == -29_900
