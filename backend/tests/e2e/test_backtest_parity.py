"""Parity: the embedded harness (paper broker, SQLite journal) over a replayed session trades
exactly as a backtest over the same bars."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from upstox_bot.backtest.data import load_bars, write_csv
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.service import run_backtest
from upstox_bot.clock import NseCalendar, session_open_ms
from upstox_bot.config import Settings
from upstox_bot.domain import ms_to_datetime
from upstox_bot.feed.replay import BarSeries, ReplayMarket
from upstox_bot.runtime import embedded
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DAYS = (date(2026, 11, 25), date(2026, 11, 26))
SYMBOLS = {"RELIANCE": 133_450, "HDFCBANK": 77_200}  # the first two of the packaged universe


def _write_walk(folder: Path) -> None:
    """Two sessions of 1-minute bars per symbol: a seeded walk on the 5-paise grid with a few
    sharp moves, so that signals, stops, trailing stops and square-offs all happen."""
    from upstox_bot.backtest.data import instrument_for

    rng = np.random.default_rng(13)
    for symbol, price in SYMBOLS.items():
        starts = np.concatenate(
            [session_open_ms(d) + 60_000 * np.arange(375, dtype=np.int64) for d in DAYS]
        )
        n = len(starts)
        steps = rng.integers(-4, 5, size=n) * 5 * max(1, price // 20_000)
        steps[rng.integers(0, n, size=6)] = -price // 14 // 5 * 5  # about -7 %: stops
        steps[rng.integers(0, n, size=6)] = price // 16 // 5 * 5  # about +6 %: targets
        for day in range(len(DAYS)):  # a steady rise from 14:30: held into the square-off
            steps[day * 375 + 315 : day * 375 + 375] = 5 * max(1, price // 20_000)
        close = price + np.cumsum(steps)
        open_ = np.concatenate(([price], close[:-1]))
        wick = rng.integers(0, 4, size=(2, n)) * 5
        series = BarSeries(
            instrument=instrument_for(symbol),
            interval_s=60,
            start_ms=starts,
            open=open_,
            high=np.maximum(open_, close) + wick[0],
            low=np.minimum(open_, close) - wick[1],
            close=close,
            volume=np.full(n, 1_000, dtype=np.int64),
        )
        write_csv(folder / f"{symbol}.csv", series)


def _settings(tmp: Path) -> Settings:
    return Settings(
        _env_file=None,
        DATA_DIR=tmp / "var",
        SIM_SYMBOLS=2,
        STRATEGY="sma_crossover",
        STRATEGY_PARAMS={"fast": 3, "slow": 8},
        ALLOW_SHORT=True,
        TICK_STORE_INTERVAL_SECONDS=0,
        SLIPPAGE_BPS="7",
        DAILY_LOSS_LIMIT="25",
    )


def test_embedded_replay_and_backtest_make_the_same_trades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calendar = NseCalendar.default()
    assert all(calendar.is_trading_day(d) for d in DAYS)
    data = tmp_path / "bars"
    _write_walk(data)
    settings = _settings(tmp_path)
    dataset = load_bars(data)

    def replay(*_args: Any, trading_date: date, **_kwargs: Any) -> ReplayMarket:
        return ReplayMarket(dataset.series, trading_date=trading_date)

    monkeypatch.setattr(embedded, "SimulatedMarket", replay)
    bot = EmbeddedBot(
        settings,
        RunOptions(
            speed=1e9,
            duration_minutes=375 * len(DAYS),
            seed=0,
            start_date=DAYS[0],
            serve_api=False,
            live_console=False,
        ),
    )
    assert set(bot.instruments) == {s.instrument.instrument_key for s in dataset.series}
    asyncio.run(bot.run_market())
    bot.db_engine.dispose()
    db = create_engine(settings.database_url)
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT instrument_key, direction, quantity, entry_price_paise, exit_price_paise,"
                " entry_at, exit_at, charges_paise, net_pnl_paise, exit_reason FROM trades"
                " ORDER BY exit_at, instrument_key"
            )
        ).all()
    db.dispose()
    live = [
        (
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            ms_to_datetime(_ms(r[5])),
            ms_to_datetime(_ms(r[6])),
            r[7],
            r[8],
            r[9],
        )
        for r in rows
    ]

    result = run_backtest(
        BacktestRequest(data=str(data), strategy="sma_crossover", params={"fast": 3, "slow": 8}),
        settings=settings,
    )
    tested = sorted(
        (
            (
                t.instrument_key,
                t.side,
                t.quantity,
                t.entry_price_paise,
                t.exit_price_paise,
                t.entry_time,
                t.exit_time,
                t.charges_paise,
                t.pnl_paise,
                t.exit_reason,
            )
            for t in result.trades
        ),
        key=lambda t: (t[6], t[0]),
    )
    assert len(live) >= 10
    reasons = {t[9] for t in tested}
    assert {"signal", "square_off"} <= reasons
    assert reasons & {"stop_loss", "trailing_stop"}
    assert live == tested


def _ms(value: Any) -> int:
    from datetime import UTC, datetime

    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)
