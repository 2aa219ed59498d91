"""Candle close to order handed to the broker, embedded and distributed, paced as live.

Plays the same seeded simulated session twice at the same pace (SIM speed 20 by default: the
feed is paced, so neither engine is behind it):

- embedded: the account's kernel in this process, as `upstox-bot run` drives it (SQLite);
- distributed: real Celery worker processes as deployed (prefork pool: a feed worker, the
  orders worker holding the account's kernel, an ingest worker) on a Redis server of its own
  and a PostgreSQL database, the session started as `upstox-bot session start` starts it.

Both measure the same thing: from the moment the closing tick of a candle reached the harness
(embedded: the loop took the tick; distributed: the tick was due at the feed, at its paced wall
time) to the entry orders it caused being handed to the broker, after they were made durable
(the `upstox_bot_candle_to_order_seconds` metric). It prints p50, p99 and the mean of each, the
ratio distributed / embedded measured in the same run, and as its last line:

    candle-to-order p99: embedded X ms, distributed Y ms

    python benchmarks/bench_distributed.py [--minutes 40] [--speed 20]

Needs PostgreSQL (UPSTOX_BOT_TEST_POSTGRES_URL, default the local `test` database, where it
creates and drops a database of its own) and redis-server on the PATH (it starts its own).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text

BACKEND = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BACKEND))  # the test support: a Redis server, the worker cluster

from tests.support.cluster import ACCOUNT, Cluster  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from upstox_bot.config import Settings  # noqa: E402
from upstox_bot.db import migrate  # noqa: E402
from upstox_bot.db.session import make_engine  # noqa: E402
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions  # noqa: E402
from upstox_bot.worker.state import Keys  # noqa: E402

DAY = date(2026, 11, 25)
SEED = 7
POSTGRES = os.environ.get(
    "UPSTOX_BOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# More entries than the defaults allow, so that the percentiles rest on more orders; both
# harnesses run with the same settings.
KNOBS = {
    "MAX_OPEN_POSITIONS": "10",
    "MIN_ORDER_INTERVAL_SECONDS": "0",
    "MAX_ORDERS_PER_MINUTE": "1000",
    "POSITION_SIZE_PERCENT": "10",
    "SIGNAL_COOLDOWN_MINUTES": "0",
}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def embedded_latencies(workdir: Path, minutes: float, speed: float) -> list[float]:
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
        speed=speed,
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
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database, migrated to head, dropped at the end."""
    admin = make_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"upstox_bot_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def distributed_latencies(root: Path, minutes: float, speed: float) -> list[float]:
    """Candle-close-to-order latencies (s) of the workers over the same session."""
    server = RedisServer(root / "redis")
    server.start()
    try:
        with postgres_database() as pg_url:
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))
            }
            env.update(
                DATABASE_URL=pg_url,
                REDIS_URL=f"{server.url}/0",
                ACCOUNT_NAME=ACCOUNT,
                DATA_DIR=str(root / "var"),
                LOG_LEVEL="WARNING",
                **KNOBS,
            )
            cluster = Cluster(pg_url, env["REDIS_URL"], root, env, server)
            try:
                cluster.start_standard()
                cluster.wait_ready("feed", "orders", "misc")
                specs = cluster.start_session(
                    trading_date=DAY, seed=SEED, minutes=minutes, speed=speed
                )
                started = time.monotonic()
                while not cluster.finished(specs):
                    if time.monotonic() - started > 60 + 2 * minutes * 60 / speed:
                        raise SystemExit(
                            f"the distributed session did not finish: {cluster.logs()}"
                        )
                    time.sleep(0.5)
                raw = cluster.redis.lrange(Keys.latencies(ACCOUNT), 0, -1)
                return [float(x) for x in raw]  # type: ignore[union-attr]
            finally:
                cluster.stop()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=40, help="simulated session minutes")
    parser.add_argument("--speed", type=float, default=20, help="simulated seconds per second")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="upstox-bot-bench-") as tmp:
        root = Path(tmp)
        (root / "embedded").mkdir()
        embedded = embedded_latencies(root / "embedded", args.minutes, args.speed)
        distributed = distributed_latencies(root / "distributed", args.minutes, args.speed)
    report(embedded, distributed, args, time.monotonic() - started)


def report(
    embedded: list[float], distributed: list[float], args: argparse.Namespace, elapsed_s: float
) -> None:
    def line(name: str, values: list[float]) -> str:
        if not values:
            return f"  {name:<12} no entry orders"
        p50, p99 = quantile(values, 0.5) * 1000, quantile(values, 0.99) * 1000
        mean = statistics.fmean(values) * 1000
        return (
            f"  {name:<12} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   mean {mean:8.2f} ms"
            f"   n={len(values)}"
        )

    print(
        f"session: {args.minutes:g} simulated minutes at speed {args.speed:g}, seed {SEED}, "
        f"{DAY.isoformat()} ({elapsed_s:.0f} s in all)"
    )
    print("candle close -> entry order handed to the broker (durable first)")
    print(line("embedded", embedded))
    print(line("distributed", distributed))
    if not (embedded and distributed):
        raise SystemExit("a harness placed no entry order: nothing to compare")
    r50 = quantile(distributed, 0.5) / quantile(embedded, 0.5)
    r99 = quantile(distributed, 0.99) / quantile(embedded, 0.99)
    print(f"  ratio distributed / embedded: p50 {r50:.1f}x   p99 {r99:.1f}x")
    print(
        f"candle-to-order p99: embedded {quantile(embedded, 0.99) * 1000:.1f} ms, "
        f"distributed {quantile(distributed, 0.99) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
