"""The order executor: records each intent as an order, sends it, and feeds the result back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from upstox_bot import faults
from upstox_bot.domain import Fill, Order, OrderIntent, OrderStatus
from upstox_bot.errors import BrokerUnavailable, OrderRejected, OrdersBlocked
from upstox_bot.trading import order_state
from upstox_bot.trading.engine import Engine, derive_id
from upstox_bot.trading.ports import Broker, Journal

log = logging.getLogger(__name__)


class OrderExecutor:
    """Places intents through a broker, in order, recording state before each outside call.

    `before_send` runs after an order is recorded as SUBMITTING and before the broker sees it:
    the embedded harness commits the journal there, so a crash after the broker accepted an
    order always finds the order on disk and looks it up by its tag instead of placing it again.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        broker: Broker,
        journal: Journal,
        before_send: Callable[[], None] | None = None,
        lookup_window_ms: int = 0,
    ) -> None:
        self.engine = engine
        self.broker = broker
        self.journal = journal
        self.before_send = before_send
        self.unresolved: dict[str, Order] = {}  # sent, outcome unknown (broker unavailable)
        # An order not found by its tag is sent again only this long after it was sent: a live
        # broker's book may lag (Upstox: API.md 13; UPSTOX_TAG_LOOKUP_SECONDS). 0 for a broker
        # whose look-up is conclusive at once (paper).
        self.lookup_window_ms = lookup_window_ms
        # The order desk's hooks (trading.desk): hold a new order instead of sending it, and
        # tend the working orders after each batch.
        self.hold: Callable[[Order], bool] | None = None
        self.tend: Callable[[], None] | None = None
        self.on_blocked: Callable[[Order, OrdersBlocked], None] | None = None

    def execute(self, intents: Iterable[OrderIntent]) -> None:
        for intent in intents:
            self._execute_one(intent)
        if self.tend is not None:
            self.tend()

    def _execute_one(self, intent: OrderIntent) -> None:
        order = Order.from_intent(intent)
        self.engine.on_order_created(order)
        self.journal.order(order)
        if self.hold is not None and self.hold(order):
            return  # kept PENDING by the desk (or refused there), sent when it allows
        self._submit(order)

    def _submit(self, order: Order) -> None:
        now = self.engine.clock.now()
        order_state.transition(order, OrderStatus.SUBMITTING, now)
        self.journal.order(order)
        self.journal.order_sent(order.client_order_id, now)
        if self.before_send is not None:
            self.before_send()
        if faults.ENABLED:
            faults.point("order.recorded")
        self._send(order)

    def send_again(self, order: Order) -> None:
        """Send an order the broker never took (held, or found absent after the look-up
        window) with the same tag: PENDING goes through SUBMITTING as a new one does."""
        if order.status is OrderStatus.PENDING:
            self._submit(order)
            return
        self.journal.order_sent(order.client_order_id, self.engine.clock.now())
        if self.before_send is not None:
            self.before_send()
        self._send(order)

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
        if not fills and order.status is OrderStatus.SUBMITTING:
            order_state.transition(order, OrderStatus.OPEN, self.engine.clock.now())
            self.journal.order(order)
        for fill in fills:
            self.engine.on_fill(fill)

    def apply_fills(self, fills: Iterable[Fill]) -> None:
        """Feed fills reported after placement (next tick, portfolio stream) to the engine."""
        for fill in fills:
            self.engine.on_fill(fill)

    def resolve_unresolved(self) -> None:
        """Settle orders whose outcome was unknown: look each up by tag; place it again only
        when it is absent and was sent longer than the look-up window ago (a younger one may
        not show in the broker's book yet: it is looked up again on the next call)."""
        now_ms = self.engine.clock.now_ms()
        for client_order_id, order in list(self.unresolved.items()):
            try:
                known = self.broker.find_by_tag(client_order_id)
            except BrokerUnavailable:
                continue
            if known is None:
                sent_ms = int(order.updated_at.timestamp() * 1000)
                if now_ms - sent_ms < self.lookup_window_ms:
                    continue
                del self.unresolved[client_order_id]
                self._send(order)
                continue
            del self.unresolved[client_order_id]
            if known.broker_order_id and order.broker_order_id is None:
                order.broker_order_id = known.broker_order_id
            if order.status is OrderStatus.SUBMITTING and known.status in (
                OrderStatus.OPEN,
                OrderStatus.PARTIALLY_FILLED,
            ):
                order_state.transition(order, OrderStatus.OPEN, self.engine.clock.now())
                self.journal.order(order)
            if known.status is OrderStatus.REJECTED:
                self.engine.on_order_rejected(client_order_id, known.rejection_reason or "")
            elif known.filled_quantity and known.average_price_paise is not None:
                self.engine.on_fill(
                    Fill(
                        fill_id=derive_id("fill", client_order_id, "reconciled"),
                        client_order_id=order.client_order_id,
                        broker_order_id=known.broker_order_id or "",
                        instrument_key=order.instrument_key,
                        side=order.side,
                        quantity=known.filled_quantity,
                        price_paise=known.average_price_paise,
                        filled_at=self.engine.clock.now(),
                    )
                )
