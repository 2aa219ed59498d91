"""One kernel, two harnesses: a seeded session played through the API by the embedded bot and by
the distributed workers, with the same scripted controls at the same market times (the kill
switch on then off, a manual entry and its close, a parameter change, a strategy switch), ends
in identical orders, trades, positions and audit records.

The controls reach each kernel through its control port; the simulated market is paused at
each control's market time (`POST /session/pause`), so both kernels act on the same ticks.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.support.cluster import ACCOUNT, CLI, Book, Cluster, assert_same_book, db_session
from tests.support.servers import free_port
from tests.support.waiting import wait_until
from upstox_bot.db.models import AuditLogRow
from upstox_bot.domain import IST
from upstox_bot.runtime.distributed.shards import FeedSpec
from upstox_bot.worker.state import Keys

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 11, 25)
SEED = 11
SPEED = 600  # a whole session in about 40 s of wall time
KEY_NAME = "parity"
SETTINGS = {
    "ACCOUNT_NAME": ACCOUNT,
    "LOG_LEVEL": "WARNING",
    "SIM_SYMBOLS": "20",
    "TICK_STORE_INTERVAL_SECONDS": "10",
}


def _create_key(env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [*CLI, "apikey", "create", "--name", KEY_NAME, "--scope", "trade", "--quiet"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip().splitlines()[-1]


def _play_script(api: httpx.Client) -> None:
    """The trader's day: the same requests, at the same market times, in both harnesses."""
    wait_until(
        lambda: api.get("/api/v1/session").json().get("running"), what="the session to start"
    )
    _ok(api.post("/api/v1/session/pause", json={"at": "10:30"}))

    pauses = iter(["10:30", "11:00", "11:30", "12:00", "12:30", "13:00"])

    def at_pause() -> None:
        # Paused at the next pause time (the last tick before it), not still at the previous
        # one: a resume reaches the view a moment after it is answered.
        due = (
            datetime.combine(DAY, time.fromisoformat(next(pauses))) - timedelta(minutes=1)
        ).time()

        def paused() -> bool:
            session = api.get("/api/v1/session").json()
            if session["market"] != "paused" or session["market_time"] is None:
                return False
            at = datetime.fromisoformat(session["market_time"]).astimezone(IST)
            return at.time() >= due

        wait_until(paused, what="the market to pause")

    at_pause()  # 10:30
    _ok(api.post("/api/v1/risk/kill-switch", json={"active": True, "reason": "parity drill"}))
    _ok(api.post("/api/v1/session/resume", json={"pause_at": "11:00"}))
    at_pause()  # 11:00
    _ok(api.post("/api/v1/risk/kill-switch", json={"active": False, "reason": "drill over"}))
    _ok(api.post("/api/v1/session/resume", json={"pause_at": "11:30"}))
    at_pause()  # 11:30: a manual entry (the first instrument the bot holds none of)
    held = {p["instrument_key"] for p in api.get("/api/v1/positions").json()}
    symbols = api.get("/api/v1/symbols", params={"limit": 50}).json()
    items = symbols["items"] if isinstance(symbols, dict) else symbols
    key = next(s["instrument_key"] for s in items if s["instrument_key"] not in held)
    entry = api.post(
        "/api/v1/trades",
        json={"instrument_key": key, "direction": "long", "reason": "parity entry"},
    )
    assert entry.status_code in (201, 409), entry.text
    _ok(api.post("/api/v1/session/resume", json={"pause_at": "12:00"}))
    at_pause()  # 12:00: close what the bot holds first
    positions = api.get("/api/v1/positions").json()
    if positions:
        _ok(api.post(f"/api/v1/positions/{positions[0]['instrument_key']}/close"))
    _ok(api.post("/api/v1/session/resume", json={"pause_at": "12:30"}))
    at_pause()  # 12:30: a parameter change
    _ok(api.put("/api/v1/strategies/ema_rsi/parameters", json={"params": {"rsi_period": 10}}))
    _ok(api.post("/api/v1/session/resume", json={"pause_at": "13:00"}))
    at_pause()  # 13:00: a strategy switch
    _ok(api.post("/api/v1/strategies/sma_crossover/enable"))
    _ok(api.post("/api/v1/session/resume"))


def _ok(response: httpx.Response) -> None:
    assert response.status_code < 300, response.text


def _audits(url: str) -> list[tuple[Any, ...]]:
    with db_session(url) as session:
        rows = session.scalars(select(AuditLogRow)).all()
        return sorted(
            (r.at, r.event, r.entity, r.entity_id, r.actor, repr(sorted(r.data.items())))
            for r in rows
            if r.event not in ("apikey.created",)
        )


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The embedded bot plays the day through its API; returns its database URL."""
    workdir = tmp_path_factory.mktemp("parity-embedded")
    env = {**os.environ, **SETTINGS, "DATA_DIR": str(workdir)}
    for name in ("DATABASE_URL", "REDIS_URL", "UPSTOX_BOT_CRASH_AT"):
        env.pop(name, None)
    key = _create_key(env, workdir)
    port = free_port()
    with (workdir / "run.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                *CLI,
                "run",
                *("--speed", str(SPEED), "--duration", "375", "--seed", str(SEED)),
                *("--date", DAY.isoformat(), "--port", str(port), "--no-live"),
            ],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30
        ) as api:
            wait_until(lambda: _answers(api), what="the embedded API")
            _play_script(api)
        assert proc.wait(timeout=300) == 0, (workdir / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return f"sqlite:///{workdir / 'upstox_bot.sqlite'}"


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def distributed_run(
    new_postgres_url: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The workers play the same day through the API of `upstox-bot api`; returns PostgreSQL."""
    workdir = tmp_path_factory.mktemp("parity-distributed")
    cluster = Cluster.deploy(new_postgres_url(), workdir, **SETTINGS)
    url, env = cluster.pg_url, cluster.env
    port = free_port()
    with (workdir / "api.log").open("wb") as log:
        api_proc = subprocess.Popen(
            [*CLI, "api", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        key = _create_key(env, workdir)
        cluster.start_standard()
        cluster.wait_ready("feed", "orders", "misc")
        started = subprocess.run(
            [
                *CLI,
                "session",
                "start",
                *("--speed", str(SPEED), "--date", DAY.isoformat(), "--seed", str(SEED)),
            ],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr
        specs = [
            FeedSpec.from_json(json.loads(raw))
            for raw in cluster.redis.hgetall(Keys.shards).values()
        ]
        assert specs, "the session's shards are registered"
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30
        ) as api:
            wait_until(lambda: _answers(api), what="the distributed API")
            _play_script(api)
        wait_until(
            lambda: cluster.finished(specs),
            what="the distributed session to finish",
            within_s=300,
            details=cluster.logs,
        )
        yield url
    finally:
        api_proc.terminate()
        api_proc.wait(timeout=30)
        cluster.stop()


def test_both_harnesses_end_in_the_same_records(embedded_run: str, distributed_run: str) -> None:
    embedded, distributed = Book.read(embedded_run), Book.read(distributed_run)
    assert embedded.trades, "the day should trade"
    assert_same_book(distributed, embedded)
    want, got = _audits(embedded_run), _audits(distributed_run)
    events = {row[1] for row in want}
    for expected in ("kill_switch.on", "kill_switch.off", "setting.changed"):
        assert expected in events, f"the script's {expected} is audited"
    assert got == want
