"""Order.copy: a separate record that carries every field (a field added to Order and left out
of copy() fails here)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from upstox_bot.domain import (
    ClientOrderId,
    ExitReason,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    SignalId,
)


def test_copy_carries_every_field_and_is_a_separate_record() -> None:
    at = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)
    order = Order(
        client_order_id=ClientOrderId("ub-1"),
        instrument_key="NSE_EQ|X",
        side=Side.SELL,
        quantity=30,
        lots=2,
        purpose=OrderPurpose.EXIT,
        order_type=OrderType.LIMIT,
        status=OrderStatus.PARTIALLY_FILLED,
        created_at=at,
        updated_at=at.replace(minute=1),
        reason="stop",
        limit_price_paise=12_345,
        signal_id=SignalId("sg-1"),
        exit_reason=ExitReason.STOP_LOSS,
        broker_order_id="b-1",
        filled_quantity=15,
        average_price_paise=12_340,
        rejection_reason="none",
        filled_value_paise=12_340 * 15,
    )
    defaults = Order(
        client_order_id=ClientOrderId("x"),
        instrument_key="x",
        side=Side.BUY,
        quantity=1,
        lots=1,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.MARKET,
        status=OrderStatus.PENDING,
        created_at=at.replace(hour=5),
        updated_at=at.replace(hour=5),
    )
    # Every field above differs from a default one, so a field copy() drops shows as unequal.
    for f in dataclasses.fields(Order):
        assert getattr(order, f.name) != getattr(defaults, f.name), f.name

    copied = order.copy()

    assert copied == order
    assert copied is not order
    copied.status = OrderStatus.FILLED
    assert order.status is OrderStatus.PARTIALLY_FILLED
