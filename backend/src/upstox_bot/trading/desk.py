"""The order desk: everything between an order handed to the broker and its end.

The engine decides, the executor records and sends; the desk then follows each order until it
is over, in every harness, whatever the broker does:

- it applies what the broker reports (:meth:`OrderDesk.apply`): fills, ends, acknowledgements,
  account-level refusals, lost answers and their resolution by tag, modifies;
- it keeps the :class:`~upstox_bot.trading.order_gate.OrderGate`: while the broker refuses
  every order of the account (static IP, algo registration, order API, a dead token) entries
  are refused before they are sent, exits wait here (never dropped) and one goes out as a probe
  now and then; the first accepted order opens the gate and sends the rest;
- it drives the :class:`~upstox_bot.trading.lifecycle.OrderLifecycle` (:meth:`tend`): deadlines,
  re-pricing of resting exits, cancelling of stale entries, escalation;
- it changes working orders on request (:meth:`modify`), validated and audited.

Never a second order for one intent: an order whose outcome is unknown is sent again only
after the broker looked its tag up over the whole look-up window and found nothing
(OrderNotPlaced); an entry by then past its deadline is released instead of sent late.

Plain Python on the harness's thread; the broker does its network work elsewhere (the live
broker's own loop) and reports through ``drain()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from upstox_bot.domain import AuditRecord, Fill, Order, OrderPurpose, OrderStatus, OrderType
from upstox_bot.errors import BrokerUnavailable, Conflict, NotFound, OrdersBlocked
from upstox_bot.trading.engine import Engine
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.lifecycle import (
    CancelEntry,
    Escalate,
    LifecycleAction,
    OrderLifecycle,
    Replace,
    Reprice,
)
from upstox_bot.trading.order_gate import BlockCause, OrderGate
from upstox_bot.trading.ports import (
    BrokerEvent,
    CancelOutcome,
    Journal,
    OrderAccepted,
    OrderBlocked,
    OrderChange,
    OrderClosed,
    OrderModified,
    OrderNotPlaced,
    OrderUnknown,
)

log = logging.getLogger(__name__)

ACTOR = "order_desk"


class OrderDesk:
    """Follows every order handed to the broker until it ends (see the module doc).

    Args:
        engine: the account's engine (orders, positions, last prices).
        executor: its executor (sends, holds and re-sends orders).
        journal: where audit records go (the engine's journal).
        lifecycle: deadlines and re-pricing of working orders.
        gate: whether the broker takes orders now.
        tick_size_paise: the tick of an instrument (re-priced limits sit on it).
        token_usable: whether a usable broker token is there now (a gate blocked by the token
            probes again as soon as it is); None: always.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        executor: OrderExecutor,
        journal: Journal,
        lifecycle: OrderLifecycle | None = None,
        gate: OrderGate | None = None,
        tick_size_paise: Callable[[str], int] = lambda _key: 5,
        token_usable: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.journal = journal
        self.lifecycle = lifecycle or OrderLifecycle()
        self.gate = gate or OrderGate()
        self.tick_size_paise = tick_size_paise
        self.token_usable = token_usable
        self.held: dict[str, Order] = {}  # exits waiting for the gate, oldest first
        self.unknown: set[str] = set()  # sent, outcome unknown: the broker looks them up
        self.escalations = 0
        self.resent = 0
        executor.hold = self._hold
        executor.tend = self.tend
        executor.on_blocked = self._blocked_now

    # --- state ---------------------------------------------------------------------------

    @property
    def broker(self) -> Any:
        return self.executor.broker

    def _now(self) -> datetime:
        return self.engine.clock.now()

    def _audit(self, event: str, entity_id: str, data: Mapping[str, object], actor: str) -> None:
        self.journal.audit(
            AuditRecord(
                event=event,
                entity="order",
                entity_id=entity_id,
                at=self._now(),
                data=dict(data),
                actor=actor,
            )
        )

    def busy(self) -> set[str]:
        """Orders the lifecycle must not act on yet: not acknowledged, unknown, or held."""
        busy = set(self.held) | self.unknown
        for client_order_id, order in self.engine.orders.items():
            if order.broker_order_id is None:
                busy.add(client_order_id)
        return busy

    # --- broker events ---------------------------------------------------------------------

    def drain(self) -> None:
        """Apply what the broker reported since the last call (a broker without ``drain``
        reports nothing later)."""
        drain = getattr(self.broker, "drain", None)
        if drain is not None:
            self.apply(drain())

    def apply(self, events: Iterable[BrokerEvent]) -> None:
        """Apply broker events in order: fills first as they came, then what followed them."""
        for event in events:
            try:
                self._apply_one(event)
            except Exception:  # one bad event must not stop the others (nor the harness)
                log.exception("desk.event.failed", extra={"event": type(event).__name__})

    def _apply_one(self, event: BrokerEvent) -> None:
        if isinstance(event, Fill):
            self.executor.apply_fills([event])
        elif isinstance(event, OrderClosed):
            self.unknown.discard(event.client_order_id)
            self.engine.on_order_closed(
                event.client_order_id,
                event.status,
                event.reason,
                by=event.requested_by or "broker",
            )
        elif isinstance(event, OrderAccepted):
            self._accepted(event)
        elif isinstance(event, OrderBlocked):
            self._blocked(event.client_order_id, event.cause, event.reason, event.operation)
        elif isinstance(event, OrderUnknown):
            self._outcome_unknown(event)
        elif isinstance(event, OrderNotPlaced):
            self._not_placed(event)
        elif isinstance(event, OrderModified):
            self._modified(event)

    def _accepted(self, event: OrderAccepted) -> None:
        cid = event.client_order_id
        self.unknown.discard(cid)
        if event.broker_order_ids:
            self.engine.on_order_acknowledged(cid, event.broker_order_ids[0])
        if event.recovered:
            self._audit(
                "order.outcome_resolved",
                cid,
                {"found": True, "broker_order_ids": list(event.broker_order_ids)},
                ACTOR,
            )
        self._open_gate()

    def _open_gate(self) -> None:
        if self.gate.clear():
            self._audit(
                "broker.orders_unblocked",
                self.engine.config.account,
                {"held_exits": len(self.held)},
                ACTOR,
            )
            self._release_all()

    def _blocked(self, client_order_id: str, cause: str, reason: str, operation: str) -> None:
        try:
            block_cause = BlockCause(cause)
        except ValueError:
            block_cause = BlockCause.ACCOUNT
        now_ms = self.engine.clock.now_ms()
        if self.gate.block(block_cause, reason, now_ms):
            self._audit(
                "broker.orders_blocked",
                client_order_id,
                {"cause": block_cause.value, "reason": reason, "what_to_do": self.gate.describe()},
                ACTOR,
            )
        if operation != "place":
            return  # a refused cancel or modify: the lifecycle asks again later
        order = self.engine.orders.get(client_order_id)
        if order is None:
            return
        if order.purpose is OrderPurpose.EXIT:
            self._hold_order(order)
        else:
            # An entry was a decision at a price: it is not sent late. Its slot is freed.
            self.engine.on_order_closed(
                client_order_id,
                OrderStatus.REJECTED,
                f"not placed: {reason}",
                by=ACTOR,
            )

    def _blocked_now(self, order: Order, exc: OrdersBlocked) -> None:
        # A broker that refuses synchronously: the same as its OrderBlocked event.
        self._blocked(order.client_order_id, exc.cause, str(exc), "place")

    def _hold_order(self, order: Order) -> None:
        if order.client_order_id in self.held:
            return
        self.held[order.client_order_id] = order
        self._audit(
            "order.held",
            order.client_order_id,
            {"cause": self.gate.cause.value if self.gate.cause else None, "purpose": "exit"},
            ACTOR,
        )

    def _hold(self, order: Order) -> bool:
        """The executor's hook before it sends a new order: False to send it now."""
        if not self.gate.blocked:
            return False
        if order.purpose is OrderPurpose.EXIT:
            self._hold_order(order)
        else:
            self.engine.on_order_rejected(
                order.client_order_id, f"not placed: {self.gate.describe()}"
            )
        return True

    def _release_all(self) -> None:
        held, self.held = self.held, {}
        for order in held.values():
            self._send_held(order)

    def _send_held(self, order: Order) -> None:
        if order.client_order_id not in self.engine.orders:
            return  # ended meanwhile (the position closed another way)
        self._send_again(order)

    def _send_again(self, order: Order) -> None:
        cid = order.client_order_id
        self.lifecycle.restart(cid, self.engine.clock.now_ms())
        self.executor.send_again(order)
        if order.broker_order_id is not None and cid not in self.held:
            # a broker that answers at once took it (a live one reports OrderAccepted later)
            self._open_gate()

    def _outcome_unknown(self, event: OrderUnknown) -> None:
        self.unknown.add(event.client_order_id)
        self._audit("order.outcome_unknown", event.client_order_id, {"reason": event.reason}, ACTOR)

    def _not_placed(self, event: OrderNotPlaced) -> None:
        cid = event.client_order_id
        self.unknown.discard(cid)
        order = self.engine.orders.get(cid)
        if order is None:
            return
        deadline_ms = self.lifecycle.config.entry_timeout_ms
        age_ms = self.engine.clock.now_ms() - int(order.created_at.timestamp() * 1000)
        if order.purpose is OrderPurpose.ENTRY and age_ms > deadline_ms:
            self._audit("order.outcome_resolved", cid, {"found": False, "resent": False}, ACTOR)
            self.engine.on_order_closed(
                cid, OrderStatus.CANCELLED, f"{event.reason}; past its deadline", by=ACTOR
            )
            return
        self._audit("order.outcome_resolved", cid, {"found": False, "resent": True}, ACTOR)
        self.resent += 1
        if self.gate.blocked and order.purpose is OrderPurpose.EXIT:
            self._hold_order(order)
            return
        self._send_again(order)

    def _modified(self, event: OrderModified) -> None:
        cid = event.client_order_id
        if event.ok:
            self.engine.on_order_modified(cid, event.change, by=event.requested_by or ACTOR)
            return
        self._audit(
            "order.modify_refused",
            cid,
            {"reason": event.reason, **_change_data(event.change)},
            event.requested_by or ACTOR,
        )
        if event.requested_by == ACTOR:
            self.lifecycle.modify_refused(cid)

    # --- the lifecycle and the held exits --------------------------------------------------

    def tend(self) -> None:
        """Act on deadlines that passed, and send held exits when the gate allows: cheap when
        there is nothing to do (the executor calls it after every batch it sends)."""
        engine = self.engine
        now_ms = engine.clock.now_ms()
        if self.held:
            usable = self.token_usable() if self.token_usable is not None else True
            if self.gate.probe_due(now_ms, token_usable=usable):
                if self.gate.blocked:
                    self.gate.probing(now_ms)
                    cid = next(iter(self.held))
                    self._send_held(self.held.pop(cid))
                else:
                    self._release_all()
        if not engine.orders:
            return
        lifecycle = self.lifecycle
        if (
            lifecycle.next_due_ms
            and now_ms < lifecycle.next_due_ms
            and len(engine.orders) == len(lifecycle.watched)
        ):
            return  # the cheap path: nothing due, nothing new
        actions = lifecycle.due(
            now_ms,
            engine.orders,
            engine.last_price.get,
            self.tick_size_paise,
            busy=self.busy(),
        )
        for action in actions:
            try:
                self._act(action)
            except (Conflict, NotFound, BrokerUnavailable, OrdersBlocked) as exc:
                log.warning(
                    "desk.lifecycle.deferred",
                    extra={"client_order_id": action.order.client_order_id, "error": str(exc)},
                )

    def _act(self, action: LifecycleAction) -> None:
        order = action.order
        cid = order.client_order_id
        if isinstance(action, Escalate):
            self.escalations += 1
            self._audit(
                "order.exit_stuck",
                cid,
                {
                    "instrument_key": order.instrument_key,
                    "attempts": action.attempts,
                    "owner": action.owner,
                    "filled_quantity": order.filled_quantity,
                    "quantity": order.quantity,
                    "last_price_paise": self.engine.last_price.get(order.instrument_key),
                },
                ACTOR,
            )
        elif isinstance(action, Reprice):
            self._audit(
                "order.repriced",
                cid,
                {
                    "attempt": action.attempt,
                    "price_paise": action.price_paise,
                    "last_price_paise": self.engine.last_price.get(order.instrument_key),
                    "owner": self.lifecycle.watched[cid].owner
                    if cid in self.lifecycle.watched
                    else None,
                },
                ACTOR,
            )
            self._request_modify(
                order,
                OrderChange(price_paise=action.price_paise, order_type=OrderType.LIMIT),
                ACTOR,
            )
        elif isinstance(action, Replace):
            self._audit("order.replace_requested", cid, {"attempt": action.attempt}, ACTOR)
            self._cancel(order, by=ACTOR, replace=True)
        elif isinstance(action, CancelEntry):
            self._audit(
                "order.deadline_passed",
                cid,
                {"overdue_ms": action.overdue_ms, "filled_quantity": order.filled_quantity},
                ACTOR,
            )
            self._cancel(order, by=ACTOR, replace=False)

    def _cancel(self, order: Order, *, by: str, replace: bool) -> None:
        broker = self.broker
        request_cancel = getattr(broker, "request_cancel", None)
        cid = order.client_order_id
        if request_cancel is not None:
            outcome = request_cancel(cid, by=by)
            if outcome is CancelOutcome.CANCELLED:
                self._cancelled_now(order, by=by)
            return
        cancel = getattr(broker, "cancel", None)
        if cancel is not None and cancel(cid):
            self._cancelled_now(order, by=by)

    def _cancelled_now(self, order: Order, *, by: str) -> None:
        # A broker that cancels at once (paper): settle it as an end at the broker would be.
        self.engine.on_order_closed(
            order.client_order_id, OrderStatus.CANCELLED, "cancelled by the order desk", by=by
        )

    def _request_modify(self, order: Order, change: OrderChange, by: str) -> None:
        request_modify = getattr(self.broker, "request_modify", None)
        if request_modify is None:
            raise Conflict(f"the {type(self.broker).__name__} cannot modify orders")
        done = request_modify(order.client_order_id, change, by=by)
        if done:
            self.engine.on_order_modified(order.client_order_id, change, by=by)

    # --- the modify command ----------------------------------------------------------------

    def modify(
        self, client_order_id: str, change: OrderChange, *, by: str, reason: str = ""
    ) -> bool:
        """Change a working order (price, quantity, trigger) on the trader's request.

        Returns:
            True when done now (paper); False when sent to the broker, which confirms later
            (the order changes then, audited as ``order.modified``).

        Raises:
            NotFound: no working order with that id.
            Conflict: the order cannot take this change (not acknowledged, held, an exit's
                quantity, an entry's quantity above what the risk checks approved, a quantity
                not in whole lots or not above the filled part, a trigger on a non-stop order).
            ValueError: a price not on the instrument's tick.
        """
        order = self.engine.orders.get(client_order_id)
        if order is None:
            raise NotFound(f"no working order {client_order_id!r}")
        self._check_change(order, change)
        self._audit(
            "order.modify_requested",
            client_order_id,
            {"reason": reason, **_change_data(change)},
            by,
        )
        request_modify = getattr(self.broker, "request_modify", None)
        if request_modify is None:
            raise Conflict(f"the {type(self.broker).__name__} cannot modify orders")
        done: bool = request_modify(client_order_id, change, by=by)
        if done:
            self.engine.on_order_modified(client_order_id, change, by=by)
        return done

    def _check_change(self, order: Order, change: OrderChange) -> None:
        cid = order.client_order_id
        if cid in self.held or cid in self.unknown or order.broker_order_id is None:
            raise Conflict(f"order {cid} is not acknowledged by the broker yet: try again")
        if order.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
            raise Conflict(f"order {cid} is {order.status.value}: nothing to change")
        if (
            change.price_paise is None
            and change.quantity is None
            and change.trigger_price_paise is None
        ):
            raise Conflict("nothing to change: give a price, a quantity or a trigger price")
        if change.price_paise is not None:
            tick = self.tick_size_paise(order.instrument_key)
            if change.price_paise <= 0 or change.price_paise % tick:
                raise ValueError(f"price must be a positive multiple of the tick ({tick} paise)")
        if change.trigger_price_paise is not None and order.order_type not in (
            OrderType.STOP_LIMIT,
            OrderType.STOP_MARKET,
        ):
            raise Conflict(
                f"order {cid} is a {order.order_type.value} order: it has no trigger price"
            )
        if change.quantity is not None:
            if order.purpose is OrderPurpose.EXIT:
                raise Conflict("an exit closes the whole position: its quantity is not changed")
            lot = self.engine.lot_size(order.instrument_key)
            if change.quantity % lot:
                raise Conflict(f"quantity must be whole lots of {lot}")
            if change.quantity > order.quantity:
                raise Conflict("an entry's quantity can only be reduced (the risk checks sized it)")
            if change.quantity <= order.filled_quantity:
                raise Conflict(
                    f"quantity must stay above the {order.filled_quantity} already filled"
                )


def _change_data(change: OrderChange) -> dict[str, object]:
    return {
        "price_paise": change.price_paise,
        "quantity": change.quantity,
        "trigger_price_paise": change.trigger_price_paise,
        "order_type": change.order_type.value if change.order_type else None,
    }
