"""The write-ahead before an order is sent: durable at once, in its tables once settled, and
settled by the next start when the process died in between (runtime/store.py)."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select

from upstox_bot.db import migrate
from upstox_bot.db.models import OrderRow, PendingWriteRow, TickRow
from upstox_bot.db.repositories import pending_writes
from upstox_bot.db.repositories.checkpoints import Checkpoint, FencedOut
from upstox_bot.db.session import make_engine, make_session_factory
from upstox_bot.domain import (
    ClientOrderId,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Side,
    Tick,
    datetime_to_ms,
)
from upstox_bot.runtime.store import AccountStore
from upstox_bot.trading.journal import BufferedJournal

IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 11, 25, 10, 15, tzinfo=IST)
KEY = "NSE_EQ|INE002A01018"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgresql", marks=pytest.mark.integration),
    ],
)
def db_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A database of this module's own (the stores here commit: the shared databases of the
    other tests must not see their orders and ticks)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("pending") / "upstox_bot.sqlite"
        url = f"sqlite:///{path.as_posix()}"
    else:
        url = request.getfixturevalue("new_postgres_url")()
    migrate.upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _store(db_engine: Engine, account: str) -> AccountStore:
    return AccountStore(make_session_factory(db_engine), account, harness="embedded")


def _order_records(tag: str) -> tuple[pending_writes.Ops, list[Tick]]:
    """What a minute's close records before its entry goes out: the order, then SUBMITTING."""
    journal = BufferedJournal()
    order = Order(
        client_order_id=ClientOrderId(tag),
        instrument_key=KEY,
        side=Side.BUY,
        quantity=10,
        lots=1,
        purpose=OrderPurpose.ENTRY,
        order_type=OrderType.MARKET,
        status=OrderStatus.PENDING,
        created_at=T0,
        updated_at=T0,
    )
    journal.order(order)
    journal.order(replace(order, status=OrderStatus.SUBMITTING))
    journal.order_sent(order.client_order_id, T0)
    ticks = [
        Tick(instrument_key=KEY, ts_ms=datetime_to_ms(T0) + i, ltp_paise=250_000 + i, ltq=5)
        for i in range(3)
    ]
    return journal.ops(len(journal)), ticks


def _checkpoint(number: int) -> Checkpoint:
    return Checkpoint(
        trading_date=T0.date(), market_at=T0.astimezone(UTC), position={"ticks": number}
    )


def _counts(db_engine: Engine, account: str, tag: str) -> tuple[int, int, int]:
    """(orders with the tag, the tag's ticks, the account's pending writes)."""
    with db_engine.connect() as connection:
        orders = connection.scalar(
            select(func.count()).select_from(OrderRow).where(OrderRow.client_order_id == tag)
        )
        ticks = connection.scalar(
            select(func.count())
            .select_from(TickRow)
            .where(TickRow.instrument_key == KEY, TickRow.ts >= T0, TickRow.ltp_paise >= 250_000)
        )
        pending = connection.scalar(
            select(func.count())
            .select_from(PendingWriteRow)
            .where(PendingWriteRow.account == account)
        )
    return int(orders or 0), int(ticks or 0), int(pending or 0)


def test_a_write_ahead_is_durable_before_its_tables_and_settles_once(db_engine: Engine) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    tag = f"ub-{uuid.uuid4().hex[:12]}"
    store = _store(db_engine, account)
    ops, ticks = _order_records(tag)

    ident = store.write_ahead(ops, ticks, _checkpoint(1))

    # Durable with its checkpoint, not yet in the tables.
    assert _counts(db_engine, account, tag) == (0, 0, 1)
    checkpoint = store.checkpoint()
    assert checkpoint is not None
    assert checkpoint.position == {"ticks": 1}

    store.settle([(ident, ops, ticks)])
    assert _counts(db_engine, account, tag) == (1, 3, 0)

    # A second settle of the same write is another holder's, refused: nothing is doubled.
    with pytest.raises(FencedOut):
        store.settle([(ident, ops, ticks)])
    assert _counts(db_engine, account, tag) == (1, 3, 0)


def test_writes_left_by_a_dead_process_are_settled_by_the_next_start_in_order(
    db_engine: Engine,
) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    tag = f"ub-{uuid.uuid4().hex[:12]}"
    dead = _store(db_engine, account)
    ops, ticks = _order_records(tag)
    # The order written PENDING, then SUBMITTING in a later write: applied in this order, the
    # stored order ends SUBMITTING (the other order would leave it PENDING).
    first = dead.write_ahead(ops[:1], ticks, _checkpoint(1))
    dead.write_ahead(ops[1:], [], _checkpoint(2))

    restarted = _store(db_engine, account)
    assert restarted.settle_pending() == 2
    assert _counts(db_engine, account, tag) == (1, 3, 0)
    with db_engine.connect() as connection:
        status = connection.scalar(select(OrderRow.status).where(OrderRow.client_order_id == tag))
    assert status == OrderStatus.SUBMITTING.value
    assert restarted.settle_pending() == 0

    # The dead process, had it lived on, could not settle them again.
    with pytest.raises(FencedOut):
        dead.settle([(first, ops[:1], ticks)])


def test_a_payload_round_trips_and_builds_nothing_but_domain_values() -> None:
    ops, ticks = _order_records("ub-round-trip")
    assert pending_writes.decode(pending_writes.encode(ops, ticks)) == (ops, ticks)

    hostile = pickle.dumps(([("order", (os.system,))], []))
    with pytest.raises(pickle.UnpicklingError, match=r"may not build (posix|os)\.system"):
        pending_writes.decode(hostile)
    # The one getattr an IST datetime needs, and no other.
    reaching = pickle.dumps(([("order", (_ReachingGetattr(),))], []))
    with pytest.raises(pickle.UnpicklingError, match="may not read"):
        pending_writes.decode(reaching)


class _ReachingGetattr:
    def __reduce__(self) -> tuple[object, ...]:
        return getattr, (ZoneInfo, "__subclasses__")
