"""The distributed path's speed: candle close to paper order through Celery, and signal scans.

Plays one seeded simulated session twice: embedded (the Engine in this process, as
`upstox-bot run` drives it) and distributed (real Celery worker processes: a feed worker, an
orders worker and an ingest worker on the local Redis and PostgreSQL). It prints the latency
from the candle's closing tick to its entry order being sent, p50 and p99, for each path and as
a ratio against the embedded one measured in the same run. Both use the same measure as the
`upstox_bot_candle_to_order_seconds` metric: the embedded loop times the closing tick's
`on_tick` and the placement of its intents; the distributed engine times from the feed cutting
the batch that holds the closing tick to the orders being sent (so it includes Redis, the apply
task, the account lock and the commit of the batch before it).

Then it enqueues `signals.evaluate` scans of the session's instruments (their candles are in
PostgreSQL now) with one and with two signal workers, and prints evaluations per second and
the ratio two vs one.

    python benchmarks/bench_distributed.py [--minutes 180] [--evaluations 1500]

Needs PostgreSQL (UPSTOX_BOT_TEST_POSTGRES_URL, default the local `test` database) and Redis
(REDIS_SERVER, default the local server). It claims a free Redis database among 8-15 the way
the integration tests do, creates its own PostgreSQL database, and removes both, and stops its
worker processes, when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from sqlalchemy import make_url, text

from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.session import make_engine
from upstox_bot.feed.sim import load_universe
from upstox_bot.runtime.distributed import FeedSpec, feed_progress, start_session
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions
from upstox_bot.worker.queues import route
from upstox_bot.worker.state import Keys

DAY = date(2026, 11, 25)
SEED = 7
ACCOUNT = "paper"
POSTGRES = os.environ.get(
    "UPSTOX_BOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis://127.0.0.1:6379")
CLAIM_KEY = "upstox-bot-test-claim"  # the integration tests' claim on a Redis database
CLI = (sys.executable, "-m", "upstox_bot.cli")
# More entries than the defaults allow, so that the percentiles rest on more orders; both
# paths run with the same settings.
KNOBS = {
    "MAX_OPEN_POSITIONS": "10",
    "MIN_ORDER_INTERVAL_SECONDS": "0",
    "MAX_ORDERS_PER_MINUTE": "1000",
    "POSITION_SIZE_PERCENT": "10",
}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def embedded_latencies(workdir: Path, minutes: float) -> list[float]:
    """Candle-close-to-order latencies (s) of the embedded harness over the session."""
    values: dict[str, Any] = {
        "_env_file": None,
        "DATA_DIR": workdir,
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "ACCOUNT_NAME": ACCOUNT,
        "LOG_LEVEL": "WARNING",
        **KNOBS,
    }
    settings = Settings(**values)
    options = RunOptions(
        speed=1_000_000,
        duration_minutes=minutes,
        seed=SEED,
        start_date=DAY,
        serve_api=False,
        live_console=False,
    )
    bot = EmbeddedBot(settings, options)
    try:
        asyncio.run(bot.run_market())
        return list(bot.stats.candle_to_order_s)
    finally:
        bot.close()


@contextmanager
def claimed_redis_db() -> Iterator[str]:
    """A free Redis database among 8-15, claimed as the integration tests claim one."""
    for db in range(15, 7, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{db}")
        if client.set(CLAIM_KEY, os.getpid(), nx=True, ex=3600):
            break
        client.close()
    else:
        raise SystemExit("no free Redis database (8-15)")
    url = f"{REDIS_SERVER}/{db}"
    try:
        client.flushdb()
        client.set(CLAIM_KEY, os.getpid(), ex=3600)
        yield url
    finally:
        client.flushdb()  # also drops the claim
        client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards."""
    server = make_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"upstox_bot_bench_{uuid.uuid4().hex[:12]}"
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


class Workers:
    """Celery worker processes of the benchmark (solo pool, one queue set each)."""

    def __init__(self, env: dict[str, str], workdir: Path, redis_url: str) -> None:
        self.env = env
        self.workdir = workdir
        self.app = Celery(broker=redis_url, set_as_current=False)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, queues: str) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [*CLI, "worker", "--queues", queues, "--pool", "solo", "--name", f"{name}@bench"],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, *names: str, timeout_s: float = 90) -> None:
        wanted = {f"{n}@bench" for n in names}
        deadline = time.monotonic() + timeout_s
        while not wanted <= {
            node for reply in self.app.control.ping(timeout=1.0) for node in reply
        }:
            if time.monotonic() > deadline:
                raise SystemExit(f"workers {sorted(wanted)} did not start")

    def send(self, name: str, *args: Any) -> None:
        self.app.send_task(name, args=list(args), queue=route(name))

    def enqueue(self, name: str, args: Sequence[Any]) -> None:
        self.send(name, *args)

    def completed(self, task: str, names: list[str]) -> int:
        """How many `task` runs the named workers have finished (Celery's own counters)."""
        stats = self.app.control.inspect(
            destination=[f"{n}@bench" for n in names], timeout=1.0
        ).stats()
        return sum(int(s.get("total", {}).get(task, 0)) for s in (stats or {}).values())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def distributed_latencies(workers: Workers, client: redis.Redis, minutes: float) -> list[float]:
    spec = FeedSpec(account=ACCOUNT, shard="bench", trading_date=DAY, seed=SEED, minutes=minutes)
    start_session(client, workers.enqueue, [spec])
    deadline = time.monotonic() + 600
    while not feed_progress(client, ACCOUNT, spec.shard).finished:
        if time.monotonic() > deadline:
            raise SystemExit("the distributed session did not finish in 10 minutes")
        time.sleep(0.2)
    raw = client.lrange(Keys.latencies(ACCOUNT), 0, -1)
    return [float(x) for x in raw]


def evaluations_per_second(
    workers: Workers, names: list[str], keys: list[str], count: int
) -> float:
    """Scan rate of the named signal workers over `count` evaluations of the instruments."""
    task = "signals.evaluate"
    warm_up = keys[: len(names) * 4]  # strategy loaded, connections open
    target = workers.completed(task, names) + len(warm_up)
    for key in warm_up:
        workers.send(task, key)
    while workers.completed(task, names) < target:
        time.sleep(0.2)
    before = workers.completed(task, names)
    started = time.perf_counter()
    for n in range(count):
        workers.send(task, keys[n % len(keys)])
    while workers.completed(task, names) < before + count:
        time.sleep(0.05)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=180, help="simulated session minutes")
    parser.add_argument("--evaluations", type=int, default=1500, help="signal scans per run")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="upstox-bot-bench-") as tmp:
        root = Path(tmp)
        (root / "embedded").mkdir()
        embedded = embedded_latencies(root / "embedded", args.minutes)
        with claimed_redis_db() as redis_url, postgres_database() as pg_url:
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))
            }
            env.update(
                DATABASE_URL=pg_url,
                REDIS_URL=redis_url,
                ACCOUNT_NAME=ACCOUNT,
                DATA_DIR=str(root / "var"),
                LOG_LEVEL="WARNING",
                **KNOBS,
            )
            client = redis.Redis.from_url(redis_url)
            workers = Workers(env, root, redis_url)
            try:
                workers.start("feed", "feed")
                workers.start("orders", "orders")
                workers.start("misc", "ingest,default")
                workers.wait_ready("feed", "orders", "misc")
                celery = distributed_latencies(workers, client, args.minutes)
                keys = [i.instrument_key for i, _ in load_universe(limit=Settings().SIM_SYMBOLS)]
                workers.start("signals-1", "signals")
                workers.wait_ready("signals-1")
                one = evaluations_per_second(workers, ["signals-1"], keys, args.evaluations)
                workers.start("signals-2", "signals")
                workers.wait_ready("signals-2")
                two = evaluations_per_second(
                    workers, ["signals-1", "signals-2"], keys, args.evaluations
                )
            finally:
                workers.stop()
                client.close()
    report(embedded, celery, one, two, args, time.monotonic() - started)


def report(
    embedded: list[float],
    celery: list[float],
    one: float,
    two: float,
    args: argparse.Namespace,
    elapsed_s: float,
) -> None:
    def line(name: str, values: list[float]) -> str:
        if not values:
            return f"  {name:<11} no entry orders"
        p50, p99 = quantile(values, 0.5) * 1000, quantile(values, 0.99) * 1000
        mean = statistics.fmean(values) * 1000
        return (
            f"  {name:<11} p50 {p50:9.3f} ms   p99 {p99:9.3f} ms   mean {mean:9.3f} ms"
            f"   n={len(values)}"
        )

    print(f"session: {args.minutes:g} simulated minutes, seed {SEED}, {DAY.isoformat()}")
    print("candle close -> paper entry order (latency)")
    print(line("embedded", embedded))
    print(line("celery", celery))
    if embedded and celery:
        r50 = quantile(celery, 0.5) / quantile(embedded, 0.5)
        r99 = quantile(celery, 0.99) / quantile(embedded, 0.99)
        print(f"  ratio celery / embedded: p50 {r50:.0f}x   p99 {r99:.0f}x")
    print("signal evaluations per second (signals.evaluate over Celery)")
    print(f"  1 worker  {one:8.1f}/s")
    print(f"  2 workers {two:8.1f}/s   ratio 2 vs 1: {two / one:.2f}")
    print(f"benchmark took {elapsed_s:.0f} s on {os.cpu_count()} cores")


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
