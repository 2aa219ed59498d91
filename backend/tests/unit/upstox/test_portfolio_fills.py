"""From cumulative order reports (stream or poll) to incremental fills, once each."""

from __future__ import annotations

from datetime import UTC, datetime

from upstox_bot.domain import ClientOrderId, Fill, Order, OrderPurpose, OrderStatus, OrderType, Side
from upstox_bot.trading.brokers.upstox import UpstoxBroker
from upstox_bot.trading.brokers.upstox_book import (
    BrokerOrderReport,
    PositionReport,
    aggregate_reports,
    reconcile_books,
)
from upstox_bot.trading.ports import OrderClosed

NOW = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)
KEY = "NSE_FO|50109"


class NoGateway:
    """The broker is not started in these tests: reports are applied directly."""


def make_order(tag: str = "ub-1", quantity: int = 1000, filled: int = 0) -> Order:
    return Order(
        client_order_id=ClientOrderId(tag),
        instrument_key=KEY,
        side=Side.BUY,
        quantity=quantity,
        lots=quantity // 500,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.MARKET,
        status=OrderStatus.OPEN,
        created_at=NOW,
        updated_at=NOW,
        filled_quantity=filled,
    )


def report(
    order_id: str,
    filled: int,
    avg: int | None,
    status: OrderStatus,
    *,
    tag: str = "ub-1",
    quantity: int = 500,
    message: str | None = None,
) -> BrokerOrderReport:
    return BrokerOrderReport(
        tag=tag,
        broker_order_id=order_id,
        instrument_key=KEY,
        side=Side.BUY,
        quantity=quantity,
        filled_quantity=filled,
        average_price_paise=avg,
        status=status,
        message=message,
        at=NOW,
    )


def tracking(order: Order) -> UpstoxBroker:
    broker = UpstoxBroker(NoGateway(), clock=lambda: NOW)  # type: ignore[arg-type]
    broker.track(order)
    return broker


def test_partial_fills_of_a_sliced_order_become_increments_at_their_own_prices() -> None:
    broker = tracking(make_order())
    broker.apply_reports(
        [
            report("A", 0, None, OrderStatus.OPEN),
            report("A", 200, 10_000, OrderStatus.PARTIALLY_FILLED),
            report("B", 500, 10_010, OrderStatus.FILLED),
            report("A", 500, 10_020, OrderStatus.FILLED),  # 300 more at 10_033.33
        ]
    )

    fills = broker.drain()
    assert all(isinstance(f, Fill) for f in fills)
    assert [(f.broker_order_id, f.quantity, f.price_paise) for f in fills] == [  # type: ignore[union-attr]
        ("A", 200, 10_000),
        ("B", 500, 10_010),
        ("A", 300, 10_033),
    ]
    assert broker.working_count == 0  # complete: no close event, the fills say it all


def test_the_same_report_twice_from_stream_and_poll_fills_once() -> None:
    broker = tracking(make_order(quantity=500))
    done = report("A", 500, 10_000, OrderStatus.FILLED)
    broker.apply_reports([done, done, report("A", 500, 10_000, OrderStatus.FILLED)])
    assert len(broker.drain()) == 1


def test_a_fill_without_a_price_waits_for_a_priced_report() -> None:
    broker = tracking(make_order(quantity=500))
    broker.apply_reports([report("A", 500, 0, OrderStatus.OPEN)])
    assert broker.drain() == []
    broker.apply_reports([report("A", 500, 9_995, OrderStatus.FILLED)])
    (fill,) = broker.drain()
    assert isinstance(fill, Fill)
    assert (fill.quantity, fill.price_paise) == (500, 9_995)


def test_fills_known_before_a_restart_are_not_reported_again() -> None:
    broker = tracking(make_order(quantity=1000, filled=300))
    broker.apply_reports([report("A", 500, 10_000, OrderStatus.PARTIALLY_FILLED, quantity=1000)])
    (fill,) = broker.drain()
    assert isinstance(fill, Fill)
    assert fill.quantity == 200


def test_rejection_and_partial_cancel_end_the_order() -> None:
    broker = tracking(make_order(tag="ub-r", quantity=500))
    broker.apply_reports(
        [report("R", 0, None, OrderStatus.REJECTED, tag="ub-r", message="margin shortfall")]
    )
    assert broker.drain() == [
        OrderClosed(
            client_order_id=ClientOrderId("ub-r"),
            status=OrderStatus.REJECTED,
            reason="margin shortfall",
            filled_quantity=0,
        )
    ]
    broker.track(make_order(tag="ub-c", quantity=500))
    broker.apply_reports([report("C", 100, 10_000, OrderStatus.CANCELLED, tag="ub-c")])
    fill, closed = broker.drain()
    assert isinstance(fill, Fill)
    assert fill.quantity == 100
    assert isinstance(closed, OrderClosed)
    assert (closed.status, closed.filled_quantity) == (OrderStatus.CANCELLED, 100)


def test_reports_for_orders_the_bot_does_not_follow_are_counted_not_applied() -> None:
    broker = tracking(make_order())
    broker.apply_reports([report("X", 500, 10_000, OrderStatus.FILLED, tag="manual-order")])
    assert broker.drain() == []
    assert broker.untracked_reports == 1


def test_aggregate_of_slices_sums_quantities_and_weights_the_price() -> None:
    order = aggregate_reports(
        [
            report("A", 500, 10_000, OrderStatus.FILLED),
            report("B", 250, 10_030, OrderStatus.PARTIALLY_FILLED),
        ],
        None,
        NOW,
    )
    assert order is not None
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert (order.quantity, order.filled_quantity, order.average_price_paise) == (1000, 750, 10_010)


def test_reconcile_books_agrees_when_nothing_differs() -> None:
    filled = make_order(quantity=500)
    filled.status = OrderStatus.OPEN
    report_ = reconcile_books(
        bot_orders=[filled],
        bot_positions=[],
        broker_orders=[report("A", 0, None, OrderStatus.OPEN)],
        broker_positions=[PositionReport(instrument_key=KEY, quantity=0)],
        at=NOW,
    )
    assert report_.clean
    assert report_.orders_checked == 1


def test_reconcile_books_leaves_orders_on_their_way_out_of_the_comparison() -> None:
    # Sent a moment ago: the bot holds it working, Upstox's book does not show it yet (or shows
    # it working before the bot heard back). Neither is a mismatch yet.
    in_flight = make_order(quantity=500)
    tag = str(in_flight.client_order_id)
    working_at_broker = report("A", 0, None, OrderStatus.OPEN)

    compared = reconcile_books(
        bot_orders=[in_flight], bot_positions=[], broker_orders=[], broker_positions=[], at=NOW
    )
    ignored = reconcile_books(
        bot_orders=[in_flight],
        bot_positions=[],
        broker_orders=[working_at_broker],
        broker_positions=[],
        at=NOW,
        ignore_tags={tag},
    )

    assert [m.kind for m in compared.orders] == ["state"]  # "unknown to the broker"
    assert ignored.clean
    assert ignored.orders_checked == 0
