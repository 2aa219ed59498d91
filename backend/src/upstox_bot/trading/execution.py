"""The order executor: records each intent as an order, makes it durable, sends it, and feeds
the result back to the engine. One executor for every harness.

A crash at any instruction neither loses nor doubles an order: the intents of one engine step
are all recorded as SUBMITTING and committed (`commit`) before the first is sent, so after a
restart every order is either on record, and then looked up by its tag before anything is sent
again (`resolve`), or was never produced. An order whose outcome is unknown is sent again only
after the broker's book had the look-up window to show it (a live broker's book lags).

The order desk (trading/desk.py) plugs in through three hooks: `hold` keeps a new order back
(the broker refuses the account's orders now), `tend` follows the working orders after each
step (deadlines, re-pricing), `on_blocked` takes an order the broker refused for the account.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from upstox_bot import faults
from upstox_bot.domain import Fill, Order, OrderIntent, OrderStatus
from upstox_bot.errors import BrokerUnavailable, OrderRejected, OrdersBlocked
from upstox_bot.trading import order_state
from upstox_bot.trading.engine import Engine, derive_id
from upstox_bot.trading.ports import Broker, Journal

log = logging.getLogger(__name__)


class OrderExecutor:
    """Places the engine's intents through a broker, in order, durable before each send.

    Args:
        engine: the account's engine.
        broker: where orders go.
        journal: the engine's journal (orders are recorded through it).
        commit: makes everything journalled so far durable, raising if it cannot; None when
            nothing is kept (a backtest).
        fills_of: the broker's recorded fills of an order, when it keeps them, so that a
            restart replays them exactly (the paper book in Redis).
        after_place: called right after the broker accepted an order (fault injection in
            tests; monitoring).
        lookup_window_ms: how long after it was sent an order absent from the broker's book
            may still show there (Upstox: UPSTOX_TAG_LOOKUP_SECONDS); 0 for a broker whose
            look-up is conclusive at once (paper).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        broker: Broker,
        journal: Journal,
        commit: Callable[[], None] | None = None,
        fills_of: Callable[[str], Sequence[Fill]] | None = None,
        after_place: Callable[[Order], None] | None = None,
        lookup_window_ms: int = 0,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.journal = journal
        self.commit = commit
        self.fills_of = fills_of
        self.after_place = after_place
        self.lookup_window_ms = lookup_window_ms
        self.unresolved: dict[str, Order] = {}  # sent, outcome unknown (broker unavailable)
        # The order desk's hooks (trading/desk.py).
        self.hold: Callable[[Order], bool] | None = None
        self.tend: Callable[[], None] | None = None
        self.on_blocked: Callable[[Order, OrdersBlocked], None] | None = None

    def execute(self, intents: Iterable[OrderIntent]) -> None:
        """Record every intent as an order (SUBMITTING), commit once, then send them in order;
        then let the desk tend the working orders."""
        orders: list[Order] = []
        engine, journal, hold = self.engine, self.journal, self.hold
        now = engine.clock.now()
        for intent in intents:
            order = Order.from_intent(intent)
            engine.on_order_created(order)
            journal.order(order)
            if hold is not None and hold(order):
                continue  # kept PENDING by the desk (or refused there), sent when it allows
            order_state.transition(order, OrderStatus.SUBMITTING, now)
            journal.order(order)
            journal.order_sent(order.client_order_id, now)
            orders.append(order)
        if orders:
            if self.commit is not None:
                self.commit()
            if faults.ENABLED:
                faults.point("order.recorded")
            for order in orders:
                self._send(order)
        if self.tend is not None:
            self.tend()

    def send_again(self, order: Order) -> None:
        """Send an order the broker never took (held, or found absent after the look-up
        window) with the same tag, durable first."""
        if order.status is OrderStatus.PENDING:
            now = self.engine.clock.now()
            order_state.transition(order, OrderStatus.SUBMITTING, now)
            self.journal.order(order)
            # Logged once per order: a resend of one the broker never showed is the same order.
            self.journal.order_sent(order.client_order_id, now)
            if self.commit is not None:
                self.commit()
        self._send(order)

    def apply_fills(self, fills: Iterable[Fill]) -> None:
        """Feed fills reported after placement (next tick, portfolio stream) to the engine."""
        for fill in fills:
            self.engine.on_fill(fill)

    def resolve(self, order: Order) -> None:
        """Settle an unfinished order (after a restart, or an unknown outcome) from the
        broker's view of its tag.

        An order never sent (PENDING) is sent now. One whose sending may have failed
        (SUBMITTING) and that the broker does not show is sent again once the look-up window
        since it was sent has passed, and looked up again before that. One the broker
        accepted becomes OPEN; its fills and a rejection are applied to the engine.
        """
        try:
            known = self.broker.find_by_tag(order.client_order_id)
        except BrokerUnavailable:
            self.unresolved[order.client_order_id] = order
            return
        if known is None:
            if order.status is OrderStatus.PENDING:
                self.unresolved.pop(order.client_order_id, None)
                self.send_again(order)
            elif order.status is OrderStatus.SUBMITTING:
                sent_ms = int(order.updated_at.timestamp() * 1000)
                if self.engine.clock.now_ms() - sent_ms < self.lookup_window_ms:
                    self.unresolved[order.client_order_id] = order  # the book may still lag
                    return
                self.unresolved.pop(order.client_order_id, None)
                self.send_again(order)
            else:
                self.unresolved.pop(order.client_order_id, None)
                log.error(
                    "order.unknown_to_broker",
                    extra={"client_order_id": order.client_order_id, "status": order.status},
                )
            return
        self.unresolved.pop(order.client_order_id, None)
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

    def _send(self, order: Order) -> None:
        try:
            fills = self.broker.place(order)
            if faults.ENABLED:
                faults.point("order.placed")
        except OrderRejected as exc:
            log.warning(
                "order.rejected",
                extra={"client_order_id": order.client_order_id, "reason": str(exc)},
            )
            self.engine.on_order_rejected(order.client_order_id, str(exc))
            return
        except OrdersBlocked as exc:
            # The broker refuses every order of the account: the desk holds an exit and
            # releases an entry; without a desk it is a rejection.
            log.warning(
                "order.blocked",
                extra={"client_order_id": order.client_order_id, "reason": str(exc)},
            )
            if self.on_blocked is not None:
                self.on_blocked(order, exc)
            else:
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
