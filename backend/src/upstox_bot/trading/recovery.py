"""Restart recovery for an Engine, and an executor that survives being killed mid-placement.

A worker of the distributed harness may die at any instruction. What it committed to the store
is the truth; what it held in memory is gone. `restore` puts a fresh Engine back into the state
the store describes (open positions with their stop state, orders in flight, the day's figures,
the strategy's candle windows, entry cool-downs), working on the Engine's public attributes.
`DurableOrderExecutor` records every intent of a batch before any of them is sent and commits
before each outside call, so that after a crash every order is either on record and looked up by
its tag, or was never produced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from upstox_bot.domain import (
    Candle,
    ExitReason,
    Fill,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    Position,
    Tick,
)
from upstox_bot.errors import BrokerUnavailable, OrderRejected
from upstox_bot.signals.series import CandleSeries
from upstox_bot.trading import order_state
from upstox_bot.trading.engine import MINUTE_MS, Engine, derive_id
from upstox_bot.trading.ports import Broker, Journal

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class RecoveredState:
    """What the store says about an account's trading day, for `restore`."""

    positions: Sequence[Position] = ()
    unfinished_orders: Sequence[Order] = ()  # not filled, cancelled or rejected; oldest first
    realised_paise: int = 0  # today's net realised P&L
    charges_paise: int = 0
    trades: int = 0
    orders: int = 0  # orders created today
    loss_limit_hit: bool = False
    last_prices: Mapping[str, int] = field(default_factory=dict)  # paise by instrument
    candles: Mapping[str, Sequence[Candle]] = field(default_factory=dict)  # oldest first
    last_entry_signal_ms: Mapping[str, int] = field(default_factory=dict)
    sent_ms: Sequence[int] = ()  # orders sent in the rate windows (epoch ms)
    queued_exits: Mapping[str, ExitReason] = field(default_factory=dict)  # triggered, not sent


def restore(engine: Engine, state: RecoveredState) -> None:
    """Put a freshly built engine (no positions, no orders) into the recovered state.

    Orders in flight are tracked again (an entry holds its slot as a pending entry); a position
    flagged as exiting without an exit order in flight is released so that its exit triggers
    again. Call `DurableOrderExecutor.resolve` on the unfinished orders afterwards.
    """
    engine.last_price.update(state.last_prices)
    for position in state.positions:
        key = position.instrument_key
        position.last_price_paise = state.last_prices.get(
            key, position.last_price_paise or position.entry_price_paise
        )
        engine.restore_position(position)
        engine.last_price.setdefault(key, position.last_price_paise)
    exiting = set()
    for order in state.unfinished_orders:
        engine.orders[order.client_order_id] = order
        if order.purpose is OrderPurpose.ENTRY:
            engine.pending_entries[order.instrument_key] = _intent_of(
                order, engine.last_price.get(order.instrument_key, 0)
            )
        else:
            exiting.add(order.instrument_key)
    for key, position in engine.positions.items():
        if position.exit_pending and key not in exiting:
            position.exit_pending = False
            engine.journal.position_updated(position)
    day = engine.day
    day.realised_paise = state.realised_paise
    day.charges_paise = state.charges_paise
    day.trades = state.trades
    day.orders = state.orders
    day.loss_limit_hit = state.loss_limit_hit
    for key, candles in state.candles.items():
        if not candles:
            continue
        series = engine.series.get(key)
        if series is None:
            series = CandleSeries(key, candles[0].interval_s, engine.config.series_capacity)
            engine.series[key] = series
        for candle in candles:
            series.append(candle)
    engine.last_entry_signal_ms.update(state.last_entry_signal_ms)
    engine.risk.rate_limiter.restore(state.sent_ms)
    for key, reason in state.queued_exits.items():
        held = engine.positions.get(key)
        if held is not None and not held.exit_pending:
            engine.exit_queue[key] = reason


def warm_candles(
    engine: Engine, ticks: Sequence[Tick], *, first_seen: Sequence[str] = ()
) -> dict[str, int]:
    """Rebuild the engine's open candles from the ticks it applied before its checkpoint.

    Give the ticks of the last few minutes before the checkpoint, oldest first: they go through
    the candle aggregator exactly as `Engine.on_tick` sends them (minute flushes included), and
    the candles they close are dropped (those are on record already). `first_seen` lists the
    instruments in the order the dead engine first saw them: the aggregator closes candles in
    that order, which decides which of two signals at one instant comes first. Call it on a
    fresh engine before `restore`.

    Returns:
        The last traded price (paise) of each instrument among the ticks.
    """
    aggregator = engine.aggregator
    last: dict[str, int] = {}
    if ticks and first_seen:
        # One tick a day earlier per instrument creates its slot in the aggregator's order;
        # the next day's first tick then starts a clean candle (no volume carried over).
        seed_ms = ticks[0].ts_ms - 86_400_000
        for key in first_seen:
            aggregator.on_tick(Tick(instrument_key=key, ts_ms=seed_ms, ltp_paise=1))
        aggregator.flush(seed_ms + 86_400_000 // 2)
    next_flush: int | None = None
    for tick in ticks:
        ts = tick.ts_ms
        if next_flush is None:
            next_flush = (ts // MINUTE_MS + 1) * MINUTE_MS
        elif ts >= next_flush:
            aggregator.flush(ts)
            next_flush = (ts // MINUTE_MS + 1) * MINUTE_MS
        aggregator.on_tick(tick)
        last[tick.instrument_key] = tick.ltp_paise
    return last


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


class DurableOrderExecutor:
    """Places the engine's intents so that a crash at any point neither loses nor doubles one.

    The intents of one engine step are all recorded (PENDING) and committed before the first
    is sent; each order is then recorded as SUBMITTING and committed before the broker sees it.
    After a crash `resolve` settles each unfinished order from the broker's view, looked up by
    the order's tag, and places it only if the broker never received it.

    Args:
        engine: the account's engine.
        broker: where orders go.
        journal: the engine's journal (the executor records orders through it).
        commit: makes everything journalled so far durable (raises if it cannot).
        fills_of: the broker's recorded fills of an order, if it keeps them (exact replay).
        after_place: called right after the broker accepted an order (fault injection in
            tests; monitoring).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        broker: Broker,
        journal: Journal,
        commit: Callable[[], None],
        fills_of: Callable[[str], Sequence[Fill]] | None = None,
        after_place: Callable[[Order], None] | None = None,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.journal = journal
        self.commit = commit
        self.fills_of = fills_of
        self.after_place = after_place
        self.unresolved: dict[str, Order] = {}  # sent, outcome unknown (broker unavailable)

    def execute(self, intents: Iterable[OrderIntent]) -> None:
        """Record every intent as an order, commit, then send them one by one in order."""
        orders = []
        for intent in intents:
            order = Order.from_intent(intent)
            self.engine.on_order_created(order)
            self.journal.order(order)
            orders.append(order)
        if not orders:
            return
        self.commit()
        for order in orders:
            self._submit(order)

    def apply_fills(self, fills: Iterable[Fill]) -> None:
        """Feed fills reported after placement to the engine."""
        for fill in fills:
            self.engine.on_fill(fill)

    def resolve(self, order: Order) -> None:
        """Settle an unfinished order after a restart from the broker's view of its tag.

        A PENDING or SUBMITTING order the broker never received is sent now; one it accepted
        becomes OPEN; its fills and a rejection are applied to the engine.
        """
        try:
            known = self.broker.find_by_tag(order.client_order_id)
        except BrokerUnavailable:
            self.unresolved[order.client_order_id] = order
            return
        self.unresolved.pop(order.client_order_id, None)
        if known is None:
            if order.status in (OrderStatus.PENDING, OrderStatus.SUBMITTING):
                self._submit(order)
            else:
                log.error(
                    "order.unknown_to_broker",
                    extra={"client_order_id": order.client_order_id, "status": order.status},
                )
            return
        if known.status is OrderStatus.REJECTED:
            self.engine.on_order_rejected(order.client_order_id, known.rejection_reason or "")
            return
        now = self.engine.clock.now()
        if order.status is OrderStatus.PENDING:
            order_state.transition(order, OrderStatus.SUBMITTING, now)
            self.journal.order_sent(order.client_order_id, now)
        if order.broker_order_id is None:
            order.broker_order_id = known.broker_order_id
        if order.status is OrderStatus.SUBMITTING:
            order_state.transition(order, OrderStatus.OPEN, now)
            self.journal.order(order)
        for fill in self._fills_after(order, known):
            self.engine.on_fill(fill)

    def resolve_unresolved(self) -> None:
        """Retry `resolve` for the orders whose outcome was unknown."""
        for order in list(self.unresolved.values()):
            self.resolve(order)

    def _fills_after(self, order: Order, known: Order) -> list[Fill]:
        if known.filled_quantity <= order.filled_quantity:
            return []
        recorded = list(self.fills_of(order.client_order_id)) if self.fills_of else []
        if sum(f.quantity for f in recorded) == known.filled_quantity:
            skip, out = order.filled_quantity, []
            for fill in recorded:  # the fills the engine already applied come first
                if skip >= fill.quantity:
                    skip -= fill.quantity
                    continue
                out.append(fill)
            return out
        return [
            Fill(
                fill_id=derive_id("fill", order.client_order_id, "reconciled"),
                client_order_id=order.client_order_id,
                broker_order_id=known.broker_order_id or "",
                instrument_key=order.instrument_key,
                side=order.side,
                quantity=known.filled_quantity - order.filled_quantity,
                price_paise=known.average_price_paise or 0,
                filled_at=self.engine.clock.now(),
            )
        ]

    def _submit(self, order: Order) -> None:
        now = self.engine.clock.now()
        if order.status is OrderStatus.PENDING:
            order_state.transition(order, OrderStatus.SUBMITTING, now)
            self.journal.order(order)
            self.journal.order_sent(order.client_order_id, now)
            self.commit()
        try:
            fills = self.broker.place(order)
        except OrderRejected as exc:
            log.warning(
                "order.rejected",
                extra={"client_order_id": order.client_order_id, "reason": str(exc)},
            )
            self.engine.on_order_rejected(order.client_order_id, str(exc))
            return
        except BrokerUnavailable:
            log.warning("order.outcome_unknown", extra={"client_order_id": order.client_order_id})
            self.unresolved[order.client_order_id] = order
            return
        if self.after_place is not None:
            self.after_place(order)
        if not fills and order.status is OrderStatus.SUBMITTING:
            order_state.transition(order, OrderStatus.OPEN, self.engine.clock.now())
            self.journal.order(order)
        for fill in fills:
            self.engine.on_fill(fill)
