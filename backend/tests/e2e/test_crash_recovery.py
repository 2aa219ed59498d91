"""SIGKILL the embedded bot at 20 points of a simulated session and restart it each time: the
trades, positions and P&L equal those of an uninterrupted run, no order is doubled, no stop lost."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARGS = [
    "run",
    "--speed",
    "1000000",
    "--duration",
    "375",
    "--seed",
    "11",
    "--date",
    "2026-11-25",
    "--no-api",
    "--no-live",
]
# A wide loss limit keeps the bot trading all day, so that there are many orders to crash in.
ENV = {
    "LOG_LEVEL": "WARNING",
    "DAILY_LOSS_LIMIT": "50",
    "SIM_SYMBOLS": "30",
    "TICK_STORE_INTERVAL_SECONDS": "0",
}
POINTS = ["order.recorded", "order.placed", "fill.applied", "exit.sent", "flush.committed"]


def _run(data_dir: Path, crash_at: str | None = None, kill_after_s: float | None = None) -> int:
    env = {**os.environ, **ENV, "DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("UPSTOX_BOT_CRASH_AT", None)
    if crash_at:
        env["UPSTOX_BOT_CRASH_AT"] = crash_at
    proc = subprocess.Popen(
        [sys.executable, "-m", "upstox_bot.cli", *ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=data_dir,
    )
    try:
        proc.communicate(timeout=kill_after_s if kill_after_s else 300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


def _state(data_dir: Path) -> dict[str, Any]:
    engine = create_engine(f"sqlite:///{data_dir / 'upstox_bot.sqlite'}")
    with engine.connect() as conn:

        def q(sql: str) -> list[Any]:
            return [tuple(r) for r in conn.execute(text(sql))]

        state = {
            "trades": q(
                "SELECT instrument_key, direction, quantity, entry_price_paise, "
                "exit_price_paise, entry_at, exit_at, gross_pnl_paise, charges_paise, "
                "net_pnl_paise, exit_reason, entry_order_id, exit_order_id "
                "FROM trades ORDER BY exit_at, trade_id"
            ),
            "positions": q(
                "SELECT instrument_key, status, quantity, entry_price_paise, "
                "stop_paise, target_paise, trailing_active, best_price_paise, "
                "trail_stop_paise, realised_pnl_paise FROM positions "
                "ORDER BY opened_at, instrument_key"
            ),
            "orders": q(
                "SELECT client_order_id, status, side, quantity, filled_quantity, "
                "average_price_paise, purpose, exit_reason FROM orders "
                "ORDER BY created_at, client_order_id"
            ),
            "fills": q(
                "SELECT fill_id, client_order_id, quantity, price_paise FROM fills ORDER BY fill_id"
            ),
            "account": q(
                "SELECT trading_date, capital_paise, realised_pnl_paise, "
                "charges_paise, trades, orders, loss_limit_hit FROM account_days"
            ),
            "signals": q("SELECT count(*), count(DISTINCT signal_id) FROM signals"),
            "sent": q("SELECT client_order_id FROM rate_limit_logs ORDER BY at, client_order_id"),
        }
    engine.dispose()
    return state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("uninterrupted")
    assert _run(data_dir) == 0
    state = _state(data_dir)
    assert len(state["trades"]) >= 5, "the scenario needs trades to crash around"
    return state


def test_twenty_kills_and_restarts_end_as_an_uninterrupted_run(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    kills = 0
    plan: list[tuple[str | None, float | None]] = []
    for i in range(20):
        if i % 5 == 4:
            plan.append((None, rng.uniform(1.0, 2.5)))  # a kill at a random wall-clock moment
        else:
            # each restart resumes where the last one died and dies again a few events later
            plan.append((f"{POINTS[i % len(POINTS)]}:{rng.randint(1, 2)}", None))
    for crash_at, after in plan:
        code = _run(tmp_path, crash_at=crash_at, kill_after_s=after)
        kills += code in (-9, 137)
    assert kills >= 15, "most runs should have been killed mid-session"
    assert _run(tmp_path) == 0
    recovered = _state(tmp_path)
    assert recovered["trades"] == uninterrupted["trades"]
    assert recovered["positions"] == uninterrupted["positions"]
    assert recovered["orders"] == uninterrupted["orders"]
    assert recovered["fills"] == uninterrupted["fills"]
    assert recovered["account"] == uninterrupted["account"]
    assert recovered["sent"] == uninterrupted["sent"]  # no order sent twice
    count, distinct = recovered["signals"][0]
    assert count == distinct == uninterrupted["signals"][0][0]
