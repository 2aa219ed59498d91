"""The distributed harness as deployed, for tests: Celery worker processes (the prefork pool by
default) on a Redis server of their own and a PostgreSQL database, driven through the CLI and
Redis; and `Book`, what an account's records say, comparable across databases and harnesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from tests.support.servers import RedisServer
from tests.support.waiting import wait_until
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.models import TickRow
from upstox_bot.db.repositories import OrderRepository, PositionRepository, TradeRepository
from upstox_bot.db.session import make_engine
from upstox_bot.domain import OrderStatus
from upstox_bot.runtime.distributed.sessions import start_sim_session
from upstox_bot.runtime.distributed.shards import FeedSpec, feed_progress
from upstox_bot.worker.queues import route
from upstox_bot.worker.state import Keys

ACCOUNT = "paper"
CLI = (sys.executable, "-m", "upstox_bot.cli")


@dataclass
class Cluster:
    """Worker processes of one deployment: its PostgreSQL and Redis URLs and environment, and
    its own Redis server."""

    pg_url: str
    redis_url: str
    workdir: Path
    env: dict[str, str]
    redis_server: RedisServer
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def deploy(cls, pg_url: str, workdir: Path, **settings: str) -> Cluster:
        """A deployment on `pg_url` (migrated here) and a Redis server of its own (a test may
        restart or empty it), in `workdir`; `settings` are added to its environment."""
        migrate.upgrade(pg_url)
        server = RedisServer(workdir / "redis")
        server.start()
        env = {
            **os.environ,
            "DATABASE_URL": pg_url,
            "REDIS_URL": f"{server.url}/0",
            "ACCOUNT_NAME": ACCOUNT,
            "DATA_DIR": str(workdir / "var"),
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            **settings,
        }
        env.pop("UPSTOX_BOT_FAULT", None)  # a fault is injected into one worker, never all
        return cls(pg_url, env["REDIS_URL"], workdir, env, redis_server=server)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    @property
    def settings(self) -> Settings:
        values: dict[str, Any] = {k: v for k, v in self.env.items() if k in Settings.model_fields}
        return Settings(_env_file=None, **values)

    def start_worker(
        self,
        name: str,
        queues: str,
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """A worker of its own process group (a SIGKILL of the group takes its pool too)."""
        with (self.workdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    *CLI,
                    "worker",
                    "--queues",
                    queues,
                    "--pool",
                    pool,
                    "--concurrency",
                    str(concurrency),
                    "--name",
                    f"{name}@test",
                ],
                env={**self.env, **(env or {})},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_beat(self) -> subprocess.Popen[bytes]:
        """Celery beat (its supervisor restarts feeds and holders every 2 s)."""
        with (self.workdir / "beat.log").open("ab") as log:
            proc = subprocess.Popen(
                [*CLI, "beat"],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs["beat"] = proc
        return proc

    def start_standard(self) -> None:
        """As docker-compose.yml deploys them: feed (2 slots), orders, ingest and default."""
        self.start_worker("feed", "feed", concurrency=2)
        self.start_worker("orders", "orders")
        self.start_worker("misc", "ingest,signals,default", concurrency=2)

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its pool (a machine or container dying)."""
        proc = self.procs[name]
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def wait_ready(self, *names: str) -> None:
        """Wait until the named workers answer a ping (they consume from then on)."""
        app = Celery(broker=self.redis_url, set_as_current=False)
        wanted = {f"{name}@test" for name in names}

        def answered() -> bool:
            replies = app.control.ping(timeout=1.0)
            return wanted <= {node for reply in replies for node in reply}

        wait_until(answered, what=f"workers {sorted(wanted)} to answer", details=self.logs)

    def enqueue(self, name: str, args: Any) -> None:
        app = Celery(broker=self.redis_url, set_as_current=False)
        app.send_task(name, args=list(args), queue=route(name))

    def start_session(
        self,
        *,
        trading_date: date,
        seed: int,
        minutes: float,
        shards: int = 1,
        speed: float | None = None,
    ) -> list[FeedSpec]:
        return start_sim_session(
            self.settings,
            self.redis,
            self.enqueue,
            trading_date=trading_date,
            speed=speed,
            seed=seed,
            minutes=minutes,
            shards=shards,
            sessions=self.sessions,
        )

    @property
    def sessions(self) -> Any:
        from upstox_bot.db.session import make_session_factory

        if not hasattr(self, "_sessions"):
            self._sessions = make_session_factory(make_engine(self.pg_url))
        return self._sessions

    def finished(self, specs: list[FeedSpec]) -> bool:
        """Every shard played and applied, its feed done (its ticks stored) and the holder
        gone."""
        try:
            client = self.redis
            return (
                all(feed_progress(client, ACCOUNT, s.shard).finished for s in specs)
                and not any(client.exists(Keys.feed_lease(s.shard)) for s in specs)
                and not client.exists(Keys.account_lock(ACCOUNT))
            )
        except redis.RedisError:
            return False  # Redis is restarting

    def wait_finished(
        self, specs: list[FeedSpec], during: Callable[[], None] | None = None
    ) -> None:
        """Wait until every shard was played and applied and the holder let the account go."""

        def done() -> bool:
            if during is not None:
                during()
            return self.finished(specs)

        wait_until(done, what="the session to finish", within_s=240, details=self.logs)

    def applied(self, shard: str) -> int:
        try:
            return feed_progress(self.redis, ACCOUNT, shard).applied_seq
        except redis.RedisError:
            return 0

    def wait_applied(self, seq: int, shard: str) -> None:
        wait_until(
            lambda: self.applied(shard) >= seq,
            what=f"batch {seq} of {shard} to be applied",
            details=self.logs,
        )

    def holder_pid(self) -> int | None:
        raw = self.redis.get(Keys.account_lock(ACCOUNT))
        if raw is None:
            return None
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        return int(value.split(":")[-2])  # "<host>:<pid>:<fencing token>"

    def logs(self) -> str:
        return str({p.name: p.read_text()[-4000:] for p in self.workdir.glob("*.log")})

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.redis_server.stop()


@contextmanager
def db_session(url: str) -> Iterator[Session]:
    engine: Engine = make_engine(url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


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
        with db_session(url) as session:
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


def _first_difference(got: list[Any], want: list[Any]) -> str:
    for n, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"item {n}: got {a!r}, want {b!r}"
    return f"lengths: got {len(got)}, want {len(want)}"


def assert_same_book(got: Book, want: Book) -> None:
    assert got.trades == want.trades, _first_difference(got.trades, want.trades)
    assert got.orders == want.orders, _first_difference(got.orders, want.orders)
    assert got.positions == want.positions, _first_difference(got.positions, want.positions)
    assert got.fills == want.fills
    assert got.sent == want.sent


def stored_ticks(url: str) -> list[tuple[Any, ...]]:
    """The ticks kept for the record (instrument, time, price), in order."""
    with db_session(url) as session:
        rows = session.execute(
            select(TickRow.instrument_key, TickRow.ts, TickRow.ltp_paise).order_by(
                TickRow.instrument_key, TickRow.ts, TickRow.ltp_paise
            )
        ).all()
    return [tuple(r) for r in rows]
