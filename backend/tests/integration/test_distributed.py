"""The distributed harness end to end: real Celery worker processes on the real Redis and
PostgreSQL play a simulated session; what lands in PostgreSQL equals the embedded harness's
SQLite for the same seed, and stays so through crashes, restarts and duplicate deliveries."""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from upstox_bot.db import migrate
from upstox_bot.db.repositories import OrderRepository, PositionRepository, TradeRepository
from upstox_bot.db.session import make_engine
from upstox_bot.domain import OrderStatus
from upstox_bot.runtime.distributed import FeedSpec, feed_progress, start_session
from upstox_bot.worker.queues import route
from upstox_bot.worker.state import RedisPaperBook

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SESSION_DATE = date(2026, 11, 25)
SEED = 7
MINUTES = 90
ACCOUNT = "paper"
BACKEND = Path(__file__).resolve().parents[2]
REDIS_SERVER = "redis://127.0.0.1:6379"
CLAIM_KEY = "upstox-bot-test-claim"  # marks a Redis database as taken by a test run
CLI = (sys.executable, "-m", "upstox_bot.cli")
# The CI machine's Redis: no persistence, so a restart loses every key (the hardest case).
REDIS_START = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' "
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


# --- fixtures: a Redis database, PostgreSQL databases, worker processes ---------------------------


# The databases this test run holds. A Redis restart loses every claim key, so a claim is also
# remembered here and re-asserted after a restart: otherwise a later test could take the database
# of a cluster whose workers still run, and two sets of workers would share one set of queues.
_CLAIMED: set[int] = set()


def _claim_redis_db() -> int:
    for db in range(15, 7, -1):
        if db in _CLAIMED:
            continue
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{db}")
        if client.set(CLAIM_KEY, os.getpid(), nx=True, ex=3600):
            client.close()
            _CLAIMED.add(db)
            return db
        client.close()
    pytest.fail("no free Redis database (8-15) for this test run")


def _reassert_claims() -> None:
    """After a Redis restart: mark every database this run holds as taken again."""
    for db in _CLAIMED:
        redis.Redis.from_url(f"{REDIS_SERVER}/{db}").set(CLAIM_KEY, os.getpid(), ex=3600)


@pytest.fixture(scope="module")
def redis_dbs() -> Iterator[Callable[[], str]]:
    """A factory of Redis databases (flushed) claimed by this test run, released at the end."""
    try:
        redis.Redis.from_url(REDIS_SERVER, socket_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable: {exc}")
        pytest.skip(f"Redis is not reachable: {exc}")
    claimed: list[str] = []

    def claim() -> str:
        url = f"{REDIS_SERVER}/{_claim_redis_db()}"
        _flush(url)
        claimed.append(url)
        return url

    yield claim
    for url in claimed:
        redis.Redis.from_url(url).flushdb()
        _CLAIMED.discard(int(url.rsplit("/", 1)[1]))


def _flush(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.set(CLAIM_KEY, os.getpid(), ex=3600)
    return client


@dataclass
class Cluster:
    """Worker processes of one harness: PostgreSQL database, Redis database, environment."""

    pg_url: str
    redis_url: str
    workdir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def start_worker(
        self, name: str, queues: str, *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [*CLI, "worker", "--queues", queues, "--pool", "solo", "--name", f"{name}@test"],
                env={**self.env, **(env or {})},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def start_standard(self) -> None:
        """A feed worker, an orders worker and a worker for the other queues."""
        self.start_worker("feed", "feed")
        self.start_worker("orders", "orders")
        self.start_worker("misc", "ingest,signals,default")

    def wait_ready(self, *names: str, timeout_s: float = 60) -> None:
        """Wait until the named workers answer a ping (they consume from then on)."""
        app = Celery(broker=self.redis_url, set_as_current=False)
        wanted = {f"{name}@test" for name in names}
        deadline = time.monotonic() + timeout_s
        while True:
            replies = app.control.ping(timeout=1.0)
            if wanted <= {node for reply in replies for node in reply}:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"workers {sorted(wanted)} did not start")

    def enqueue(self, name: str, args: Any) -> None:
        app = Celery(broker=self.redis_url, set_as_current=False)
        app.send_task(name, args=list(args), queue=route(name))

    def start_session(self, minutes: float = MINUTES, shards: int = 1) -> list[FeedSpec]:
        specs = [
            FeedSpec(
                account=ACCOUNT,
                shard=f"s{n}",
                trading_date=SESSION_DATE,
                seed=SEED,
                minutes=minutes,
                instrument_keys=self.shard_keys(n, shards),
            )
            for n in range(shards)
        ]
        start_session(self.redis, self.enqueue, specs)
        return specs

    @staticmethod
    def shard_keys(n: int, shards: int) -> tuple[str, ...]:
        if shards == 1:
            return ()
        from upstox_bot.feed.sim import load_universe

        keys = [i.instrument_key for i, _ in load_universe(limit=40)]
        return tuple(keys[n::shards])

    def wait_finished(
        self,
        specs: list[FeedSpec],
        timeout_s: float = 120,
        during: Callable[[], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if all(feed_progress(self.redis, ACCOUNT, s.shard).finished for s in specs):
                    return
            except redis.ConnectionError:
                pass  # Redis is restarting
            if during is not None:
                during()
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-3000:] for p in self.workdir.glob("*.log")}
                pytest.fail(f"the session did not finish in {timeout_s} s; logs: {logs}")
            time.sleep(0.2)

    def applied(self, shard: str = "s0") -> int:
        try:
            return feed_progress(self.redis, ACCOUNT, shard).applied_seq
        except redis.ConnectionError:
            return 0

    def wait_applied(self, seq: int, shard: str = "s0", timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.applied(shard) < seq:
            if time.monotonic() > deadline:
                pytest.fail(f"batch {seq} was not applied in {timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster_factory(
    new_postgres_url: Callable[[], str],
    redis_dbs: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        pg_url = new_postgres_url()
        migrate.upgrade(pg_url)
        redis_url = redis_dbs()
        workdir = tmp_path_factory.mktemp("cluster")
        env = {
            **os.environ,
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            "ACCOUNT_NAME": ACCOUNT,
            "DATA_DIR": str(workdir / "var"),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            **settings,
        }
        env.pop("UPSTOX_BOT_FAULT", None)
        cluster = Cluster(pg_url, redis_url, workdir, env)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@contextmanager
def _session(url: str) -> Iterator[Session]:
    engine: Engine = make_engine(url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


# --- what the databases hold ---------------------------------------------------------------------


@dataclass(frozen=True)
class Book:
    """Orders, trades and positions of the account, comparable across databases."""

    orders: list[Any]
    trades: list[Any]
    positions: list[Any]
    fills: dict[str, int]
    sent: int

    @classmethod
    def read(cls, url: str) -> Book:
        with _session(url) as session:
            orders = OrderRepository(session, ACCOUNT).find(limit=10_000)
            trades = TradeRepository(session, ACCOUNT).find(limit=10_000)
            positions = [
                (r.position, r.status, r.closed_at, r.realised_pnl_paise)
                for r in PositionRepository(session, ACCOUNT).history(limit=10_000)
            ]
            fills: dict[str, int] = {
                o.client_order_id: len(OrderRepository(session, ACCOUNT).fills(o.client_order_id))
                for o in orders
            }
            sent = session.execute(text("SELECT count(*) FROM rate_limit_logs")).scalar_one()
        return cls(
            sorted(orders, key=lambda o: o.client_order_id),
            sorted(trades, key=lambda t: t.trade_id),
            sorted(positions, key=lambda p: (p[0].entry_at, p[0].instrument_key)),
            fills,
            sent,
        )

    def assert_consistent(self) -> None:
        """Nothing lost, nothing doubled: each order sent once, filled once, accounted for."""
        assert self.orders, "the session should have traded"
        assert self.sent == len(self.orders), "every order is sent exactly once"
        for order in self.orders:
            assert order.status in (OrderStatus.FILLED, OrderStatus.OPEN), order
            expected = 1 if order.status is OrderStatus.FILLED else 0
            assert self.fills[order.client_order_id] == expected, order
        closed = [p for p in self.positions if p[1].value == "closed"]
        assert len(closed) == len(self.trades)
        assert len({t.entry_order_id for t in self.trades}) == len(self.trades)
        entries = {o.client_order_id for o in self.orders if o.purpose.value == "entry"}
        assert {p[0].entry_order_id for p in self.positions} == entries


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Book:
    """The embedded harness's session on SQLite, same seed, date and duration."""
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
        timeout=120,
    )
    book = Book.read(f"sqlite:///{tmp / 'upstox_bot.sqlite'}")
    assert len(book.trades) >= 5, "the embedded session should trade enough to compare"
    return book


def assert_same_book(got: Book, want: Book) -> None:
    assert got.trades == want.trades
    assert got.orders == want.orders
    assert got.positions == want.positions
    assert got.fills == want.fills
    assert got.sent == want.sent


def _paper_book_tags(cluster: Cluster) -> dict[str, OrderStatus]:
    book = RedisPaperBook(cluster.redis, ACCOUNT)
    raw = cluster.redis.hkeys(f"ub:paper:{ACCOUNT}:orders")
    tags = [k.decode() if isinstance(k, bytes) else k for k in raw]
    return {tag: book.get(tag).status for tag in tags}  # type: ignore[union-attr]


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def played(
    new_postgres_url: Callable[[], str],
    redis_dbs: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """One session played by a feed worker and an orders worker; the workers keep running."""
    pg_url = new_postgres_url()
    migrate.upgrade(pg_url)
    redis_url = redis_dbs()
    workdir = tmp_path_factory.mktemp("played")
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "ACCOUNT_NAME": ACCOUNT,
        "DATA_DIR": str(workdir / "var"),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("UPSTOX_BOT_FAULT", None)
    cluster = Cluster(pg_url, redis_url, workdir, env)
    try:
        cluster.start_standard()
        cluster.wait_finished(cluster.start_session())
        yield cluster
    finally:
        cluster.stop()


def test_distributed_session_equals_embedded(played: Cluster, embedded: Book) -> None:
    got = Book.read(played.pg_url)
    got.assert_consistent()
    assert_same_book(got, embedded)
    assert _paper_book_tags(played) == {o.client_order_id: o.status for o in got.orders}


def test_same_tasks_delivered_twice_change_nothing(played: Cluster) -> None:
    before = Book.read(played.pg_url)
    open_keys = [p[0].instrument_key for p in before.positions if p[1].value == "open"]
    assert open_keys, "the 90-minute session ends with a position open"
    for seq in range(1, feed_progress(played.redis, ACCOUNT, "s0").next_seq):
        played.enqueue("orders.apply_ticks", (ACCOUNT, "s0", seq))
        played.enqueue("orders.apply_ticks", (ACCOUNT, "s0", seq))
        played.enqueue("ingest.ticks", (ACCOUNT, "s0", seq))
    played.start_session()  # the feed task again: its shard is finished
    for _ in range(2):
        played.enqueue("orders.exit_position", (ACCOUNT, open_keys[0], "manual", "test"))
    deadline = time.monotonic() + 30
    while any(played.redis.llen(q) for q in ("orders", "feed", "ingest")):
        assert time.monotonic() < deadline, "the queues should drain"
        time.sleep(0.1)
    time.sleep(1.0)  # the last task runs after its message left the queue
    after = Book.read(played.pg_url)
    assert after.trades == before.trades
    exits = [o for o in after.orders if o not in before.orders]
    assert len(exits) == 1, "two exit requests for one position make one exit order"
    assert exits[0].instrument_key == open_keys[0]
    assert exits[0].status is OrderStatus.OPEN  # no tick left to fill it
    assert [o for o in after.orders if o in before.orders] == before.orders
    assert after.sent == before.sent + 1


def test_worker_health_check_pings_the_running_workers(
    played: Cluster, redis_dbs: Callable[[], str]
) -> None:
    check = [*CLI, "worker", "--check"]
    result = subprocess.run(check, env=played.env, cwd=played.workdir, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert b"orders@test" in result.stdout
    idle = {**played.env, "REDIS_URL": redis_dbs()}
    result = subprocess.run(check, env=idle, cwd=played.workdir, capture_output=True)
    assert result.returncode == 1  # nobody answers on a broker without workers


def test_worker_killed_after_broker_accepted_leaves_one_order(
    cluster_factory: Callable[..., Cluster], embedded: Book
) -> None:
    cluster = cluster_factory()
    cluster.start_worker("feed", "feed")
    cluster.start_worker("misc", "ingest,signals,default")
    doomed = cluster.start_worker("orders", "orders", env={"UPSTOX_BOT_FAULT": "kill-after-place"})
    specs = cluster.start_session()
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    (tag,) = _paper_book_tags(cluster)  # the broker accepted the order...
    with _session(cluster.pg_url) as session:
        order = OrderRepository(session, ACCOUNT).get(tag)
    assert order.status is OrderStatus.SUBMITTING  # ...and the database never heard back
    cluster.start_worker("orders-2", "orders")
    cluster.wait_finished(specs)
    got = Book.read(cluster.pg_url)
    got.assert_consistent()
    assert [o.client_order_id for o in got.orders].count(tag) == 1
    assert _paper_book_tags(cluster) == {o.client_order_id: o.status for o in got.orders}
    assert_same_book(got, embedded)


def _restart_redis() -> None:
    subprocess.run(["redis-cli", "shutdown", "nosave"], check=False, capture_output=True)
    time.sleep(0.3)
    _start_redis()


def _start_redis() -> None:
    for _ in range(50):
        try:
            redis.Redis.from_url(REDIS_SERVER, socket_timeout=1).ping()
            return
        except redis.ConnectionError:
            subprocess.run(shlex.split(REDIS_START), check=False, capture_output=True)
            time.sleep(0.2)
    pytest.fail("Redis did not come back")


def test_redis_restart_in_the_session_loses_and_doubles_nothing(
    cluster_factory: Callable[..., Cluster], embedded: Book
) -> None:
    cluster = cluster_factory()
    cluster.start_standard()
    specs = cluster.start_session()
    cluster.wait_applied(40)
    try:
        _restart_redis()
    finally:
        _start_redis()
        _reassert_claims()
    cluster.wait_finished(specs, timeout_s=150)
    got = Book.read(cluster.pg_url)
    got.assert_consistent()
    assert_same_book(got, embedded)


def _restart_postgres() -> None:
    (version,) = os.listdir("/etc/postgresql")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_postgres_restart_in_the_session_loses_and_doubles_nothing(
    cluster_factory: Callable[..., Cluster], embedded: Book
) -> None:
    if not Path("/etc/postgresql").is_dir():
        pytest.skip("no local PostgreSQL cluster to restart")
    cluster = cluster_factory()
    cluster.start_standard()
    specs = cluster.start_session()
    cluster.wait_applied(40)
    try:
        _restart_postgres()
    finally:
        engine = make_engine(cluster.pg_url)
        for _ in range(100):
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                break
            except Exception:
                time.sleep(0.2)
        engine.dispose()
    cluster.wait_finished(specs, timeout_s=150)
    got = Book.read(cluster.pg_url)
    got.assert_consistent()
    assert_same_book(got, embedded)


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


def test_two_workers_racing_for_the_last_position_slot_take_it_once(
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
    cluster.start_worker("feed-a", "feed")
    cluster.start_worker("feed-b", "feed")
    cluster.start_worker("orders-a", "orders")
    cluster.start_worker("orders-b", "orders")
    cluster.start_worker("misc", "ingest,default")
    cluster.wait_ready("orders-a", "orders-b")
    specs = cluster.start_session(minutes=30, shards=2)
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
    with _session(cluster.pg_url) as session:
        refused = session.execute(
            text("SELECT count(*) FROM risk_decisions WHERE rule = 'max_positions'")
        ).scalar_one()
    assert refused > 0, "entries beyond the limit were refused"
