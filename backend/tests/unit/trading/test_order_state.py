"""Order state changes: an order's time never moves backwards."""

from __future__ import annotations

from datetime import timedelta

from tests.support.factories import ist
from upstox_bot.domain import ClientOrderId, Order, OrderPurpose, OrderStatus, OrderType, Side
from upstox_bot.trading import order_state


def test_a_fill_stamped_before_the_acknowledgement_keeps_the_later_time() -> None:
    # A live fill carries the exchange's whole-second time, which can be earlier than the
    # acknowledgement the bot recorded: the journal ignores an older update, so the order's
    # time must stay the later one or its FILLED state would never be stored.
    acknowledged = ist(10, 0, 1) + timedelta(microseconds=400_000)
    order = Order(
        client_order_id=ClientOrderId("ub-1"),
        instrument_key="NSE_EQ|INE062A01020",
        side=Side.BUY,
        quantity=10,
        lots=10,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.MARKET,
        status=OrderStatus.OPEN,
        created_at=acknowledged,
        updated_at=acknowledged,
    )

    order_state.apply_fill(order, 10, 80_000, ist(10, 0, 1))

    assert order.status is OrderStatus.FILLED
    assert order.updated_at == acknowledged


def test_a_later_change_moves_the_time_forward() -> None:
    at = ist(10, 0)
    order = Order(
        client_order_id=ClientOrderId("ub-2"),
        instrument_key="NSE_EQ|INE062A01020",
        side=Side.BUY,
        quantity=10,
        lots=10,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.MARKET,
        status=OrderStatus.SUBMITTING,
        created_at=at,
        updated_at=at,
    )

    order_state.transition(order, OrderStatus.OPEN, at + timedelta(seconds=2))

    assert order.updated_at == at + timedelta(seconds=2)
