"""`upstox-bot feed`, `universe refresh` and `token status` run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator

RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"
BACKEND = Path(__file__).resolve().parents[2]

sim = pytest.fixture(upstox_simulator)


def cli_env(tmp_path: Path, upstox: UpstoxSimulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))}
    env.update(
        {
            "DATA_DIR": str(tmp_path / "var"),
            "UPSTOX_API_BASE_URL": upstox.base_url,
            "PYTHONPATH": str(BACKEND / "src"),
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "upstox_bot.cli", *args]


@pytest.fixture
def pusher(sim: UpstoxSimulator) -> Iterator[threading.Event]:
    """Trades RELIANCE every 20 ms until the test ends (set the event to start)."""
    start, stop = threading.Event(), threading.Event()

    def push() -> None:
        start.wait()
        price = 1402.5
        assert sim.feed is not None
        while not stop.wait(0.02):
            price += 0.05
            sim.feed.push_ticks(RELIANCE, [round(price, 2)], ltq=5)

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    yield start
    stop.set()
    start.set()
    thread.join(timeout=5)


def test_feed_streams_flushed_json_lines_and_stops_after_max_messages(
    tmp_path: Path, sim: UpstoxSimulator, pusher: threading.Event
) -> None:
    assert sim.feed is not None
    sim.feed.set_instrument(RELIANCE, ltp=1402.5, cp=1390.0, oi=0.0)
    sim.feed.set_instrument(NIFTY, ltp=26050.0, cp=25990.0)
    token = sim.rest.issue_token()
    args = cli("feed", "--instruments", f"{RELIANCE},{NIFTY}", "--mode", "full", "--jsonl")
    proc = subprocess.Popen(
        [*args, "--max-messages", "5"],
        cwd=tmp_path,
        env=cli_env(tmp_path, sim, UPSTOX_ACCESS_TOKEN=token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # the subscription snapshot arrives before any live trade: each line is flushed at once
        first = json.loads(proc.stdout.readline())
        pusher.set()
        # Read the rest through the same buffered reader: communicate() reads the raw pipe and
        # would lose a line that readline() had already buffered.
        out = proc.stdout.read()
        proc.wait(timeout=30)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [first, *(json.loads(line) for line in out.splitlines())]
    assert len(lines) == 5
    assert {line["instrument_key"] for line in lines[:2]} == {RELIANCE, NIFTY}
    for line in lines:
        assert {"instrument_key", "ltp", "ltt", "ltq", "cp"} <= line.keys()
        assert isinstance(line["ltt"], int)
        assert line["ltt"] > 1_700_000_000_000  # epoch ms
    stock = [line for line in lines if line["instrument_key"] == RELIANCE]
    assert stock
    assert {"volume", "atp", "tbq", "tsq", "bid", "bid_qty", "ask", "ask_qty"} <= stock[-1].keys()
    assert stock[-1]["bid"] < stock[-1]["ltp"] < stock[-1]["ask"]
    index = next(line for line in lines if line["instrument_key"] == NIFTY)
    assert index["ltp"] == 26050.0
    assert index["cp"] == 25990.0
    assert "bid" not in index


def test_feed_without_a_token_says_how_to_log_in(tmp_path: Path, sim: UpstoxSimulator) -> None:
    result = subprocess.run(
        cli("feed", "--instruments", RELIANCE, "--jsonl", "--max-messages", "1"),
        cwd=tmp_path,
        env=cli_env(tmp_path, sim),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "upstox-bot login" in result.stderr


def test_universe_refresh_from_the_sample_file_then_token_status(
    tmp_path: Path, sim: UpstoxSimulator
) -> None:
    sample = BACKEND / "src" / "upstox_bot" / "data" / "upstox_instruments_sample.json.gz"
    env = cli_env(tmp_path, sim)

    refresh = subprocess.run(
        cli("universe", "refresh", "--file", str(sample)),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refresh.returncode == 0, refresh.stderr
    assert "92 F&O stocks" in refresh.stdout
    assert "BANKNIFTY" in refresh.stdout  # listed as excluded

    status = subprocess.run(
        cli("token", "status"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 1
    assert "state: missing" in status.stdout
