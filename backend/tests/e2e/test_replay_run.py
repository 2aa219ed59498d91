"""`upstox-bot run --market replay --data PATH` plays recorded bars through the embedded bot."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _write_bars(path: Path, seed: int, days: list[str]) -> int:
    rng = random.Random(seed)
    price = 500.0
    rows = 0
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["datetime", "open", "high", "low", "close", "volume"])
        for day in days:
            t = datetime.fromisoformat(f"{day}T09:15:00")
            for _ in range(375):
                o = price
                c = max(1.0, o * (1 + rng.gauss(0.0002 * (1 if rng.random() < 0.5 else -1), 0.002)))
                h, low = max(o, c) * 1.0005, min(o, c) * 0.9995
                out.writerow(
                    [
                        t.isoformat(),
                        f"{o:.2f}",
                        f"{h:.2f}",
                        f"{low:.2f}",
                        f"{c:.2f}",
                        rng.randint(100, 5000),
                    ]
                )
                price, t, rows = c, t + timedelta(minutes=1), rows + 1
    return rows


def test_replay_run_plays_every_bar_and_stops(tmp_path: Path) -> None:
    data = tmp_path / "bars"
    data.mkdir()
    days = ["2026-11-25", "2026-11-26"]
    bars = _write_bars(data / "ALPHA.csv", 1, days) + _write_bars(data / "BETA.csv", 2, days)
    env = {**os.environ, "DATA_DIR": str(tmp_path / "var"), "LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "upstox_bot.cli",
            "run",
            "--market",
            "replay",
            "--data",
            str(data),
            "--speed",
            "1000000",
            "--no-api",
            "--no-live",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'upstox_bot.sqlite'}")
    with engine.connect() as conn:
        candles = conn.execute(text("SELECT count(*) FROM candles")).scalar_one()
        days_played = conn.execute(text("SELECT count(*) FROM account_days")).scalar_one()
        signals = conn.execute(text("SELECT count(*) FROM signals")).scalar_one()
    engine.dispose()
    assert candles == bars  # one 1-minute candle per replayed bar
    assert days_played == len(days)
    assert signals > 0


def test_replay_needs_data(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "run", "--market", "replay", "--no-api"],
        env={**os.environ, "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "--data" in proc.stderr
