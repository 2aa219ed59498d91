"""The order state machine: every status change goes through the transition table."""

from __future__ import annotations

from datetime import datetime

from upstox_bot.domain import Order, OrderStatus
from upstox_bot.errors import InvalidTransition

S = OrderStatus
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.SUBMITTING, S.REJECTED, S.CANCELLED}),
    S.SUBMITTING: frozenset({S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.REJECTED, S.CANCELLED}),
    S.OPEN: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new in TRANSITIONS[current]


def transition(order: Order, new: OrderStatus, at: datetime, *, reason: str | None = None) -> None:
    """Move the order to `new`, or raise InvalidTransition.

    Raises:
        InvalidTransition: the table forbids the change (a stale or duplicated update).
    """
    if not can_transition(order.status, new):
        raise InvalidTransition(
            f"order {order.client_order_id}: {order.status.value} -> {new.value} is not allowed"
        )
    order.status = new
    order.updated_at = at
    if new is S.REJECTED and reason:
        order.rejection_reason = reason


def apply_fill(order: Order, quantity: int, price_paise: int, at: datetime) -> None:
    """Add a fill to the order's filled quantity and average price, and move its status."""
    if quantity <= 0 or order.filled_quantity + quantity > order.quantity:
        raise InvalidTransition(
            f"order {order.client_order_id}: fill of {quantity} over {order.filled_quantity}"
            f"/{order.quantity}"
        )
    total = order.filled_quantity + quantity
    # The exact value of the fills is kept; the average in paise is rounded half up from it
    # (never from an earlier rounded average), for display and for the prices of the records.
    value = order.executed_value_paise + price_paise * quantity
    order.filled_value_paise = value
    order.average_price_paise = (2 * value + total) // (2 * total)
    order.filled_quantity = total
    transition(order, S.FILLED if total == order.quantity else S.PARTIALLY_FILLED, at)
