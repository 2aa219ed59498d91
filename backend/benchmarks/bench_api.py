"""API speed over loopback: GET /api/v1/positions and /api/v1/signals against GET /health.

The server is `upstox-bot api` in its own process over a SQLite database holding 10,000 signals
and three open positions; this process is the load generator (httpx, a fixed number of
concurrent connections, a bounded number of requests and a time limit per endpoint). For each
endpoint it prints requests per second and the p50/p99 latency, and the ratio to the baseline,
GET /health (no key, one `SELECT 1`), measured in the same run.

Usage: python benchmarks/bench_api.py [requests_per_endpoint] [concurrency]
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.models import AccountMode, ApiKeyScope
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.api_keys import ApiKeyRepository
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    ClientOrderId,
    Direction,
    Instrument,
    Position,
    Signal,
    SignalId,
    SignalStatus,
    SignalType,
    datetime_to_ms,
)

SIGNALS = 10_000
TIME_LIMIT_S = 20.0


def fill_database(settings: Settings) -> str:
    """10,000 signals over 50 symbols, three open positions, a read key; returns the key."""
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    account = settings.ACCOUNT_NAME
    start = datetime(2026, 11, 25, 3, 50, tzinfo=UTC)
    instruments = [
        Instrument(instrument_key=f"NSE_EQ|BENCH{i:04d}", trading_symbol=f"BENCH{i}")
        for i in range(50)
    ]
    with session_scope(make_session_factory(engine)) as session:
        SymbolRepository(session).upsert_many(instruments, start)
        AccountRepository(session).get_or_create(
            account, mode=AccountMode.PAPER, starting_capital_paise=10_000_000, at=start
        )
        journal = SqlJournal(session, account)
        for n in range(SIGNALS):
            at = start + timedelta(seconds=n)
            journal.signal(
                Signal(
                    signal_id=SignalId(f"sg-bench-{n}"),
                    instrument_key=instruments[n % 50].instrument_key,
                    strategy="ema_rsi",
                    type=SignalType.ENTRY_LONG,
                    strength=(n % 100) / 100,
                    reason="bench",
                    price_paise=100_000 + n,
                    candle_start_ms=datetime_to_ms(at),
                    created_at=at,
                    indicators={"ema_fast": 1000.0, "ema_slow": 999.0, "rsi": 55.0},
                ),
                SignalStatus.ACCEPTED,
            )
        for i in range(3):
            journal.position_opened(
                Position(
                    instrument_key=instruments[i].instrument_key,
                    direction=Direction.LONG,
                    quantity=10,
                    lots=10,
                    entry_price_paise=100_000,
                    entry_at=start,
                    entry_order_id=ClientOrderId(f"ub-bench-{i}"),
                    stop_paise=95_000,
                    target_paise=104_000,
                    best_price_paise=100_000,
                    last_price_paise=100_500,
                    strategy="ema_rsi",
                )
            )
        _record, key = ApiKeyRepository(session).create("bench", ApiKeyScope.READ, start)
    engine.dispose()
    return key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(
    base_url: str, path: str, key: str, requests: int, concurrency: int
) -> tuple[int, float, list[float]]:
    """Send `requests` GETs from `concurrency` connections; (ok count, seconds, latencies)."""
    latencies: list[float] = []
    remaining = requests
    deadline = time.perf_counter() + TIME_LIMIT_S
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": key}, limits=limits, timeout=30
    ) as client:
        for _ in range(concurrency):  # warm the connections
            (await client.get(path)).raise_for_status()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                sent = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - sent)
                response.raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies), elapsed, latencies


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        settings = Settings.model_validate({"DATA_DIR": data_dir})
        key = fill_database(settings)
        port = free_port()
        env = {**os.environ, "DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"}
        env.pop("DATABASE_URL", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "upstox_bot.cli", "api", "--port", str(port)],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"{base_url}/health", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            signals = httpx.get(
                f"{base_url}/api/v1/signals", headers={"X-API-Key": key}, params={"limit": 1}
            )
            assert signals.headers["X-Total-Count"] == str(SIGNALS)
            print(
                f"server: `upstox-bot api` (one uvicorn worker, SQLite) on loopback; "
                f"{SIGNALS:,} signals stored; {requests} requests per endpoint, "
                f"{concurrency} connections, at most {TIME_LIMIT_S:.0f} s each"
            )
            results = {}
            for label, path in (
                ("baseline GET /health", "/health"),
                ("GET /api/v1/positions", "/api/v1/positions"),
                ("GET /api/v1/signals (100 per page)", "/api/v1/signals"),
            ):
                count, elapsed, latencies = asyncio.run(
                    load(base_url, path, key, requests, concurrency)
                )
                results[label] = count / elapsed
                ratio = results[label] / results["baseline GET /health"]
                print(
                    f"{label:36s} {count / elapsed:8.0f} req/s  "
                    f"p50 {p(latencies, 0.50) * 1000:6.1f} ms  "
                    f"p99 {p(latencies, 0.99) * 1000:6.1f} ms  "
                    f"mean {statistics.fmean(latencies) * 1000:6.1f} ms  "
                    f"x{ratio:.2f} of baseline"
                )
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
