"""The distributed harness end to end, as deployed: Celery worker processes (prefork pool) on a
Redis server of their own and PostgreSQL play a simulated session; what lands in PostgreSQL
equals the embedded harness's SQLite for the same seed, and stays so through a worker killed
mid-candle or mid-order, Redis restarted or emptied, PostgreSQL restarted, and duplicate
deliveries. Every tick the feed delivered is stored."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.cluster import (
    ACCOUNT,
    CLI,
    Book,
    Cluster,
    assert_same_book,
    db_session,
    stored_ticks,
)
from tests.support.servers import PostgresServer, RedisServer
from tests.support.waiting import wait_until
from upstox_bot.db.repositories import OrderRepository, pending_writes
from upstox_bot.db.repositories.pending_writes import PendingWriteRepository
from upstox_bot.domain import OrderStatus
from upstox_bot.runtime.control import Command, CommandKind
from upstox_bot.runtime.distributed.shards import FeedSpec, feed_progress
from upstox_bot.worker.control import RedisControl
from upstox_bot.worker.state import Keys, RedisPaperBook

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SESSION_DATE = date(2026, 11, 25)
SEED = 7
MINUTES = 90


# --- fixtures: deployments (`cluster_factory`, in conftest.py) and the embedded session ----------


def _play(cluster: Cluster, *, minutes: float = MINUTES) -> list[FeedSpec]:
    return cluster.start_session(trading_date=SESSION_DATE, seed=SEED, minutes=minutes)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Book, list[tuple[Any, ...]]]:
    """The embedded harness's session on SQLite, same seed, date and duration: its records
    and its stored ticks."""
    tmp = tmp_path_factory.mktemp("embedded")
    env = {**os.environ, "DATA_DIR": str(tmp), "LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    subprocess.run(
        [
            *(*CLI, "run", "--speed", "1000000", "--duration", str(MINUTES)),
            *("--seed", str(SEED), "--date", SESSION_DATE.isoformat(), "--no-api", "--no-live"),
        ],
        env=env,
        cwd=tmp,
        check=True,
        capture_output=True,
        timeout=240,
    )
    url = f"sqlite:///{tmp / 'upstox_bot.sqlite'}"
    book = Book.read(url)
    assert len(book.trades) >= 5, "the embedded session should trade enough to compare"
    return book, stored_ticks(url)


def _paper_book_tags(cluster: Cluster) -> dict[str, OrderStatus]:
    book = RedisPaperBook(cluster.redis, ACCOUNT)
    raw = cluster.redis.hkeys(Keys.paper_orders(ACCOUNT))
    tags = [k.decode() if isinstance(k, bytes) else k for k in raw]
    return {tag: book.get(tag).status for tag in tags}  # type: ignore[union-attr]


def _assert_as_embedded(cluster: Cluster, embedded: tuple[Book, list[tuple[Any, ...]]]) -> None:
    book, ticks = embedded
    got = Book.read(cluster.pg_url)
    try:
        got.assert_consistent()
        assert_same_book(got, book)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker logs: {cluster.logs()}") from None
    # Every tick the feed delivered is stored: the same sample as the embedded run's.
    assert stored_ticks(cluster.pg_url) == ticks


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def played(
    new_postgres_url: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One session played by the standard workers; the workers keep running."""
    cluster = Cluster.deploy(new_postgres_url(), tmp_path_factory.mktemp("played"))
    try:
        cluster.start_standard()
        specs = _play(cluster)
        cluster.wait_finished(specs)
        cluster.specs = specs  # type: ignore[attr-defined]
        yield cluster
    finally:
        cluster.stop()


def test_distributed_session_equals_embedded(
    played: Cluster, embedded: tuple[Book, list[tuple[Any, ...]]]
) -> None:
    _assert_as_embedded(played, embedded)
    got = Book.read(played.pg_url)
    assert _paper_book_tags(played) == {o.client_order_id: o.status for o in got.orders}
    with db_session(played.pg_url) as session:
        checkpoints = session.execute(
            text("SELECT count(*) FROM audit_logs WHERE event = 'engine.checkpoint'")
        ).scalar_one()
    assert checkpoints == 0, "checkpoints live in their own table, not in the audit log"


def test_same_deliveries_twice_change_nothing(played: Cluster) -> None:
    before = Book.read(played.pg_url)
    specs: list[FeedSpec] = played.specs  # type: ignore[attr-defined]
    shard = specs[0].shard
    for seq in range(1, feed_progress(played.redis, ACCOUNT, shard).next_seq):
        played.redis.xadd(Keys.wake(ACCOUNT), {"shard": shard, "seq": seq})
        played.enqueue("ingest.ticks", (ACCOUNT, shard, seq))
    played.enqueue("orders.hold_account", (ACCOUNT,))
    played.enqueue("orders.hold_account", (ACCOUNT,))
    played.enqueue("feed.run_shard", (specs[0].to_json(),))  # its shard is finished
    wait_until(
        lambda: not any(played.redis.llen(q) for q in ("orders", "feed", "ingest")),
        what="the queues to drain",
    )
    wait_until(
        lambda: not played.redis.exists(Keys.account_lock(ACCOUNT)),
        what="the holder to let the account go again",
    )
    after = Book.read(played.pg_url)
    assert after == before


def test_worker_health_check_pings_the_running_workers(
    played: Cluster, redis_server: RedisServer
) -> None:
    check = [*CLI, "worker", "--check"]
    result = subprocess.run(check, env=played.env, cwd=played.workdir, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert b"orders@test" in result.stdout
    idle = {**played.env, "REDIS_URL": f"{redis_server.url}/0"}
    result = subprocess.run(check, env=idle, cwd=played.workdir, capture_output=True)
    assert result.returncode == 1  # nobody answers on a broker without workers


def test_orders_worker_killed_after_the_broker_accepted_leaves_one_order(
    cluster_factory: Callable[..., Cluster], embedded: tuple[Book, list[tuple[Any, ...]]]
) -> None:
    cluster = cluster_factory()
    cluster.start_worker("feed", "feed", concurrency=2)
    cluster.start_worker("misc", "ingest,signals,default", concurrency=2)
    doomed = cluster.start_worker("orders", "orders", env={"UPSTOX_BOT_FAULT": "kill-after-place"})
    specs = _play(cluster)
    (tag,) = wait_until(lambda: _paper_book_tags(cluster), what="the broker to accept an order")
    wait_until(
        lambda: cluster.holder_pid() is None or not _alive(cluster.holder_pid()),
        what="the holder process to die",
    )
    with db_session(cluster.pg_url) as session:
        # Durable before the send, as the write-ahead (the holder died before settling it into
        # the orders table)...
        assert OrderRepository(session, ACCOUNT).get_or_none(tag) is None
        written = [
            args[0]
            for _, payload in PendingWriteRepository(session, ACCOUNT, "distributed").pending()
            for name, args in pending_writes.decode(payload)[0]
            if name == "order" and args[0].client_order_id == tag
        ]
    assert written[-1].status is OrderStatus.SUBMITTING  # ...and the database never heard back
    cluster.kill("orders")
    assert doomed.poll() is not None
    cluster.start_worker("orders-2", "orders")
    cluster.wait_finished(specs)
    got = Book.read(cluster.pg_url)
    assert [o.client_order_id for o in got.orders].count(tag) == 1
    assert _paper_book_tags(cluster) == {o.client_order_id: o.status for o in got.orders}
    _assert_as_embedded(cluster, embedded)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_orders_worker_killed_mid_candle_loses_nothing(
    cluster_factory: Callable[..., Cluster], embedded: tuple[Book, list[tuple[Any, ...]]]
) -> None:
    cluster = cluster_factory()
    cluster.start_standard()
    specs = _play(cluster)
    shard = specs[0].shard
    # Somewhere inside a minute (a batch is 2000 ticks, a few seconds of market).
    cluster.wait_applied(random.Random(SEED).randint(10, 40), shard)
    cluster.kill("orders")
    cluster.start_worker("orders-2", "orders")
    cluster.wait_finished(specs)
    _assert_as_embedded(cluster, embedded)


def test_redis_restart_in_the_session_loses_and_doubles_nothing(
    cluster_factory: Callable[..., Cluster], embedded: tuple[Book, list[tuple[Any, ...]]]
) -> None:
    cluster = cluster_factory()
    cluster.start_standard()
    specs = _play(cluster)
    cluster.wait_applied(40, specs[0].shard)
    cluster.redis_server.restart()
    cluster.wait_finished(specs)
    _assert_as_embedded(cluster, embedded)
    for name, proc in cluster.procs.items():
        assert proc.poll() is None, f"worker {name} died with Redis: {cluster.logs()}"


def test_redis_emptied_in_the_session_loses_and_doubles_nothing(
    cluster_factory: Callable[..., Cluster], embedded: tuple[Book, list[tuple[Any, ...]]]
) -> None:
    cluster = cluster_factory()
    cluster.start_standard()
    specs = _play(cluster)
    cluster.wait_applied(40, specs[0].shard)
    cluster.redis_server.flush()
    cluster.wait_finished(specs)
    _assert_as_embedded(cluster, embedded)


def test_postgres_restart_in_the_session_loses_and_doubles_nothing(
    cluster_factory: Callable[..., Cluster],
    embedded: tuple[Book, list[tuple[Any, ...]]],
    tmp_path: Path,
) -> None:
    server = PostgresServer()
    server.start()
    try:
        cluster = cluster_factory(pg_url=server.url)
        cluster.start_standard()
        specs = _play(cluster)
        cluster.wait_applied(40, specs[0].shard)
        server.restart()
        cluster.wait_finished(specs)
        _assert_as_embedded(cluster, embedded)
    finally:
        server.remove()


def test_controls_reach_the_holder_within_a_second_and_are_audited_once(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory()
    cluster.start_standard()
    specs = cluster.start_session(trading_date=SESSION_DATE, seed=SEED, minutes=375, speed=60.0)
    control = RedisControl(cluster.redis_url, ACCOUNT)
    wait_until(lambda: control.view() is not None, what="the holder's view")
    result = asyncio.run(
        control.send(
            Command(
                kind=CommandKind.KILL_SWITCH, by="tester", reason="drill", args={"active": True}
            ),
            timeout_s=1.0,
        )
    )
    assert result.data["active"] is True
    result = asyncio.run(
        control.send(
            Command(
                kind=CommandKind.SETTINGS, by="tester", args={"changes": {"MAX_OPEN_POSITIONS": 1}}
            ),
            timeout_s=1.0,
        )
    )
    assert result.data["applied"] == ["MAX_OPEN_POSITIONS"]
    wait_until(
        lambda: (v := control.view()) is not None and v.limits["max_open_positions"] == 1,
        what="the new limit in the view",
    )
    asyncio.run(
        control.send(
            Command(kind=CommandKind.SESSION, by="tester", args={"action": "stop"}),
            timeout_s=1.0,
        )
    )
    cluster.wait_finished(specs)
    with db_session(cluster.pg_url) as session:
        audits = session.execute(
            text("SELECT actor FROM audit_logs WHERE event = 'kill_switch.on'")
        ).all()
        switch = session.execute(text("SELECT kill_switch FROM accounts")).scalar_one()
    assert audits == [("tester",)]
    assert switch is True


def test_the_holder_starts_with_the_stored_settings_and_skips_one_that_no_longer_builds(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # PATCH /api/v1/settings stores its changes: a holder started later (a restart, a takeover)
    # trades by them; a stored value the settings refuse now is skipped and audited.
    from datetime import UTC, datetime

    from upstox_bot.db.repositories.settings_overrides import SettingsOverrideRepository

    cluster = cluster_factory(MAX_OPEN_POSITIONS="3")
    with db_session(cluster.pg_url) as session:
        overrides = SettingsOverrideRepository(session)
        now = datetime.now(UTC)
        overrides.set("MAX_OPEN_POSITIONS", 1, updated_by="tester", at=now)
        overrides.set("STOP_LOSS_PERCENT", "not a number", updated_by="tester", at=now)
        session.commit()
    cluster.start_standard()
    specs = cluster.start_session(trading_date=SESSION_DATE, seed=SEED, minutes=30, speed=60.0)
    control = RedisControl(cluster.redis_url, ACCOUNT)
    view = wait_until(control.view, what="the holder's view", details=cluster.logs)
    assert view.limits["max_open_positions"] == 1
    cluster.wait_finished(specs)
    with db_session(cluster.pg_url) as session:
        skipped = session.execute(
            text("SELECT entity_id FROM audit_logs WHERE event = 'setting.override_skipped'")
        ).scalars()
        assert list(skipped) == ["STOP_LOSS_PERCENT"]


STRATEGY_FILE = '''
from upstox_bot.domain import SignalType
from upstox_bot.signals.base import Strategy, StrategySignal


class AlwaysLong(Strategy):
    """Wants in on every candle: every entry competes for the position slots."""

    name = "always_long"
    parameters = ()

    @property
    def startup_candles(self) -> int:
        return 1

    def evaluate(self, series, *, position, now):
        if position is not None:
            return []
        return [StrategySignal(type=SignalType.ENTRY_LONG, strength=1.0, reason="always")]
'''


def test_two_orders_workers_hold_the_account_once_and_keep_the_position_limit(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "always_long.py").write_text(STRATEGY_FILE)
    cluster = cluster_factory(
        STRATEGY="always_long",
        STRATEGIES_DIR=str(strategies),
        MAX_OPEN_POSITIONS="2",
        MIN_ORDER_INTERVAL_SECONDS="0",
        MAX_ORDERS_PER_MINUTE="1000",
        SIGNAL_COOLDOWN_MINUTES="0",
    )
    cluster.start_worker("feed-a", "feed", concurrency=2)
    cluster.start_worker("orders-a", "orders")
    cluster.start_worker("orders-b", "orders")
    cluster.start_worker("misc", "ingest,default", concurrency=2)
    cluster.wait_ready("orders-a", "orders-b")
    specs = cluster.start_session(trading_date=SESSION_DATE, seed=SEED, minutes=30, shards=2)
    for _ in range(3):
        cluster.enqueue("orders.hold_account", (ACCOUNT,))  # both workers try
    cluster.wait_finished(specs)
    got = Book.read(cluster.pg_url)
    got.assert_consistent()
    events: list[tuple[Any, int]] = []
    for position, _status, closed_at, _pnl in got.positions:
        events.append((position.entry_at, 1))
        if closed_at is not None:
            events.append((closed_at, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    peak = max(itertools.accumulate(delta for _, delta in events))
    assert peak == 2
    with db_session(cluster.pg_url) as session:
        refused = session.execute(
            text("SELECT count(*) FROM risk_decisions WHERE rule = 'max_positions'")
        ).scalar_one()
    assert refused > 0, "entries beyond the limit were refused"
