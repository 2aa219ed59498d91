"""Whole simulated sessions trading futures and options (TRADE_INSTRUMENT) through the CLI:
contract keys in whole lots, the position cap naming its rule, the same trades after restarts."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from upstox_bot.feed.sim import load_universe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARGS = [
    "run",
    "--speed",
    "1000000",
    "--duration",
    "375",
    "--seed",
    "7",
    "--date",
    "2026-11-25",
    "--no-api",
    "--no-live",
]
# Rs 50 lakh: a 30 % cap of Rs 15 lakh fits one or more lots of every simulated future.
RICH = {"ACCOUNT_SIZE": "5000000", "DAILY_LOSS_LIMIT": "50"}
LOT_SIZES = {re.sub(r"\W", "_", i.trading_symbol): i.lot_size for i, _ in load_universe()}
POINTS = ["order.recorded", "order.placed", "fill.applied", "exit.sent", "flush.committed"]


def _start(
    data_dir: Path, env: dict[str, str], crash_at: str | None = None
) -> subprocess.Popen[str]:
    full = {**os.environ, "LOG_LEVEL": "WARNING", **env, "DATA_DIR": str(data_dir)}
    full.pop("DATABASE_URL", None)
    full.pop("UPSTOX_BOT_CRASH_AT", None)
    if crash_at:
        full["UPSTOX_BOT_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "upstox_bot.cli", *ARGS],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=data_dir,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=300)
    return proc.returncode, output


def _rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(f"sqlite:///{data_dir / 'upstox_bot.sqlite'}")
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


def _lot_size(instrument_key: str) -> int:
    # NSE_FO|SIM_<SYMBOL>_<YYYYMMDD>_FUT or ..._<STRIKE>_<CE|PE>
    name = instrument_key.split("|", 1)[1].removeprefix("SIM_")
    parts = name.split("_")
    cut = next(i for i, p in enumerate(parts) if len(p) == 8 and p.isdigit())
    return LOT_SIZES["_".join(parts[:cut])]


TRADES = (
    "SELECT instrument_key, direction, quantity, lots, entry_price_paise, exit_price_paise, "
    "entry_at, exit_at, net_pnl_paise, exit_reason FROM trades ORDER BY entry_at, instrument_key"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five sessions played side by side (each takes about 20 s)."""
    plans = {
        "future": {"TRADE_INSTRUMENT": "future", **RICH},
        "future_again": {"TRADE_INSTRUMENT": "future", **RICH},
        "future_small": {"TRADE_INSTRUMENT": "future"},
        # The default Rs 1 lakh account, futures sized on a 10 % margin with a 1 % stop.
        "future_margin": {
            "TRADE_INSTRUMENT": "future",
            "STOP_LOSS_PERCENT": "1",
            "FUTURES_MARGIN_PERCENT": "10",
        },
        "option": {"TRADE_INSTRUMENT": "option"},
    }
    dirs = {name: tmp_path_factory.mktemp(name) for name in plans}
    procs = {name: _start(dirs[name], env) for name, env in plans.items()}
    for name, proc in procs.items():
        code, output = _finish(proc)
        assert code == 0, f"{name}: {output}"
    return dirs


def test_futures_trade_on_contract_keys_in_whole_lots(runs: dict[str, Path]) -> None:
    trades = _rows(runs["future"], TRADES)
    assert len(trades) >= 3
    for key, _direction, quantity, lots, *_ in trades:
        assert key.startswith("NSE_FO|SIM_")
        assert key.endswith("_20261229_FUT")  # November's expired on the 24th
        assert lots >= 1
        assert quantity == lots * _lot_size(key)
    assert _rows(runs["future"], "SELECT count(*) FROM positions WHERE status = 'open'") == [(0,)]
    orders = _rows(runs["future"], "SELECT instrument_key, quantity, lots FROM orders")
    assert all(q == n * _lot_size(k) for k, q, n in orders)
    # signals stay on the stocks, orders go to their futures
    signal_keys = {r[0] for r in _rows(runs["future"], "SELECT instrument_key FROM signals")}
    assert all(k.startswith("NSE_EQ|") for k in signal_keys)


def test_futures_session_is_deterministic(runs: dict[str, Path]) -> None:
    assert _rows(runs["future_again"], TRADES) == _rows(runs["future"], TRADES)


def test_with_one_lakh_and_a_5_pct_stop_futures_are_refused_on_the_risk_at_the_stop(
    runs: dict[str, Path],
) -> None:
    # Sized on margin, the position cap no longer refuses them; the risk at a 5 % stop stays on
    # the full exposure: the smallest lot (TMPV, 800 x ~Rs 352) risks ~Rs 14,000 > Rs 5,000.
    assert _rows(runs["future_small"], "SELECT count(*) FROM trades") == [(0,)]
    refused = _rows(
        runs["future_small"],
        "SELECT instrument_key, reason FROM risk_decisions WHERE rule = 'risk_per_trade'",
    )
    assert len(refused) >= 5
    assert all(key.endswith("_FUT") for key, _ in refused)
    assert all("exceeds the risk budget" in reason for _, reason in refused)
    approved = _rows(runs["future_small"], "SELECT count(*) FROM risk_decisions WHERE approved")
    assert approved == [(0,)]


def test_futures_trade_on_the_default_account_sized_on_margin(runs: dict[str, Path]) -> None:
    trades = _rows(runs["future_margin"], TRADES)
    assert trades, "a future should be traded on Rs 1 lakh once sized on its margin"
    for key, _direction, quantity, lots, entry_price, *_ in trades:
        assert key.endswith("_FUT")
        assert quantity == lots * _lot_size(key)
        notional = entry_price * quantity
        assert notional > 3_000_000  # the full value is over the 30 % cap of Rs 1 lakh...
        assert notional * 10 // 100 <= 3_000_000  # ...its 10 % margin is within it
        assert notional // 100 <= 500_000  # the 1 % stop risks at most 5 % of the capital


def test_options_buy_atm_calls_and_puts_in_whole_lots(runs: dict[str, Path]) -> None:
    trades = _rows(runs["option"], TRADES)
    assert trades, "the seeded session should buy options"
    for key, direction, quantity, lots, entry_price, *_ in trades:
        assert key.endswith(("_CE", "_PE"))
        assert direction == "long"  # options are always bought
        assert quantity == lots * _lot_size(key)
        assert entry_price * quantity <= 3_000_000  # within the 30 % cap of Rs 1 lakh
    greeks = _rows(
        runs["option"],
        "SELECT count(*) FROM ticks WHERE instrument_key LIKE 'NSE_FO|%' "
        "AND iv IS NOT NULL AND delta IS NOT NULL AND theta IS NOT NULL",
    )
    assert greeks[0][0] >= 1, "stored option ticks carry IV and greeks"


def _state(data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "trades": _rows(data_dir, TRADES),
        "orders": _rows(
            data_dir,
            "SELECT client_order_id, instrument_key, status, quantity, average_price_paise, "
            "exit_reason FROM orders ORDER BY created_at, client_order_id",
        ),
        "positions": _rows(
            data_dir,
            "SELECT instrument_key, status, quantity, entry_price_paise, stop_paise, "
            "trailing_active, best_price_paise, trail_stop_paise FROM positions "
            "ORDER BY opened_at, instrument_key",
        ),
        "account": _rows(
            data_dir, "SELECT realised_pnl_paise, charges_paise, trades, orders FROM account_days"
        ),
    }


def test_futures_session_survives_kills_and_restarts(runs: dict[str, Path], tmp_path: Path) -> None:
    rng = random.Random(4)
    env = {"TRADE_INSTRUMENT": "future", **RICH, "TICK_STORE_INTERVAL_SECONDS": "0"}
    kills = 0
    for i in range(6):
        crash_at = f"{POINTS[i % len(POINTS)]}:{rng.randint(1, 3)}"
        code, _ = _finish(_start(tmp_path, env, crash_at=crash_at))
        kills += code in (-9, 137)
    assert kills >= 4
    code, output = _finish(_start(tmp_path, env))
    assert code == 0, output
    assert _state(tmp_path) == _state(runs["future"])
