"""The order lifecycle: deadlines, owners, re-pricing of exits, cancelling of entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.factories import ist_ms
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
from upstox_bot.trading.lifecycle import (
    CancelEntry,
    Escalate,
    LifecycleConfig,
    OrderLifecycle,
    Replace,
    Reprice,
    owner_of,
    through_price,
)

T0 = ist_ms(10, 0)
KEY = "NSE_EQ|INE062A01020"


def make_order(cid: str, purpose: OrderPurpose = OrderPurpose.EXIT, **overrides: Any) -> Order:
    at = datetime.fromtimestamp(T0 / 1000, tz=UTC)
    values: dict[str, Any] = {
        "client_order_id": ClientOrderId(cid),
        "instrument_key": KEY,
        "side": Side.SELL if purpose is OrderPurpose.EXIT else Side.BUY,
        "quantity": 10,
        "lots": 10,
        "purpose": purpose,
        "order_type": OrderType.MARKET,
        "status": OrderStatus.OPEN,
        "created_at": at,
        "updated_at": at,
        "broker_order_id": "1",
        "exit_reason": ExitReason.STOP_LOSS if purpose is OrderPurpose.EXIT else None,
        "signal_id": SignalId("sg-1") if purpose is OrderPurpose.ENTRY else None,
    }
    return Order(**(values | overrides))


def price(_key: str) -> int | None:
    return 74_000


def tick(_key: str) -> int:
    return 5


CONFIG = LifecycleConfig(
    entry_timeout_ms=60_000,
    exit_timeout_ms=10_000,
    exit_reprice_bps=100,
    exit_reprice_attempts=2,
    escalated_every_ms=60_000,
)


def test_nothing_happens_before_the_deadline() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"x": make_order("x")}

    assert life.due(T0, orders, price, tick) == []
    assert life.due(T0 + 9_999, orders, price, tick) == []
    assert life.next_due_ms == T0 + 10_000


def test_an_exit_past_its_deadline_is_repriced_wider_each_time_then_escalated() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"x": make_order("x")}
    life.due(T0, orders, price, tick)

    first = life.due(T0 + 10_000, orders, price, tick)
    second = life.due(T0 + 20_000, orders, price, tick)
    third = life.due(T0 + 30_000, orders, price, tick)

    assert first == [Reprice(order=orders["x"], price_paise=73_260, attempt=1)]
    assert second == [Reprice(order=orders["x"], price_paise=72_520, attempt=2)]
    escalate, reprice = third
    assert escalate == Escalate(order=orders["x"], attempts=2, owner="stop_loss exit of " + KEY)
    assert isinstance(reprice, Reprice)
    assert reprice.price_paise == 71_780
    # escalated: re-priced on, at the slower pace, and alerted only once
    assert life.due(T0 + 40_000, orders, price, tick) == []
    (later,) = life.due(T0 + 90_000, orders, price, tick)
    assert isinstance(later, Reprice)


def test_a_refused_modify_turns_the_next_step_into_a_replace() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"x": make_order("x")}
    life.due(T0, orders, price, tick)
    life.due(T0 + 10_000, orders, price, tick)

    life.modify_refused("x")

    assert life.due(T0 + 10_001, orders, price, tick) == [Replace(order=orders["x"], attempt=2)]


def test_an_exit_without_a_last_price_is_replaced_rather_than_guessed() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"x": make_order("x")}
    life.due(T0, orders, lambda _k: None, tick)

    assert life.due(T0 + 10_000, orders, lambda _k: None, tick) == [
        Replace(order=orders["x"], attempt=1)
    ]


def test_an_entry_past_its_deadline_is_cancelled_and_asked_again_if_unconfirmed() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"e": make_order("e", OrderPurpose.ENTRY, status=OrderStatus.PARTIALLY_FILLED)}

    assert life.due(T0 + 59_999, orders, price, tick) == []
    assert life.due(T0 + 60_500, orders, price, tick) == [
        CancelEntry(order=orders["e"], overdue_ms=500)
    ]
    assert life.due(T0 + 61_000, orders, price, tick) == []
    assert life.due(T0 + 120_500, orders, price, tick) == [
        CancelEntry(order=orders["e"], overdue_ms=0)
    ]


def test_busy_orders_wait_and_their_clock_starts_when_they_are_free() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"x": make_order("x")}

    assert life.due(T0 + 50_000, orders, price, tick, busy={"x"}) == []  # held for 50 s
    assert life.due(T0 + 55_000, orders, price, tick) == []  # free: 10 s from 50 s
    assert life.due(T0 + 59_999, orders, price, tick) == []
    (action,) = life.due(T0 + 60_000, orders, price, tick)
    assert isinstance(action, Reprice)


def test_orders_not_working_yet_or_gone_are_not_acted_on() -> None:
    life = OrderLifecycle(CONFIG)
    submitting = {"x": make_order("x", status=OrderStatus.SUBMITTING)}

    assert life.due(T0 + 100_000, submitting, price, tick) == []
    assert life.due(T0 + 100_000, {}, price, tick) == []
    assert life.watched == {}


def test_the_deadline_runs_from_when_the_order_was_made() -> None:
    life = OrderLifecycle(CONFIG)
    orders = {"x": make_order("x")}

    # first seen 12 s after it was made: it is already past its 10 s deadline
    (action,) = life.due(T0 + 12_000, orders, price, tick)
    assert isinstance(action, Reprice)


@pytest.mark.parametrize(
    ("side", "paise", "bps", "tick_paise", "expected"),
    [
        (Side.SELL, 74_000, 100, 5, 73_260),
        (Side.SELL, 74_003, 100, 5, 73_260),  # rounded down, further through the market
        (Side.BUY, 74_000, 100, 5, 74_740),
        (Side.BUY, 74_001, 100, 10, 74_750),  # rounded up
        (Side.SELL, 5, 2500, 5, 5),  # never below one tick
    ],
)
def test_through_price_is_on_the_tick_and_further_through_the_market(
    side: Side, paise: int, bps: int, tick_paise: int, expected: int
) -> None:
    assert through_price(side, paise, bps, tick_paise) == expected


def test_owners_name_the_cause() -> None:
    assert owner_of(make_order("e", OrderPurpose.ENTRY)) == "entry of signal sg-1"
    assert owner_of(make_order("e", OrderPurpose.ENTRY, signal_id=None)) == "manual entry"
    assert owner_of(make_order("x")) == f"stop_loss exit of {KEY}"


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LifecycleConfig(exit_timeout_ms=0)
    with pytest.raises(ValueError, match="2500"):
        LifecycleConfig(exit_reprice_bps=3000)
    with pytest.raises(ValueError, match="at least 1"):
        LifecycleConfig(exit_reprice_attempts=0)
