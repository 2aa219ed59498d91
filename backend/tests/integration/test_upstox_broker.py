"""The live broker over the Upstox simulator: placement, fills from the stream, reconcile."""

from __future__ import annotations

import time as walltime
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from tests.support.factories import ScriptedStrategy, make_engine, make_instrument
from tests.support.upstox_sim import FaultKind, UpstoxSimulator, upstox_simulator
from tests.support.waiting import wait_until
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.domain import (
    ClientOrderId,
    Direction,
    ExitReason,
    Fill,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from upstox_bot.errors import BrokerUnavailable, OrderRejected
from upstox_bot.trading.brokers.upstox import OrderClosed, UpstoxBroker
from upstox_bot.trading.engine import derive_id
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.ports import CancelOutcome
from upstox_bot.upstox.client import PlacementPolicy, RetryPolicy, UpstoxClient
from upstox_bot.upstox.live import UpstoxOrderGateway, reconcile

SBIN = "NSE_EQ|INE062A01020"
RELIANCE = "NSE_EQ|INE002A01018"
PLACE = "/v3/order/place"

sim = pytest.fixture(upstox_simulator)


def utc_now() -> datetime:
    return datetime.now(UTC)


def order(tag: str, *, key: str = SBIN, quantity: int = 10, **overrides: Any) -> Order:
    now = utc_now()
    values: dict[str, Any] = {
        "client_order_id": ClientOrderId(tag),
        "instrument_key": key,
        "side": Side.BUY,
        "quantity": quantity,
        "lots": quantity,
        "purpose": OrderPurpose.ENTRY,
        "order_type": OrderType.MARKET,
        "status": OrderStatus.SUBMITTING,
        "created_at": now,
        "updated_at": now,
    }
    return Order(**(values | overrides))


class Harness:
    """A broker wired to the simulator, with the token-failure reasons it reported."""

    def __init__(self, upstox: UpstoxSimulator, **broker_options: Any) -> None:
        self.upstox = upstox
        self.token = upstox.rest.issue_token()
        self.auth_failures: list[str] = []
        self.client = UpstoxClient(
            access_token=lambda: self.token,
            api_base_url=upstox.base_url,
            timeout=0.5,
            retry=RetryPolicy(base_delay_s=0.02, max_delay_s=0.2),
            placement=PlacementPolicy(settle_s=0.05),
            algo_name="upstox-bot-test",
        )
        self.gateway = UpstoxOrderGateway(
            self.client,
            access_token=lambda: self.token,
            api_base_url=upstox.base_url,
            on_auth_failure=self.auth_failures.append,
        )
        options: dict[str, Any] = {"clock": utc_now, "poll_interval_s": 0.2} | broker_options
        self.broker = UpstoxBroker(self.gateway, **options)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = walltime.monotonic() + timeout_s
        while not predicate():
            if walltime.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            walltime.sleep(0.02)

    def wait_stream(self) -> None:
        self.wait_for(lambda: self.upstox.portfolio.active_connections == 1)

    def drain_until(self, count: int, timeout_s: float = 5.0) -> list[Fill | OrderClosed]:
        events: list[Fill | OrderClosed] = []

        def enough() -> bool:
            events.extend(self.broker.drain())
            return len(events) >= count

        self.wait_for(enough, timeout_s)
        walltime.sleep(0.1)
        events.extend(self.broker.drain())
        return events


@pytest.fixture
def harness(sim: UpstoxSimulator) -> Iterator[Harness]:
    h = Harness(sim)
    h.broker.start()
    h.wait_stream()
    yield h
    h.broker.stop()


def test_market_order_fills_once_through_the_stream_with_protection_and_algo_name(
    harness: Harness,
) -> None:
    placed = order("ub-market-1")

    assert harness.broker.place(placed) == ()

    (fill,) = harness.drain_until(1)
    assert isinstance(fill, Fill)
    assert fill.client_order_id == "ub-market-1"
    assert fill.quantity == 10
    assert fill.price_paise == 80_120  # the simulator's SBIN price
    assert placed.broker_order_id == fill.broker_order_id
    (sim_order,) = harness.upstox.rest.orders_with_tag("ub-market-1")
    assert sim_order.market_protection == -1
    assert sim_order.algo_name == "upstox-bot-test"
    assert harness.broker.working_count == 0


def test_limit_order_fills_when_the_price_comes_and_drives_the_engine(harness: Harness) -> None:
    engine, journal, _clock = make_engine(ScriptedStrategy({}), instruments=[make_instrument()])
    executor = OrderExecutor(engine=engine, broker=harness.broker, journal=journal)
    intent = OrderIntent(
        client_order_id=ClientOrderId("ub-limit-1"),
        instrument_key=SBIN,
        side=Side.BUY,
        quantity=5,
        lots=5,
        purpose=OrderPurpose.ENTRY,
        reason="test",
        created_at=utc_now(),
        order_type=OrderType.LIMIT,
        limit_price_paise=79_000,
    )

    executor.execute([intent])

    working = engine.orders["ub-limit-1"]
    assert working.status is OrderStatus.OPEN
    walltime.sleep(0.2)
    assert harness.broker.drain() == []
    harness.upstox.rest.set_price(SBIN, Decimal("789.50"))
    events = harness.drain_until(1)
    fills = [e for e in events if isinstance(e, Fill)]
    executor.apply_fills(fills)
    assert working.status.value == "filled"
    assert working.filled_quantity == 5
    assert working.average_price_paise == 78_950
    assert engine.positions[SBIN].quantity == 5
    assert engine.positions[SBIN].entry_price_paise == 78_950


def test_rejected_and_cancelled_orders_are_reported_as_closed(harness: Harness) -> None:
    harness.broker.place(order("ub-limit-2", order_type=OrderType.LIMIT, limit_price_paise=70_000))
    (sim_order,) = harness.upstox.rest.orders_with_tag("ub-limit-2")
    harness.wait_for(lambda: sim_order.status == "open")
    with harness.upstox.rest.lock:
        sim_order.set_status("cancelled", "Cancelled by exchange: IOC")

    (closed,) = harness.drain_until(1)
    assert closed == OrderClosed(
        client_order_id=ClientOrderId("ub-limit-2"),
        status=OrderStatus.CANCELLED,
        reason="Cancelled by exchange: IOC",
        filled_quantity=0,
    )


@pytest.mark.parametrize(
    ("fault", "process"),
    [
        (FaultKind.TIMEOUT, True),  # Upstox took the order, the answer was lost
        (FaultKind.SERVER_ERROR, True),  # took it, then answered 500
        (FaultKind.SERVER_ERROR, False),  # refused with 500: nothing placed, sent again
    ],
)
def test_placement_across_a_timeout_or_5xx_ends_with_exactly_one_order(
    harness: Harness, fault: FaultKind, process: bool
) -> None:
    harness.upstox.rest.fail_next(fault, path=PLACE, delay_s=1.0, process=process)

    harness.broker.place(order("ub-once-1"))

    assert len(harness.upstox.rest.orders_with_tag("ub-once-1")) == 1
    fills = [e for e in harness.drain_until(1) if isinstance(e, Fill)]
    assert sum(f.quantity for f in fills) == 10


def test_find_by_tag_after_a_lost_answer_recovers_the_fill(harness: Harness) -> None:
    harness.upstox.rest.place(
        {
            "instrument_token": SBIN,
            "quantity": 10,
            "product": "I",
            "validity": "DAY",
            "price": 0,
            "order_type": "MARKET",
            "transaction_type": "BUY",
            "disclosed_quantity": 0,
            "trigger_price": 0,
            "is_amo": False,
            "tag": "ub-crashed-1",
            "market_protection": -1,
        },
        None,
    )
    (placed,) = harness.upstox.rest.orders_with_tag("ub-crashed-1")
    wait_until(lambda: harness.upstox.rest.visible(placed) and placed.status == "complete")

    found = harness.broker.find_by_tag("ub-crashed-1")

    assert found is not None
    assert found.status is OrderStatus.FILLED
    assert found.filled_quantity == 10
    assert found.average_price_paise == 80_120
    assert harness.broker.find_by_tag("ub-never-sent") is None


def test_guard_refusal_places_nothing(sim: UpstoxSimulator) -> None:
    h = Harness(sim, can_place=lambda o: "Upstox token expired: log in again")
    h.broker.start()
    try:
        with pytest.raises(OrderRejected, match="log in again"):
            h.broker.place(order("ub-guarded-1"))
        assert sim.rest.requests_to(PLACE) == []
    finally:
        h.broker.stop()


def test_revoked_token_is_reported_and_the_order_stays_unresolved(harness: Harness) -> None:
    harness.upstox.rest.revoke_tokens()

    with pytest.raises(BrokerUnavailable, match="log in again"):
        harness.broker.place(order("ub-revoked-1"))

    assert harness.auth_failures
    assert harness.upstox.rest.orders_with_tag("ub-revoked-1") == []


def test_stream_drop_is_covered_by_the_poll_on_reconnect(harness: Harness) -> None:
    harness.upstox.portfolio.pause()
    harness.broker.place(order("ub-gap-1", order_type=OrderType.LIMIT, limit_price_paise=79_000))
    harness.upstox.rest.set_price(SBIN, Decimal("789.00"))  # fills while the stream is deaf
    walltime.sleep(0.1)
    harness.upstox.portfolio.pause(False)
    harness.upstox.portfolio.drop_connections()

    (fill,) = harness.drain_until(1)
    assert isinstance(fill, Fill)
    assert fill.quantity == 10
    assert harness.upstox.portfolio.updates_lost >= 1


# --- reconciliation -------------------------------------------------------------------------


def test_reconcile_resolves_a_submitted_order_and_reports_a_position_mismatch(
    db_session: Session, harness: Harness
) -> None:
    account = "live-test"
    journal = SqlJournal(db_session, account)
    # an order the bot recorded as SUBMITTING, then crashed before hearing back
    journal.order(order("ub-recon-1", status=OrderStatus.SUBMITTING))
    harness.upstox.rest.place(
        {
            "instrument_token": SBIN,
            "quantity": 10,
            "product": "I",
            "validity": "DAY",
            "price": 0,
            "order_type": "MARKET",
            "transaction_type": "BUY",
            "disclosed_quantity": 0,
            "trigger_price": 0,
            "is_amo": False,
            "tag": "ub-recon-1",
            "market_protection": -1,
        },
        None,
    )
    (placed,) = harness.upstox.rest.orders_with_tag("ub-recon-1")
    wait_until(lambda: harness.upstox.rest.visible(placed) and placed.status == "complete")
    # an order sent that never reached Upstox
    journal.order(order("ub-recon-2", key=RELIANCE, status=OrderStatus.SUBMITTING))
    # the bot believes it holds 20 RELIANCE; Upstox holds none
    journal.position_opened(
        Position(
            instrument_key=RELIANCE,
            direction=Direction.LONG,
            quantity=20,
            lots=20,
            entry_price_paise=140_000,
            entry_at=utc_now(),
            entry_order_id=ClientOrderId("ub-recon-0"),
            stop_paise=133_000,
            target_paise=145_600,
        )
    )
    db_session.flush()

    report = reconcile(db_session, harness.broker, account=account, now=utc_now())

    assert not report.clean
    (resolved,) = report.resolved
    assert resolved.client_order_id == "ub-recon-1"
    assert resolved.broker_view is not None
    assert resolved.broker_view.status is OrderStatus.FILLED
    assert resolved.broker_view.filled_quantity == 10
    missing = [m for m in report.orders if m.kind == "missing"]
    assert [m.client_order_id for m in missing] == ["ub-recon-2"]
    positions = {p.instrument_key: p for p in report.positions}
    assert positions[RELIANCE].bot_quantity == 20
    assert positions[RELIANCE].broker_quantity == 0
    assert positions[SBIN].bot_quantity == 0  # filled at Upstox, not yet applied by the bot
    assert positions[SBIN].broker_quantity == 10


# --- cancel, and orders that end part filled --------------------------------------------------


class Trading:
    """An engine and executor on the live broker; :meth:`pump` is the live harness's timer."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.engine, self.journal, self.clock = make_engine(
            ScriptedStrategy({}), instruments=[make_instrument()]
        )
        self.executor = OrderExecutor(
            engine=self.engine, broker=harness.broker, journal=self.journal
        )

    def enter(self, tag: str, quantity: int = 10, **intent: Any) -> Order:
        self.executor.execute(
            [
                OrderIntent(
                    client_order_id=ClientOrderId(tag),
                    instrument_key=SBIN,
                    side=Side.BUY,
                    quantity=quantity,
                    lots=quantity,
                    purpose=OrderPurpose.ENTRY,
                    reason="test",
                    created_at=utc_now(),
                    reference_price_paise=80_000,
                    **intent,
                )
            ]
        )
        return self.engine.orders[tag]

    def pump(self, count: int) -> list[Fill | OrderClosed]:
        """Drain ``count`` broker events and apply them as live_market's timer does."""
        events = self.harness.drain_until(count)
        for event in events:
            if isinstance(event, OrderClosed):
                self.engine.on_order_closed(
                    event.client_order_id,
                    event.status,
                    event.reason,
                    by=event.requested_by or "broker",
                )
            else:
                self.executor.apply_fills([event])
        return events


def test_cancel_goes_to_upstox_and_the_engine_changes_only_when_upstox_confirms(
    harness: Harness,
) -> None:
    t = Trading(harness)
    working = t.enter("ub-cancel-1", order_type=OrderType.LIMIT, limit_price_paise=70_000)
    (sim_order,) = harness.upstox.rest.orders_with_tag("ub-cancel-1")
    harness.wait_for(lambda: sim_order.status == "open")
    harness.drain_until(0)  # the broker has seen it open

    assert harness.broker.request_cancel("ub-cancel-1", by="tester") is CancelOutcome.REQUESTED

    assert harness.upstox.rest.requests_to("/v3/order/cancel", "DELETE")
    assert working.status is OrderStatus.OPEN  # not optimistic: nothing applied yet
    assert "ub-cancel-1" in t.engine.orders
    (closed,) = t.pump(1)
    assert closed == OrderClosed(
        client_order_id=ClientOrderId("ub-cancel-1"),
        status=OrderStatus.CANCELLED,
        reason="Cancelled by user",
        filled_quantity=0,
        requested_by="tester",
    )
    assert t.journal.orders["ub-cancel-1"].status is OrderStatus.CANCELLED
    assert not t.engine.pending_entries
    assert not t.engine.orders
    cancelled = next(a for a in t.journal.audits if a.event == "order.cancelled")
    assert cancelled.actor == "tester"
    assert harness.broker.request_cancel("ub-cancel-1", by="tester") is CancelOutcome.NOT_WORKING


def test_a_cancel_that_loses_the_race_to_the_fill_ends_filled(harness: Harness) -> None:
    t = Trading(harness)
    t.enter("ub-race-1", order_type=OrderType.LIMIT, limit_price_paise=79_000)
    (sim_order,) = harness.upstox.rest.orders_with_tag("ub-race-1")
    harness.wait_for(lambda: sim_order.status == "open")
    harness.drain_until(0)
    harness.upstox.portfolio.pause()  # the fill happens, the bot does not hear of it yet
    harness.upstox.rest.set_price(SBIN, Decimal("789.00"))
    walltime.sleep(0.1)

    outcome = harness.broker.request_cancel("ub-race-1", by="tester")

    assert outcome is CancelOutcome.NOT_WORKING  # Upstox refused: the order is complete
    harness.upstox.portfolio.pause(False)
    harness.upstox.portfolio.drop_connections()
    (fill,) = t.pump(1)
    assert isinstance(fill, Fill)
    assert t.journal.orders["ub-race-1"].status is OrderStatus.FILLED
    assert t.engine.positions[SBIN].quantity == 10


def test_entry_part_filled_then_cancelled_at_upstox_keeps_the_filled_part(
    harness: Harness,
) -> None:
    t = Trading(harness)
    harness.upstox.rest.script_partial_fill("ub-part-1", 4, then_cancel="IOC remainder")

    t.enter("ub-part-1")
    fill, closed = t.pump(2)

    assert isinstance(fill, Fill)
    assert fill.quantity == 4
    assert closed == OrderClosed(
        client_order_id=ClientOrderId("ub-part-1"),
        status=OrderStatus.CANCELLED,
        reason="IOC remainder",
        filled_quantity=4,
    )
    position = t.engine.positions[SBIN]
    assert (position.quantity, position.entry_price_paise) == (4, 80_120)
    assert position.stop_paise == 76_114  # 5% under the fill price
    assert t.journal.orders["ub-part-1"].status is OrderStatus.CANCELLED
    assert not t.engine.pending_entries
    assert not t.engine.orders


def test_exit_part_filled_then_cancelled_at_upstox_queues_an_exit_for_the_rest(
    harness: Harness,
) -> None:
    t = Trading(harness)
    t.enter("ub-held-1")
    t.pump(1)
    assert t.engine.positions[SBIN].quantity == 10
    first_exit = derive_id("ub", t.engine.config.account, "exit", "ub-held-1", 1)
    harness.upstox.rest.script_partial_fill(first_exit, 6, then_cancel="Cancelled by exchange")
    harness.upstox.rest.set_price(SBIN, Decimal("790.00"))

    t.engine.request_exit(SBIN, ExitReason.MANUAL)
    t.executor.execute(t.engine.on_timer(t.clock.now_ms()))
    fill, closed = t.pump(2)

    assert isinstance(fill, Fill)
    assert (fill.client_order_id, fill.quantity) == (first_exit, 6)
    assert isinstance(closed, OrderClosed)
    assert closed.filled_quantity == 6
    position = t.engine.positions[SBIN]
    assert position.quantity == 4
    (part,) = t.journal.trades
    assert (part.quantity, part.exit_price_paise) == (6, 79_000)
    assert t.engine.exit_queue == {SBIN: ExitReason.MANUAL}

    t.clock.set_ms(t.clock.now_ms() + 30_000)  # the next order slot
    t.executor.execute(t.engine.on_timer(t.clock.now_ms()))
    (last,) = t.pump(1)
    assert isinstance(last, Fill)
    assert last.quantity == 4
    assert SBIN not in t.engine.positions
    assert [tr.quantity for tr in t.journal.trades] == [6, 4]
    assert (
        sum(
            o.filled_quantity
            for o in harness.upstox.rest.orders.values()
            if o.transaction_type == "SELL"
        )
        == 10
    )
