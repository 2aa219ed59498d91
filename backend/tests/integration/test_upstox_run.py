"""`upstox-bot run --market upstox` trades on the Upstox feed (the protocol simulator here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator

RELIANCE = "NSE_EQ|INE002A01018"
BACKEND = Path(__file__).resolve().parents[2]
SAMPLE = resources.files("upstox_bot.data").joinpath("upstox_instruments_sample.json.gz")

sim = pytest.fixture(upstox_simulator)


@pytest.fixture
def trading(sim: UpstoxSimulator) -> Iterator[None]:
    """RELIANCE trades every 50 ms while the test runs."""
    assert sim.feed is not None
    sim.feed.set_instrument(RELIANCE, ltp=1402.5, cp=1390.0, oi=0.0)
    stop = threading.Event()

    def push() -> None:
        price = 1402.5
        while not stop.wait(0.05):
            price += 0.05
            assert sim.feed is not None
            sim.feed.push_ticks(RELIANCE, [round(price, 2)], ltq=5)

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def _env(tmp_path: Path, sim: UpstoxSimulator, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))}
    env.update(
        DATA_DIR=str(tmp_path / "var"),
        UPSTOX_API_BASE_URL=sim.base_url,
        UPSTOX_ACCESS_TOKEN=token,
        PYTHONPATH=str(BACKEND / "src"),
        LOG_LEVEL="WARNING",
        TICK_STORE_INTERVAL_SECONDS="1",
        SIM_SYMBOLS="100",
    )
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "upstox_bot.cli", *args]


def test_run_on_the_upstox_feed_stores_its_ticks_and_stops(
    tmp_path: Path, sim: UpstoxSimulator, trading: None
) -> None:
    env = _env(tmp_path, sim, sim.rest.issue_token())
    refresh = subprocess.run(
        _cli("universe", "refresh", "--file", str(SAMPLE)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refresh.returncode == 0, refresh.stderr
    run = subprocess.run(
        _cli("run", "--market", "upstox", "--duration", "0.1", "--no-api", "--no-live"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'upstox_bot.sqlite'}")
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM ticks WHERE instrument_key = :k"), {"k": RELIANCE}
        ).scalar_one()
    engine.dispose()
    assert stored >= 3  # one a second over the six-second run
    assert sim.feed is not None
    subscribed = {
        key
        for request in sim.feed.requests
        if request.message and request.accepted
        for key in request.message.get("data", {}).get("instrumentKeys", [])
    }
    assert RELIANCE in subscribed


def test_run_on_the_upstox_feed_needs_the_universe(tmp_path: Path, sim: UpstoxSimulator) -> None:
    run = subprocess.run(
        _cli("run", "--market", "upstox", "--no-api", "--no-live"),
        env=_env(tmp_path, sim, "x"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "universe refresh" in run.stderr


def test_live_switches_in_dotenv_without_paper_history_refuse_to_start_unless_forced(
    tmp_path: Path, sim: UpstoxSimulator, trading: None
) -> None:
    env = _env(tmp_path, sim, sim.rest.issue_token())
    refresh = subprocess.run(
        _cli("universe", "refresh", "--file", str(SAMPLE)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refresh.returncode == 0, refresh.stderr
    # the switches come from .env, never through the API's check
    (tmp_path / ".env").write_text(
        "PAPER_TRADING=false\nLIVE_TRADING_ENABLED=true\nMARKET=upstox\n"
    )
    args = ("run", "--market", "upstox", "--duration", "0.05", "--no-api", "--no-live")

    refused = subprocess.run(
        _cli(*args),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    forced = subprocess.run(
        _cli(*args, "--force-live", "tested against the simulator"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())  # the console wraps it
    assert "14 days of paper trading" in message
    assert "--force-live" in message
    assert forced.returncode == 0, forced.stdout + forced.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'upstox_bot.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT actor, data FROM audit_logs WHERE event = 'live.forced'")
        ).all()
    engine.dispose()
    ((actor, data),) = rows
    assert actor == "startup"
    assert "tested against the simulator" in str(data)
