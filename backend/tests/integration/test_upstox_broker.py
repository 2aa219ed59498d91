"""The live broker and the order desk over the Upstox simulator, as Upstox behaves.

Orders are acknowledged first and filled later, the book lags, MARKET orders rest in a gap,
tokens die mid-call, order APIs refuse a live token, the static IP is not registered: each test
drives an engine, its executor and the order desk through the real client, gateway and broker
against the simulator (tests/support/upstox_sim), and checks that every intent ends in exactly
one order and every exit ends filled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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
    Tick,
)
from upstox_bot.errors import Conflict, NotFound, OrderRejected
from upstox_bot.trading.brokers.upstox import UpstoxBroker
from upstox_bot.trading.desk import OrderDesk
from upstox_bot.trading.engine import EngineState, derive_id
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.lifecycle import LifecycleConfig, OrderLifecycle
from upstox_bot.trading.order_gate import BlockCause, OrderGate
from upstox_bot.trading.ports import (
    BrokerEvent,
    CancelOutcome,
    OrderAccepted,
    OrderChange,
    OrderClosed,
    OrderModified,
    OrderNotPlaced,
)
from upstox_bot.upstox.client import PlacementPolicy, RetryPolicy, UpstoxClient
from upstox_bot.upstox.live import UpstoxOrderGateway, reconcile

SBIN = "NSE_EQ|INE062A01020"
RELIANCE = "NSE_EQ|INE002A01018"
PLACE = "/v3/order/place"
MODIFY = "/v3/order/modify"
PROFILE = "/v2/user/profile"
ENTRY_TIMEOUT_MS = 60_000
EXIT_TIMEOUT_MS = 10_000
RETRY_MS = 30_000

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


def market_record(tag: str, key: str = SBIN, quantity: int = 10) -> dict[str, Any]:
    """A v3 place body, for orders placed at the simulator directly (another session)."""
    return {
        "instrument_token": key,
        "quantity": quantity,
        "product": "I",
        "validity": "DAY",
        "price": 0,
        "order_type": "MARKET",
        "transaction_type": "BUY",
        "disclosed_quantity": 0,
        "trigger_price": 0,
        "is_amo": False,
        "tag": tag,
        "market_protection": -1,
    }


class Live:
    """An engine, its executor and the order desk on the live broker over the simulator."""

    def __init__(
        self,
        upstox: UpstoxSimulator,
        *,
        lookup_window_s: float = 2.0,
        market_protection: float = -1,
        reprice_attempts: int = 5,
        **broker_options: Any,
    ) -> None:
        self.upstox = upstox
        self.token = upstox.rest.issue_token()
        self.auth_failures: list[str] = []
        self.client = UpstoxClient(
            access_token=lambda: self.token,
            api_base_url=upstox.base_url,
            timeout=0.5,
            retry=RetryPolicy(base_delay_s=0.02, max_delay_s=0.2),
            placement=PlacementPolicy(
                settle_s=0.05,
                lookup_window_s=1.0,  # longer than the simulator's book delay
                lookup_interval_s=0.05,
                market_protection=market_protection,
            ),
            algo_name="upstox-bot-test",
        )
        self.gateway = UpstoxOrderGateway(
            self.client,
            access_token=lambda: self.token,
            api_base_url=upstox.base_url,
            on_auth_failure=self.auth_failures.append,
        )
        options: dict[str, Any] = {
            "clock": utc_now,
            "poll_interval_s": 0.2,
            "lookup_window_s": lookup_window_s,
        } | broker_options
        self.broker = UpstoxBroker(self.gateway, **options)
        self.engine, self.journal, self.clock = make_engine(
            ScriptedStrategy({}),
            instruments=[
                make_instrument(),
                make_instrument(
                    instrument_key=RELIANCE, trading_symbol="RELIANCE", isin="INE002A01018"
                ),
            ],
        )
        self.executor = OrderExecutor(engine=self.engine, broker=self.broker, journal=self.journal)
        self.desk = OrderDesk(
            engine=self.engine,
            executor=self.executor,
            journal=self.journal,
            lifecycle=OrderLifecycle(
                LifecycleConfig(
                    entry_timeout_ms=ENTRY_TIMEOUT_MS,
                    exit_timeout_ms=EXIT_TIMEOUT_MS,
                    exit_reprice_attempts=reprice_attempts,
                )
            ),
            gate=OrderGate(retry_every_ms=RETRY_MS),
            tick_size_paise=lambda _key: 5,
        )
        self.seen: list[BrokerEvent] = []

    # --- driving -----------------------------------------------------------------------------

    def pump(self) -> list[BrokerEvent]:
        """Apply what the broker reported (what the live harness's timer does each second)."""
        events = self.broker.drain()
        self.seen.extend(events)
        self.desk.apply(events)
        return events

    def pump_until(self, predicate: Callable[[], object], what: str) -> None:
        wait_until(lambda: (self.pump(), predicate())[1], what=what)

    def later(self, ms: int) -> None:
        """Market time moves on (the next order slot, a deadline)."""
        self.clock.set_ms(self.clock.now_ms() + ms)

    def enter(self, tag: str, *, key: str = SBIN, quantity: int = 10, **intent: Any) -> None:
        self.executor.execute(
            [
                OrderIntent(
                    client_order_id=ClientOrderId(tag),
                    instrument_key=key,
                    side=Side.BUY,
                    quantity=quantity,
                    lots=quantity,
                    purpose=OrderPurpose.ENTRY,
                    reason="test",
                    created_at=self.clock.now(),
                    reference_price_paise=80_000,
                    **intent,
                )
            ]
        )

    def hold_position(self, tag: str, key: str = SBIN, quantity: int = 10) -> None:
        """Enter at market and wait for the fill."""
        self.enter(tag, key=key, quantity=quantity)
        self.pump_until(lambda: key in self.engine.positions, f"the {tag} fill")
        self.later(30_000)  # the next order slot (MIN_ORDER_INTERVAL 30 s)

    def exit(self, key: str = SBIN, reason: ExitReason = ExitReason.STOP_LOSS) -> str:
        self.engine.request_exit(key, reason)
        self.executor.execute(self.engine.on_timer(self.clock.now_ms()))
        position = self.engine.positions[key]
        attempt = self.engine.exit_attempts[key]
        return derive_id("ub", "test", "exit", position.entry_order_id, attempt)

    def trade(self, key: str, paise: int) -> None:
        """A trade the bot's feed saw (last price, exit checks)."""
        self.executor.execute(
            self.engine.on_tick(
                Tick(
                    instrument_key=key, ts_ms=self.clock.now_ms(), ltp_paise=paise, ltq=1, volume=0
                )
            )
        )

    def audits(self, event: str) -> list[Any]:
        return [a for a in self.journal.audits if a.event == event]

    def sim_orders(self, tag: str) -> list[Any]:
        return self.upstox.rest.orders_with_tag(tag)

    def sim_order(self, tag: str) -> Any:
        """The one order with this tag at the simulator, once it got there."""
        (found,) = wait_until(lambda: self.sim_orders(tag), what=f"{tag} at Upstox")
        return found


@pytest.fixture
def live(sim: UpstoxSimulator) -> Iterator[Live]:
    harness = Live(sim)
    harness.broker.start()
    wait_until(lambda: sim.portfolio.active_connections == 1, what="the portfolio stream")
    yield harness
    harness.broker.stop()


# --- acknowledged first, filled later --------------------------------------------------------


def test_an_order_is_acknowledged_first_and_its_fill_arrives_later(live: Live) -> None:
    live.enter("ub-market-1")

    working = live.engine.orders["ub-market-1"]
    assert working.status is OrderStatus.OPEN  # handed to the broker; nothing waited
    live.pump_until(lambda: SBIN in live.engine.positions, "the fill")

    kinds = [type(e) for e in live.seen]
    assert kinds.index(OrderAccepted) < kinds.index(Fill)  # the answer, then the fill
    sim_order = live.sim_order("ub-market-1")
    statuses = [h["status"] for h in sim_order.history]
    assert statuses[:3] == ["put order req received", "validation pending", "open pending"]
    assert statuses[-1] == "complete"
    assert sim_order.market_protection == -1
    assert sim_order.algo_name == "upstox-bot-test"
    assert live.journal.orders["ub-market-1"].broker_order_id == sim_order.order_id
    position = live.engine.positions[SBIN]
    assert (position.quantity, position.entry_price_paise) == (10, 80_120)
    assert not live.engine.orders


def test_a_limit_entry_rests_then_fills_when_the_price_comes(live: Live) -> None:
    live.enter("ub-limit-1", order_type=OrderType.LIMIT, limit_price_paise=79_000)
    sim_order = live.sim_order("ub-limit-1")
    live.pump_until(lambda: sim_order.status == "open", "the order open at the exchange")
    assert SBIN not in live.engine.positions

    live.upstox.rest.set_price(SBIN, Decimal("789.50"))

    live.pump_until(lambda: SBIN in live.engine.positions, "the fill")
    assert live.journal.orders["ub-limit-1"].status is OrderStatus.FILLED
    assert live.engine.positions[SBIN].entry_price_paise == 78_950


def test_a_plain_market_order_upstox_refuses_frees_its_slot(sim: UpstoxSimulator) -> None:
    live = Live(sim, market_protection=0)  # UDAPI1158 under the 2026 rules
    live.broker.start()
    try:
        live.enter("ub-plain-1")
        live.pump_until(lambda: not live.engine.orders, "the rejection")
    finally:
        live.broker.stop()
    rejected = live.journal.orders["ub-plain-1"]
    assert rejected.status is OrderStatus.REJECTED
    assert "UDAPI1158" in (rejected.rejection_reason or "")
    assert not live.engine.pending_entries
    assert sim.rest.orders == {}
    assert not live.desk.gate.blocked  # a refusal of the order, not of the account


def test_an_order_the_exchange_cancels_is_reported_as_closed(live: Live) -> None:
    live.enter("ub-limit-2", order_type=OrderType.LIMIT, limit_price_paise=70_000)
    sim_order = live.sim_order("ub-limit-2")
    live.pump_until(lambda: sim_order.status == "open", "open")
    with live.upstox.rest.lock:
        sim_order.set_status("cancelled", "Cancelled by exchange: IOC")

    live.pump_until(lambda: not live.engine.orders, "the end of the order")
    (closed,) = [e for e in live.seen if isinstance(e, OrderClosed)]
    assert closed == OrderClosed(
        client_order_id=ClientOrderId("ub-limit-2"),
        status=OrderStatus.CANCELLED,
        reason="Cancelled by exchange: IOC",
        filled_quantity=0,
    )
    assert not live.engine.pending_entries


# --- never a second order for one intent -----------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "process"),
    [
        (FaultKind.TIMEOUT, True),  # Upstox took the order, the answer was lost
        (FaultKind.SERVER_ERROR, True),  # took it, then answered 500
        (FaultKind.SERVER_ERROR, False),  # refused with 500: nothing placed, sent again
    ],
)
def test_placement_across_a_timeout_or_5xx_ends_with_exactly_one_order(
    live: Live, fault: FaultKind, process: bool
) -> None:
    live.upstox.rest.fail_next(fault, path=PLACE, delay_s=1.0, process=process)

    live.enter("ub-once-1")

    live.pump_until(lambda: SBIN in live.engine.positions, "the fill")
    assert len(live.sim_orders("ub-once-1")) == 1
    assert live.engine.positions[SBIN].quantity == 10


def test_a_token_revoked_while_the_order_is_in_flight_ends_in_one_order_after_the_login(
    live: Live,
) -> None:
    # The issue's first failure: the order reaches Upstox, the token dies before the answer
    # arrives, so the tag look-up is refused too. The order's fate is unknown: nothing may be
    # sent again, and nothing may stop, until a login lets the tag be looked up.
    rest = live.upstox.rest
    rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=1.0, process=True)
    rest.after_next_place(live.upstox.revoke_tokens)

    live.enter("ub-revoked-1")

    live.pump_until(lambda: "ub-revoked-1" in live.desk.unknown, "the outcome reported unknown")
    assert live.auth_failures  # a read confirmed the token dead: it is reported
    assert rest.requests_to(PROFILE)
    assert len(live.sim_orders("ub-revoked-1")) == 1
    assert live.audits("order.outcome_unknown")

    live.token = rest.issue_token()  # the trader logs in again

    live.pump_until(lambda: SBIN in live.engine.positions, "the order found and its fill")
    assert len(live.sim_orders("ub-revoked-1")) == 1  # found by its tag, never sent twice
    assert len(rest.requests_to(PLACE)) == 1
    (resolved,) = live.audits("order.outcome_resolved")
    assert resolved.data["found"] is True
    assert "ub-revoked-1" not in live.desk.unknown


def test_an_order_that_never_arrived_is_sent_again_only_after_the_lookup_window(
    sim: UpstoxSimulator,
) -> None:
    live = Live(sim, lookup_window_s=1.5)
    live.broker.start()
    try:
        # The answer is lost and the order book cannot be read (Upstox down): the client
        # cannot conclude; the broker keeps looking the tag up and sends it again only once
        # the book and the history have shown nothing for the whole window.
        sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=1.0, process=False)
        sim.rest.fail_next(FaultKind.SERVER_ERROR, count=100_000, path="/v2/order/retrieve-all")
        live.enter("ub-lost-1")
        live.pump_until(lambda: "ub-lost-1" in live.desk.unknown, "unknown outcome")
        first_place = sim.rest.requests_to(PLACE)[-1].at
        sim.rest.faults.clear()  # Upstox answers again: the look-ups can conclude

        live.pump_until(lambda: SBIN in live.engine.positions, "the order sent again, filled")
    finally:
        live.broker.stop()
    assert len(sim.rest.orders_with_tag("ub-lost-1")) == 1
    second_place = sim.rest.requests_to(PLACE)[-1].at
    assert second_place - first_place >= 1.5  # not before the window had passed
    assert any(isinstance(e, OrderNotPlaced) for e in live.seen)
    (resolved,) = live.audits("order.outcome_resolved")
    assert resolved.data == {"found": False, "resent": True}


def test_a_restart_mid_order_finds_the_order_by_its_tag(live: Live) -> None:
    # The bot recorded the order SUBMITTING and was killed before the answer; the restart
    # hands it to the broker, which finds it by tag once the book shows it.
    live.upstox.rest.place(market_record("ub-crashed-1"), None)
    crashed = order("ub-crashed-1")
    engine = live.engine
    engine.restore(
        EngineState(
            trading_date=engine.trading_date,
            capital_paise=engine.capital_paise,
            unfinished_orders=[crashed],
            reference_prices={"ub-crashed-1": 80_000},
        )
    )
    live.desk.unknown.add("ub-crashed-1")
    live.broker.track(crashed, unknown_since=utc_now())

    live.pump_until(lambda: SBIN in live.engine.positions, "the order found and filled")
    assert len(live.sim_orders("ub-crashed-1")) == 1
    assert any(isinstance(e, OrderAccepted) and e.recovered for e in live.seen)


# --- refusals: the token, the order API, the static IP ------------------------------------------


def test_order_api_401_with_a_live_token_holds_exits_and_keeps_the_token(live: Live) -> None:
    live.hold_position("ub-held-1")
    live.upstox.scenario.order_api_unauthorized = True

    exit_id = live.exit()

    live.pump_until(lambda: live.desk.gate.blocked, "the gate blocked")
    assert live.desk.gate.cause is BlockCause.ORDER_API
    assert live.auth_failures == []  # a read accepted the token: it is kept
    assert exit_id in live.desk.held
    (blocked,) = live.audits("broker.orders_blocked")
    assert blocked.data["cause"] == "order_api"
    assert "static IP" in blocked.data["what_to_do"]
    places = len(live.upstox.rest.requests_to(PLACE))
    live.enter("ub-blocked-entry", key=RELIANCE)  # refused here, never sent
    assert len(live.upstox.rest.requests_to(PLACE)) == places
    assert live.journal.orders["ub-blocked-entry"].status is OrderStatus.REJECTED

    live.upstox.scenario.order_api_unauthorized = False
    live.later(RETRY_MS)
    live.desk.tend()  # the probe: the held exit goes with the same tag

    live.pump_until(lambda: SBIN not in live.engine.positions, "the exit filled")
    assert not live.desk.gate.blocked
    assert live.audits("broker.orders_unblocked")
    sells = [o for o in live.upstox.rest.orders.values() if o.transaction_type == "SELL"]
    assert [o.tag for o in sells] == [exit_id]  # one exit order, never a second


def test_a_static_ip_refusal_holds_exits_pauses_entries_and_alerts_once(live: Live) -> None:
    live.hold_position("ub-ip-1")
    live.hold_position("ub-ip-2", key=RELIANCE)
    live.upstox.scenario.static_ip_registered = False

    first = live.exit(SBIN)
    live.pump_until(lambda: first in live.desk.held, "the first exit held")
    live.later(30_000)
    second = live.exit(RELIANCE)  # goes straight to the held queue: the gate is blocked
    assert second in live.desk.held
    live.later(RETRY_MS)
    live.desk.tend()  # a probe, refused again
    live.pump_until(
        lambda: (
            len(live.upstox.rest.requests_to(PLACE)) >= 4 and set(live.desk.held) == {first, second}
        ),
        "the probe refused, its exit held again",
    )

    assert live.desk.gate.cause is BlockCause.STATIC_IP
    assert len(live.audits("broker.orders_blocked")) == 1  # alerted once
    assert set(live.desk.held) == {first, second}  # kept queued, never dropped
    held = [live.journal.orders[cid] for cid in (first, second)]
    assert all(o.status is not OrderStatus.REJECTED for o in held)
    assert live.auth_failures == []

    live.upstox.scenario.static_ip_registered = True  # the trader registered the IP
    live.later(RETRY_MS)
    live.desk.tend()
    live.pump_until(lambda: not live.engine.positions, "both exits filled")
    tags = sorted(o.tag or "" for o in live.upstox.rest.orders.values())
    assert tags == sorted(["ub-ip-1", "ub-ip-2", first, second])


# --- the lifecycle: deadlines, re-pricing, partial fills -------------------------------------


def test_a_stop_exit_resting_in_a_gap_is_repriced_until_it_fills(sim: UpstoxSimulator) -> None:
    live = Live(sim, reprice_attempts=2)
    live.broker.start()
    try:
        wait_until(lambda: sim.portfolio.active_connections == 1, what="the stream")
        live.hold_position("ub-gap-1")
        sim.rest.set_price(SBIN, Decimal("780.00"))
        live.trade(SBIN, 78_000)
        sim.rest.script_gap(SBIN, "740.00")  # through the 2% band right after acceptance

        exit_id = live.exit()
        resting = live.sim_order(exit_id)
        live.pump_until(lambda: resting.status == "open", "the exit resting in the gap")
        assert resting.protected_price == Decimal("764.40")
        assert SBIN in live.engine.positions

        # The market falls on while the bot's last price lags: two re-prices stay above it.
        sim.rest.set_price(SBIN, Decimal("600.00"))
        live.trade(SBIN, 74_000)
        for attempt in (1, 2):
            live.later(EXIT_TIMEOUT_MS)
            live.desk.tend()

            def repriced(n: int = attempt) -> bool:
                return len([e for e in live.seen if isinstance(e, OrderModified)]) >= n

            live.pump_until(repriced, f"re-price {attempt} confirmed")
        assert resting.status == "open"
        assert live.audits("order.exit_stuck") == []

        live.later(EXIT_TIMEOUT_MS)
        live.desk.tend()  # the third: escalated, and re-priced from the latest price
        (stuck,) = live.audits("order.exit_stuck")
        assert stuck.data["attempts"] == 2
        live.trade(SBIN, 60_000)
        live.later(60_000)
        live.desk.tend()
        live.pump_until(lambda: SBIN not in live.engine.positions, "the exit filled")
    finally:
        live.broker.stop()
    prices = [a.data["price_paise"] for a in live.audits("order.repriced")]
    assert prices[:2] == [73_260, 72_520]  # 1%, then 2% through the last price, on the tick
    assert prices[-1] < 60_000
    (sell,) = [o for o in sim.rest.orders.values() if o.transaction_type == "SELL"]
    assert sell.tag == exit_id  # one exit order, re-priced by modify, never a second
    assert len(sim.rest.requests_to(MODIFY)) == len(prices)
    (trade,) = live.journal.trades
    assert trade.exit_price_paise == 60_000
    assert trade.exit_reason is ExitReason.STOP_LOSS


def test_a_refused_reprice_is_replaced_by_a_new_exit_at_a_new_protected_price(
    live: Live,
) -> None:
    live.hold_position("ub-replace-1")
    live.upstox.rest.set_price(SBIN, Decimal("780.00"))
    live.trade(SBIN, 78_000)
    live.upstox.rest.script_gap(SBIN, "740.00")
    first = live.exit()
    resting = live.sim_order(first)
    live.pump_until(lambda: resting.status == "open", "resting")
    live.upstox.rest.fail_next(FaultKind.SERVER_ERROR, count=3, path=MODIFY)  # modify refused

    live.later(EXIT_TIMEOUT_MS)
    live.trade(SBIN, 74_000)
    live.desk.tend()
    live.pump_until(
        lambda: any(isinstance(e, OrderModified) and not e.ok for e in live.seen), "refused"
    )
    live.later(EXIT_TIMEOUT_MS)
    live.desk.tend()  # cancel; the engine queues the exit again
    live.pump_until(lambda: resting.status == "cancelled", "the first exit cancelled")
    live.pump_until(lambda: SBIN in live.engine.exit_queue, "the exit queued again")
    live.later(30_000)
    live.executor.execute(live.engine.on_timer(live.clock.now_ms()))

    live.pump_until(lambda: SBIN not in live.engine.positions, "the new exit filled")
    assert live.audits("order.replace_requested")
    sells = [o for o in live.upstox.rest.orders.values() if o.transaction_type == "SELL"]
    assert [o.status for o in sells] == ["cancelled", "complete"]


def test_an_entry_not_filled_by_its_deadline_is_cancelled_and_its_slot_released(
    live: Live,
) -> None:
    live.enter("ub-stale-1", order_type=OrderType.LIMIT, limit_price_paise=70_000)
    sim_order = live.sim_order("ub-stale-1")
    live.pump_until(lambda: sim_order.status == "open", "resting")
    live.pump_until(lambda: live.engine.orders["ub-stale-1"].broker_order_id, "acknowledged")
    live.desk.tend()
    assert live.engine.orders  # not yet due

    live.later(ENTRY_TIMEOUT_MS)
    live.desk.tend()

    live.pump_until(lambda: not live.engine.orders, "the entry cancelled")
    assert live.journal.orders["ub-stale-1"].status is OrderStatus.CANCELLED
    (passed,) = live.audits("order.deadline_passed")
    assert passed.actor == "order_desk"
    cancelled = [a for a in live.audits("order.cancelled") if a.entity_id == "ub-stale-1"]
    assert cancelled[0].actor == "order_desk"


def test_an_entry_part_filled_by_its_deadline_keeps_the_part_and_releases_the_rest(
    live: Live,
) -> None:
    live.upstox.rest.script_partial_fill("ub-part-1", 4)
    live.enter("ub-part-1")
    live.pump_until(lambda: SBIN in live.engine.positions, "the part fill")
    assert live.engine.positions[SBIN].quantity == 4

    live.later(ENTRY_TIMEOUT_MS)
    live.desk.tend()

    live.pump_until(lambda: not live.engine.orders, "the rest cancelled")
    assert live.engine.positions[SBIN].quantity == 4
    assert not live.engine.pending_entries
    assert live.journal.orders["ub-part-1"].status is OrderStatus.CANCELLED


def test_an_exit_part_filled_then_cancelled_at_upstox_queues_an_exit_for_the_rest(
    live: Live,
) -> None:
    live.hold_position("ub-held-2")
    first_exit = derive_id("ub", "test", "exit", "ub-held-2", 1)
    live.upstox.rest.script_partial_fill(first_exit, 6, then_cancel="Cancelled by exchange")
    live.upstox.rest.set_price(SBIN, Decimal("790.00"))

    live.exit(reason=ExitReason.MANUAL)
    live.pump_until(lambda: SBIN in live.engine.exit_queue, "the rest queued again")

    assert live.engine.positions[SBIN].quantity == 4
    (part,) = live.journal.trades
    assert (part.quantity, part.exit_price_paise) == (6, 79_000)
    live.later(30_000)
    live.executor.execute(live.engine.on_timer(live.clock.now_ms()))
    live.pump_until(lambda: SBIN not in live.engine.positions, "the rest filled")
    assert [tr.quantity for tr in live.journal.trades] == [6, 4]


def test_partial_fills_over_several_updates_add_up_to_one_position(sim: UpstoxSimulator) -> None:
    sim.scenario.fill_parts = 3
    live = Live(sim)
    live.broker.start()
    try:
        live.enter("ub-parts-1", quantity=9)
        live.pump_until(
            lambda: SBIN in live.engine.positions and not live.engine.orders, "all parts"
        )
    finally:
        live.broker.stop()
    fills = [e for e in live.seen if isinstance(e, Fill)]
    assert [f.quantity for f in fills] == [3, 3, 3]
    assert live.engine.positions[SBIN].quantity == 9


# --- modify and cancel ----------------------------------------------------------------------


def test_a_working_order_is_modified_through_upstox_and_changes_when_upstox_confirms(
    live: Live,
) -> None:
    live.enter("ub-mod-1", order_type=OrderType.LIMIT, limit_price_paise=70_000)
    sim_order = live.sim_order("ub-mod-1")
    live.pump_until(lambda: sim_order.status == "open", "resting")
    live.pump_until(lambda: live.engine.orders["ub-mod-1"].broker_order_id, "acknowledged")

    done = live.desk.modify(
        "ub-mod-1", OrderChange(price_paise=79_000, quantity=6), by="tester", reason="closer"
    )

    assert done is False  # sent; the engine changes on Upstox's answer
    assert live.engine.orders["ub-mod-1"].limit_price_paise == 70_000
    live.pump_until(lambda: any(isinstance(e, OrderModified) for e in live.seen), "modified")
    working = live.engine.orders["ub-mod-1"]
    assert (working.limit_price_paise, working.quantity) == (79_000, 6)
    assert (sim_order.price, sim_order.quantity) == (Decimal("790.0"), 6)
    (requested,) = live.audits("order.modify_requested")
    assert (requested.actor, requested.data["reason"]) == ("tester", "closer")
    (modified,) = live.audits("order.modified")
    assert modified.actor == "tester"

    live.upstox.rest.set_price(SBIN, Decimal("789.00"))
    live.pump_until(lambda: SBIN in live.engine.positions, "the fill at the new price")
    assert live.engine.positions[SBIN].quantity == 6


def test_modify_refuses_what_would_break_a_rule(live: Live) -> None:
    live.enter("ub-mod-2", order_type=OrderType.LIMIT, limit_price_paise=70_000)
    live.pump_until(lambda: live.engine.orders["ub-mod-2"].broker_order_id, "acknowledged")

    with pytest.raises(Conflict, match="only be reduced"):
        live.desk.modify("ub-mod-2", OrderChange(quantity=11), by="t")
    with pytest.raises(ValueError, match="tick"):
        live.desk.modify("ub-mod-2", OrderChange(price_paise=70_003), by="t")
    with pytest.raises(Conflict, match="no trigger"):
        live.desk.modify("ub-mod-2", OrderChange(trigger_price_paise=69_000), by="t")
    with pytest.raises(NotFound):
        live.desk.modify("ub-none", OrderChange(price_paise=70_000), by="t")
    assert live.upstox.rest.requests_to(MODIFY) == []


def test_cancel_goes_to_upstox_and_the_engine_changes_only_when_upstox_confirms(
    live: Live,
) -> None:
    live.enter("ub-cancel-1", order_type=OrderType.LIMIT, limit_price_paise=70_000)
    sim_order = live.sim_order("ub-cancel-1")
    live.pump_until(lambda: sim_order.status == "open", "resting")
    live.pump_until(lambda: live.engine.orders["ub-cancel-1"].broker_order_id, "acknowledged")

    assert live.broker.request_cancel("ub-cancel-1", by="tester") is CancelOutcome.REQUESTED

    assert live.engine.orders["ub-cancel-1"].status is OrderStatus.OPEN  # not optimistic
    live.pump_until(lambda: not live.engine.orders, "the cancel confirmed")
    (closed,) = [e for e in live.seen if isinstance(e, OrderClosed)]
    assert closed.requested_by == "tester"
    assert not live.engine.pending_entries
    assert live.broker.request_cancel("ub-cancel-1", by="tester") is CancelOutcome.NOT_WORKING


def test_a_cancel_that_loses_the_race_to_the_fill_ends_filled(live: Live) -> None:
    live.enter("ub-race-1", order_type=OrderType.LIMIT, limit_price_paise=79_000)
    sim_order = live.sim_order("ub-race-1")
    live.pump_until(lambda: sim_order.status == "open", "resting")
    live.pump_until(lambda: live.engine.orders["ub-race-1"].broker_order_id, "acknowledged")
    live.upstox.portfolio.pause()  # the fill happens, the bot does not hear of it yet
    live.upstox.rest.set_price(SBIN, Decimal("789.00"))

    live.broker.request_cancel("ub-race-1", by="tester")  # Upstox refuses: it is complete
    live.upstox.portfolio.pause(False)
    live.upstox.portfolio.drop_connections()

    live.pump_until(lambda: SBIN in live.engine.positions, "the fill")
    assert live.journal.orders["ub-race-1"].status is OrderStatus.FILLED
    assert live.engine.positions[SBIN].quantity == 10


def test_guard_refusal_places_nothing(sim: UpstoxSimulator) -> None:
    live = Live(sim, can_place=lambda o: "Upstox token expired: log in again")
    live.broker.start()
    try:
        with pytest.raises(OrderRejected, match="log in again"):
            live.broker.place(order("ub-guarded-1"))
        assert sim.rest.requests_to(PLACE) == []
    finally:
        live.broker.stop()


def test_stream_drop_is_covered_by_the_poll_on_reconnect(live: Live) -> None:
    live.upstox.portfolio.pause()
    live.enter("ub-gap-2", order_type=OrderType.LIMIT, limit_price_paise=79_000)
    sim_order = live.sim_order("ub-gap-2")
    wait_until(lambda: sim_order.status == "open", what="resting")
    live.upstox.rest.set_price(SBIN, Decimal("789.00"))  # fills while the stream is deaf
    live.upstox.portfolio.pause(False)
    live.upstox.portfolio.drop_connections()

    live.pump_until(lambda: SBIN in live.engine.positions, "the fill")
    assert live.upstox.portfolio.updates_lost >= 1


def test_the_stream_comes_back_by_itself_after_a_revocation_and_a_login(live: Live) -> None:
    live.upstox.revoke_tokens()
    wait_until(
        lambda: live.gateway.stream is not None and live.gateway.stream.unauthorized,
        what="the stream refused",
    )
    # Reported (the authorize call is a read): by the stream's hook, after it counted the
    # refusal, on the stream's own thread.
    wait_until(lambda: live.auth_failures, what="the refusal reported")

    live.token = live.upstox.rest.issue_token()

    wait_until(lambda: live.upstox.portfolio.active_connections == 1, what="back")
    assert live.gateway.stream is not None
    assert live.gateway.stream.resumed == 1
    live.enter("ub-after-login")
    live.pump_until(lambda: SBIN in live.engine.positions, "a fill through the new stream")


# --- reconciliation -------------------------------------------------------------------------


def test_reconcile_resolves_a_submitted_order_and_reports_a_position_mismatch(
    db_session: Session, live: Live
) -> None:
    account = "live-test"
    journal = SqlJournal(db_session, account)
    # an order the bot recorded as SUBMITTING, then crashed before hearing back
    journal.order(order("ub-recon-1", status=OrderStatus.SUBMITTING))
    live.upstox.rest.place(market_record("ub-recon-1"), None)
    placed = live.sim_order("ub-recon-1")
    wait_until(
        lambda: live.upstox.rest.visible(placed) and placed.status == "complete", what="the fill"
    )
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
            entry_at=utc_now() - timedelta(minutes=5),
            entry_order_id=ClientOrderId("ub-recon-0"),
            stop_paise=133_000,
            target_paise=145_600,
        )
    )
    db_session.flush()

    report = reconcile(db_session, live.broker, account=account, now=utc_now())

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
