"""Orders that end part filled at the broker (cancelled, or rejected for the rest)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from tests.support.factories import (
    ScriptedStrategy,
    ist_ms,
    make_engine,
    make_instrument,
    make_limits,
)
from upstox_bot.config import Settings
from upstox_bot.domain import (
    ExitReason,
    Fill,
    Order,
    OrderPurpose,
    OrderStatus,
    SignalType,
    Tick,
)
from upstox_bot.runtime.components import charges_model
from upstox_bot.trading.engine import derive_id
from upstox_bot.trading.execution import OrderExecutor

A = "NSE_EQ|A"


class HoldingBroker:
    """A live-like broker: it takes orders and reports nothing until the test says so."""

    def __init__(self) -> None:
        self.placed: list[Order] = []

    def place(self, order: Order) -> Sequence[Fill]:
        self.placed.append(order)
        return ()

    def find_by_tag(self, client_order_id: str) -> Order | None:
        return None


def per_unit_charges(*, quantity: int, **_: object) -> int:
    return 7 * quantity  # paise per unit of the round trip: shows which quantity was charged


class Harness:
    def __init__(self) -> None:
        self.engine, self.journal, self.clock = make_engine(
            ScriptedStrategy({ist_ms(10, 0): [SignalType.ENTRY_LONG]}),
            instruments=[make_instrument(instrument_key=A, trading_symbol="A")],
            charges=per_unit_charges,
            # Rs 1,00,050: the 30% cap, 30,01,500 paise, is exactly 300 shares at the worst fill
            # the entry is sized for, Rs 100.05 (Rs 100.00 plus one 5-paise tick).
            limits=make_limits(capital_paise=10_005_000),
        )
        self.broker = HoldingBroker()
        self.executor = OrderExecutor(engine=self.engine, broker=self.broker, journal=self.journal)

    def tick(self, ms: int, price: int) -> None:
        self.clock.set_ms(ms)
        self.executor.execute(
            self.engine.on_tick(Tick(instrument_key=A, ts_ms=ms, ltp_paise=price, ltq=1))
        )

    def timer(self, ms: int) -> None:
        self.clock.set_ms(ms)
        self.executor.execute(self.engine.on_timer(ms))

    def fill(self, order: Order, quantity: int, price: int, n: int = 1) -> None:
        self.executor.apply_fills(
            [
                Fill(
                    fill_id=derive_id("fill", order.client_order_id, n),
                    client_order_id=order.client_order_id,
                    broker_order_id="b-1",
                    instrument_key=A,
                    side=order.side,
                    quantity=quantity,
                    price_paise=price,
                    filled_at=self.now,
                )
            ]
        )

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def entry(self) -> Order:
        self.tick(ist_ms(10, 0, 1), 10_000)
        self.timer(ist_ms(10, 1))
        (order,) = self.broker.placed
        return order

    def audits(self, event: str) -> list[Mapping[str, object]]:
        return [a.data for a in self.journal.audits if a.event == event]


def test_a_part_filled_entry_keeps_the_rest_reserved_while_it_works() -> None:
    h = Harness()
    order = h.entry()
    capital = h.engine.available_paise()  # 300 reserved at 100.00
    h.fill(order, 100, 10_000)

    assert h.engine.positions[A].quantity == 100
    assert A in h.engine.pending_entries  # 200 still working
    assert h.engine.open_position_count == 1
    assert h.engine.available_paise() == capital


def test_entry_part_filled_then_cancelled_becomes_the_position_and_frees_the_rest() -> None:
    h = Harness()
    order = h.entry()
    before = h.engine.available_paise() + 300 * 10_000  # nothing reserved
    h.fill(order, 100, 10_020)

    h.engine.on_order_closed(
        order.client_order_id, OrderStatus.CANCELLED, "Cancelled by user", by="tester"
    )

    position = h.engine.positions[A]
    assert (position.quantity, position.entry_price_paise) == (100, 10_020)
    assert (position.stop_paise, position.target_paise) == (9_519, 10_421)  # from the fill price
    assert A not in h.engine.pending_entries
    assert order.client_order_id not in h.engine.orders
    assert h.engine.open_position_count == 1
    assert h.engine.available_paise() == before - 100 * 10_020
    journaled = h.journal.orders[order.client_order_id]
    assert (journaled.status, journaled.filled_quantity) == (OrderStatus.CANCELLED, 100)
    (audit,) = h.audits("order.cancelled")
    assert audit["filled_quantity"] == 100
    assert audit["released_quantity"] == 200
    assert next(a for a in h.journal.audits if a.event == "order.cancelled").actor == "tester"
    assert h.journal.accounts[-1].open_positions == 1

    h.tick(ist_ms(10, 2), 9_500)  # its stop is from the fill: 95.19
    (exit_order,) = h.broker.placed[1:]
    assert (exit_order.purpose, exit_order.quantity) == (OrderPurpose.EXIT, 100)
    h.fill(exit_order, 100, 9_500)
    (trade,) = h.journal.trades
    assert trade.quantity == 100
    assert trade.charges_paise == 7 * 100  # charged on the filled part only


def test_entry_rejected_for_the_rest_after_a_part_fill_keeps_the_filled_part() -> None:
    h = Harness()
    order = h.entry()
    h.fill(order, 50, 10_000)

    h.engine.on_order_closed(order.client_order_id, OrderStatus.REJECTED, "RMS: margin")

    assert h.engine.positions[A].quantity == 50
    assert h.journal.orders[order.client_order_id].status is OrderStatus.CANCELLED
    assert h.audits("order.cancelled")[0]["broker_status"] == "rejected"
    assert not h.engine.pending_entries


def test_entry_cancelled_at_the_broker_with_nothing_filled_frees_slot_and_cash() -> None:
    h = Harness()
    order = h.entry()

    h.engine.on_order_closed(order.client_order_id, OrderStatus.CANCELLED, "Cancelled by exchange")

    assert not h.engine.pending_entries
    assert not h.engine.positions
    assert h.engine.open_position_count == 0
    assert h.journal.orders[order.client_order_id].status is OrderStatus.CANCELLED
    assert h.journal.audits[-1].actor == "broker"


def test_exit_part_filled_then_cancelled_books_that_part_and_exits_the_rest() -> None:
    h = Harness()
    order = h.entry()
    h.fill(order, 300, 10_000)
    h.tick(ist_ms(10, 2), 9_500)  # stop: exit of 300 sent
    exit_order = h.broker.placed[-1]
    h.fill(exit_order, 120, 9_490)
    assert h.engine.positions[A].quantity == 300  # nothing booked while it works

    h.engine.on_order_closed(exit_order.client_order_id, OrderStatus.CANCELLED, "IOC remainder")

    position = h.engine.positions[A]
    assert position.quantity == 180
    assert not position.exit_pending
    assert h.journal.positions[A].quantity == 180
    (part,) = h.journal.trades
    assert (part.quantity, part.exit_price_paise) == (120, 9_490)
    assert part.gross_pnl_paise == -510 * 120
    assert part.charges_paise == 7 * 120
    assert part.exit_reason is ExitReason.STOP_LOSS
    assert h.engine.day.realised_paise == part.net_pnl_paise
    assert h.engine.unrealised_paise == position.unrealised_pnl_paise
    assert h.engine.exit_queue == {A: ExitReason.STOP_LOSS}  # never dropped
    assert h.audits("position.reduced")[0]["open_quantity"] == 180

    h.tick(ist_ms(10, 2, 30), 9_480)  # the next slot: a new exit for the rest
    again = h.broker.placed[-1]
    assert again.client_order_id != exit_order.client_order_id
    assert (again.purpose, again.quantity) == (OrderPurpose.EXIT, 180)
    h.fill(again, 180, 9_480)
    assert A not in h.engine.positions
    first, last = h.journal.trades
    assert (last.quantity, last.charges_paise) == (180, 7 * 180)
    assert first.trade_id != last.trade_id
    assert h.engine.day.trades == 2


def test_exit_cancelled_at_the_broker_with_nothing_filled_is_queued_again() -> None:
    h = Harness()
    order = h.entry()
    h.fill(order, 300, 10_000)
    h.tick(ist_ms(10, 2), 9_500)
    exit_order = h.broker.placed[-1]

    h.engine.on_order_closed(exit_order.client_order_id, OrderStatus.CANCELLED, "by exchange")

    assert h.engine.positions[A].quantity == 300
    assert not h.engine.positions[A].exit_pending
    assert A in h.engine.exit_queue
    assert not h.journal.trades


def test_a_repeated_close_report_is_ignored() -> None:
    h = Harness()
    order = h.entry()
    h.engine.on_order_closed(order.client_order_id, OrderStatus.CANCELLED, "x")

    h.engine.on_order_closed(order.client_order_id, OrderStatus.CANCELLED, "x")

    assert len(h.audits("order.cancelled")) == 1


def _real_charges_harness() -> Harness:
    h = Harness()
    h.engine.reconfigure(charges=charges_model(Settings(_env_file=None)))
    return h


def test_a_100_plus_200_exit_of_300_costs_one_contract_note() -> None:
    # The engine books two trades (100, then 200 after the first exit order ended part filled)
    # and their charges add up to the one note of the day, worked in test_charges_segment:
    # buy 300 x 100.00, sell 100 x 101.00, sell 200 x 101.50 -> Rs 70.27 (the entry's
    # brokerage once, STT 7.60 -> 8 on the note).
    h = _real_charges_harness()
    order = h.entry()
    h.fill(order, 300, 10_000)
    h.engine.request_exit(A, ExitReason.MANUAL)
    h.tick(ist_ms(10, 1, 30), 10_100)  # the exit's slot: 30 s after the entry
    exit_order = h.broker.placed[-1]
    h.fill(exit_order, 100, 10_100)
    h.engine.on_order_closed(exit_order.client_order_id, OrderStatus.CANCELLED, "IOC remainder")
    h.tick(ist_ms(10, 2, 0), 10_150)  # the next slot: the rest goes
    again = h.broker.placed[-1]
    h.fill(again, 200, 10_150)

    first, second = h.journal.trades
    assert (first.quantity, second.quantity) == (100, 200)
    assert first.charges_paise + second.charges_paise == 7_027
    # gross: 100 x 1.00 + 200 x 1.50 = Rs 400.00
    assert (first.gross_pnl_paise, second.gross_pnl_paise) == (10_000, 30_000)
    assert h.engine.day.charges_paise == 7_027


def test_gross_pnl_uses_the_exact_average_of_the_fills() -> None:
    # Entry filled 150 x 100.00 + 150 x 100.05 = 30,007.50 (average 100.025; stored rounded
    # 100.03 = 10,003 paise, exact value 30,00,750 paise). Exit 300 x 101.00 = 30,300.00.
    # Gross = 30,300.00 - 30,007.50 = Rs 292.50; from the rounded average it would be
    # (101.00 - 100.03) x 300 = Rs 291.00.
    h = Harness()
    order = h.entry()
    h.fill(order, 150, 10_000, n=1)
    h.fill(order, 150, 10_005, n=2)
    journaled = h.journal.orders[order.client_order_id]
    assert (journaled.average_price_paise, journaled.filled_value_paise) == (10_003, 3_000_750)
    position = h.engine.positions[A]
    assert (position.entry_value_paise, position.entry_quantity) == (3_000_750, 300)
    h.engine.request_exit(A, ExitReason.MANUAL)
    h.tick(ist_ms(10, 1, 30), 10_100)
    h.fill(h.broker.placed[-1], 300, 10_100)
    (trade,) = h.journal.trades
    assert trade.gross_pnl_paise == 29_250
    assert trade.entry_price_paise == 10_003  # the price shown stays the rounded average
