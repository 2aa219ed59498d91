"""The order desk on the paper broker and on a broker that refuses the account's orders."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest

from tests.support.factories import ScriptedStrategy, ist, make_engine, make_tick
from upstox_bot.domain import (
    ClientOrderId,
    ExitReason,
    Fill,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
)
from upstox_bot.errors import Conflict, OrdersBlocked
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.desk import OrderDesk
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.lifecycle import LifecycleConfig, OrderLifecycle
from upstox_bot.trading.order_gate import BlockCause, OrderGate
from upstox_bot.trading.ports import OrderAccepted, OrderChange

KEY = "NSE_EQ|INE062A01020"


class RefusingBroker:
    """The paper broker behind a switch that refuses every order (a static-IP refusal)."""

    def __init__(self, paper: PaperBroker) -> None:
        self.paper = paper
        self.refusing = False
        self.sent: list[str] = []

    def place(self, order: Order) -> Sequence[Fill]:
        self.sent.append(order.client_order_id)
        if self.refusing:
            raise OrdersBlocked("UDAPI1154: static IP", cause=BlockCause.STATIC_IP.value)
        return self.paper.place(order)

    def find_by_tag(self, client_order_id: str) -> Order | None:
        return self.paper.find_by_tag(client_order_id)

    def cancel(self, client_order_id: str) -> bool:
        return self.paper.cancel(client_order_id)


def desk_on(*, refusing: bool = False):  # type: ignore[no-untyped-def]
    engine, journal, clock = make_engine(ScriptedStrategy({}))
    paper = PaperBroker(clock=clock, slippage_bps=Decimal(0))
    broker = RefusingBroker(paper) if refusing else paper
    executor = OrderExecutor(engine=engine, broker=broker, journal=journal)
    desk = OrderDesk(
        engine=engine,
        executor=executor,
        journal=journal,
        lifecycle=OrderLifecycle(LifecycleConfig(entry_timeout_ms=60_000, exit_timeout_ms=10_000)),
        gate=OrderGate(retry_every_ms=30_000),
        tick_size_paise=lambda _key: 5,
    )
    return engine, journal, clock, paper, broker, executor, desk


def intent(cid: str, **overrides: object) -> OrderIntent:
    values: dict[str, object] = {
        "client_order_id": ClientOrderId(cid),
        "instrument_key": KEY,
        "side": Side.BUY,
        "quantity": 10,
        "lots": 10,
        "purpose": OrderPurpose.ENTRY,
        "reason": "test",
        "created_at": ist(10, 0),
        "reference_price_paise": 80_000,
    }
    values.update(overrides)
    return OrderIntent(**values)  # type: ignore[arg-type]


def test_a_paper_order_is_modified_at_once_and_fills_at_its_new_limit() -> None:
    engine, journal, _clock, broker, _, executor, desk = desk_on()
    executor.execute([intent("ub-1")])

    done = desk.modify("ub-1", OrderChange(price_paise=79_000), by="tester", reason="cheaper")

    assert done is True
    order = engine.orders["ub-1"]
    assert (order.order_type, order.limit_price_paise) == (OrderType.LIMIT, 79_000)
    assert [a.actor for a in journal.audits if a.event == "order.modified"] == ["tester"]
    assert broker.on_tick(make_tick(ltp_paise=79_500)) == []  # above the limit: rests
    (fill,) = broker.on_tick(make_tick(ltp_paise=78_900))
    assert fill.price_paise == 78_900


def test_modify_refusals_name_the_rule() -> None:
    _engine, _journal, _clock, _paper, _broker, executor, desk = desk_on()
    executor.execute([intent("ub-2")])

    with pytest.raises(Conflict, match="only be reduced"):
        desk.modify("ub-2", OrderChange(quantity=20), by="t")
    with pytest.raises(Conflict, match="above the 0"):
        desk.modify("ub-2", OrderChange(quantity=0), by="t")
    with pytest.raises(ValueError, match="tick"):
        desk.modify("ub-2", OrderChange(price_paise=79_001), by="t")
    with pytest.raises(Conflict, match="nothing to change"):
        desk.modify("ub-2", OrderChange(), by="t")


def test_a_paper_entry_past_its_deadline_is_cancelled_and_released() -> None:
    engine, journal, clock, _paper, _broker, executor, desk = desk_on()
    executor.execute([intent("ub-3", order_type=OrderType.LIMIT, limit_price_paise=70_000)])
    clock.set_ms(clock.now_ms() + 60_000)

    desk.tend()

    assert not engine.orders
    assert journal.orders["ub-3"].status is OrderStatus.CANCELLED
    assert [a.event for a in journal.audits if a.entity_id == "ub-3"][-2:] == [
        "order.deadline_passed",
        "order.cancelled",
    ]


def test_a_refused_account_holds_the_exit_and_sends_it_once_the_probe_passes() -> None:
    engine, journal, clock, paper, broker, executor, desk = desk_on(refusing=True)
    assert isinstance(broker, RefusingBroker)
    executor.execute([intent("ub-4")])
    executor.apply_fills(paper.on_tick(make_tick(ts_ms=clock.now_ms(), ltp_paise=80_000)))
    assert KEY in engine.positions
    clock.set_ms(clock.now_ms() + 30_000)
    broker.refusing = True

    engine.request_exit(KEY, ExitReason.STOP_LOSS)
    executor.execute(engine.on_timer(clock.now_ms()))

    (held,) = desk.held
    assert desk.gate.cause is BlockCause.STATIC_IP
    assert engine.orders[held].status is OrderStatus.SUBMITTING  # not rejected: waiting
    executor.execute([intent("ub-5", instrument_key="NSE_EQ|INE002A01018")])
    assert journal.orders["ub-5"].status is OrderStatus.REJECTED  # entries refused here
    assert broker.sent.count("ub-5") == 0

    clock.set_ms(clock.now_ms() + 29_999)
    desk.tend()
    assert broker.sent.count(held) == 1  # not yet: the probe waits its interval
    clock.set_ms(clock.now_ms() + 1)
    desk.tend()
    assert broker.sent.count(held) == 2  # the probe, refused again
    assert list(desk.held) == [held]

    broker.refusing = False
    clock.set_ms(clock.now_ms() + 30_000)
    desk.tend()
    executor.apply_fills(paper.on_tick(make_tick(ts_ms=clock.now_ms(), ltp_paise=76_000)))

    assert KEY not in engine.positions
    assert not desk.held
    assert [a.event for a in journal.audits if a.event.startswith("broker.")] == [
        "broker.orders_blocked",  # once, though refused twice
        "broker.orders_unblocked",
    ]
    assert broker.sent.count(held) == 3  # the same exit, never a second one


def test_the_gate_clears_on_the_first_accepted_order() -> None:
    _engine, journal, _clock, _paper, _broker, _executor, desk = desk_on()
    desk.gate.block(BlockCause.ALGO, "UDAPI1156", 0)
    desk.apply([OrderAccepted(client_order_id=ClientOrderId("ub-x"), broker_order_ids=("9",))])

    assert not desk.gate.blocked
    assert [a.event for a in journal.audits] == ["broker.orders_unblocked"]
