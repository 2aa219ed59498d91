"""SIGKILL the embedded bot at 20 points of a simulated session and restart it each time: the
trades, positions and P&L equal those of an uninterrupted run, no order is doubled, no stop lost."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.waiting import wait_until

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


# --- several days -------------------------------------------------------------------------------

DAYS_ARGS = [
    "run",
    "--speed",
    "1000000",
    "--duration",
    str(375 * 3),
    "--seed",
    "5",
    "--date",
    "2026-11-24",
    "--no-api",
    "--no-live",
]
# The default loss limit (2% of each day's opening capital): days end on it.
DAYS_ENV = {"LOG_LEVEL": "WARNING", "SIM_SYMBOLS": "30", "TICK_STORE_INTERVAL_SECONDS": "0"}
DAY_POINTS = ["order.recorded", "order.placed", "fill.applied", "exit.sent"]


def _run_days(data_dir: Path, crash_at: str | None = None) -> int:
    env = {**os.environ, **DAYS_ENV, "DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("UPSTOX_BOT_CRASH_AT", None)
    if crash_at:
        env["UPSTOX_BOT_CRASH_AT"] = crash_at
    proc = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", *DAYS_ARGS],
        env=env,
        capture_output=True,
        cwd=data_dir,
        timeout=600,
        check=False,
    )
    return proc.returncode


def _checkpoint_day(data_dir: Path) -> str | None:
    engine = create_engine(f"sqlite:///{data_dir / 'upstox_bot.sqlite'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT position FROM checkpoints")).first()
    finally:
        engine.dispose()
    if row is None:
        return None
    session: str | None = json.loads(row[0]).get("session")
    return session


def _days_state(data_dir: Path) -> dict[str, Any]:
    state = _state(data_dir)
    engine = create_engine(f"sqlite:///{data_dir / 'upstox_bot.sqlite'}")
    with engine.connect() as conn:
        state["days"] = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT trading_date, capital_paise, realised_pnl_paise, trades, "
                    "loss_limit_paise, loss_limit_hit FROM account_days ORDER BY trading_date"
                )
            )
        ]
        state["trades_by_day"] = dict(
            conn.execute(text("SELECT trading_date, count(*) FROM trades GROUP BY 1")).all()
        )
        state["loss_limit_hits"] = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT at FROM audit_logs WHERE event = 'risk.daily_loss_limit_hit' "
                    "ORDER BY at"
                )
            )
        ]
        state["entries"] = [
            r[0]
            for r in conn.execute(
                text("SELECT created_at FROM orders WHERE purpose = 'entry' ORDER BY created_at")
            )
        ]
    engine.dispose()
    return state


@pytest.fixture(scope="module")
def three_days(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("three-days")
    assert _run_days(data_dir) == 0
    state = _days_state(data_dir)
    assert len(state["days"]) == 3
    return state


def test_three_days_killed_on_each_day_end_as_an_uninterrupted_run(
    three_days: dict[str, Any], tmp_path: Path
) -> None:
    rng = random.Random(20261124)
    killed_on: dict[str, int] = {}
    runs = 0
    # Kill at random events until every day has been killed into at least twice.
    while len(killed_on) < 3 or min(killed_on.values()) < 2:
        runs += 1
        assert runs <= 60, f"the run should reach every day: kills per day {killed_on}"
        crash_at = f"{rng.choice(DAY_POINTS)}:{rng.randint(1, 6)}"
        code = _run_days(tmp_path, crash_at)
        if code == 0:
            break  # the run finished before its crash point: nothing more to kill
        assert code in (-9, 137), f"the bot failed instead of being killed: {code}"
        day = _checkpoint_day(tmp_path)
        assert day is not None
        killed_on[day] = killed_on.get(day, 0) + 1
    assert len(killed_on) == 3, f"kills per day {killed_on}"
    assert _run_days(tmp_path) == 0
    recovered = _days_state(tmp_path)
    for key in ("trades", "positions", "orders", "fills", "sent", "days", "loss_limit_hits"):
        assert recovered[key] == three_days[key], key
    # Every day's row is that day's: its trades are the trades of its date.
    for trading_date, _capital, _realised, trades, _limit, _hit in recovered["days"]:
        assert trades == recovered["trades_by_day"].get(trading_date, 0)
    # The limits follow each day's opening capital (2% of it), and no entry follows a hit.
    for trading_date, capital, _realised, _trades, limit, _hit in recovered["days"]:
        assert limit == capital * 2 // 100, trading_date
    for (hit_at,) in recovered["loss_limit_hits"]:
        same_day = [e for e in recovered["entries"] if e[:10] == hit_at[:10] and e > hit_at]
        assert not same_day, f"entries after the loss limit was hit at {hit_at}"
    assert recovered["loss_limit_hits"], "the scenario should hit the daily loss limit"


# --- a locked database, SIGTERM -----------------------------------------------------------------


def _start(data_dir: Path, *extra_env: tuple[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **ENV, "DATA_DIR": str(data_dir), "LOG_FORMAT": "json"}
    env.update(dict(extra_env))
    env.pop("DATABASE_URL", None)
    env.pop("UPSTOX_BOT_CRASH_AT", None)
    args = [*ARGS]
    args[args.index("--speed") + 1] = "300"  # slow enough to act on mid-session
    return subprocess.Popen(
        [sys.executable, "-m", "upstox_bot.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=data_dir,
    )


def _market_minute(data_dir: Path) -> str | None:
    """The checkpoint's market time (HH:MM UTC), read without waiting on a lock."""
    import sqlite3

    try:
        with sqlite3.connect(data_dir / "upstox_bot.sqlite", timeout=0.1) as conn:
            row = conn.execute("SELECT market_at FROM checkpoints").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])[11:16]


def test_a_database_locked_mid_session_is_waited_for_and_nothing_is_lost(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    import sqlite3
    import threading

    proc = _start(tmp_path, ("LOG_LEVEL", "INFO"))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    # 05:00 UTC is 10:30 IST: the bot is trading.
    wait_until(lambda: (_market_minute(tmp_path) or "") >= "05:00", what="mid-session")
    locker = sqlite3.connect(tmp_path / "upstox_bot.sqlite", isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")  # another program holds the file
    try:
        wait_until(
            lambda: any("db.unavailable" in line for line in lines),
            what="the bot to wait for the database",
            within_s=120,
        )
        assert proc.poll() is None, "the bot waits, it does not stop"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert proc.wait(timeout=300) == 0, "".join(lines)[-3000:]
    reader.join(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    assert any("database_unavailable" in line for line in lines), "the trader is alerted"
    assert _state(tmp_path)["trades"] == uninterrupted["trades"]
    assert _state(tmp_path)["orders"] == uninterrupted["orders"]


def test_sigterm_stops_as_gracefully_as_ctrl_c(
    uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    import signal

    proc = _start(tmp_path)
    wait_until(lambda: (_market_minute(tmp_path) or "") >= "05:00", what="mid-session")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "run.sigterm" in out
    assert "done:" in out, "the closing summary is printed: the stop went the graceful way"
    assert _run(tmp_path) == 0  # and the next start goes on to the same end
    assert _state(tmp_path)["trades"] == uninterrupted["trades"]
