"""Parameter grids, the CLI-facing request round trip, and the HTML report."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.unit.backtest.conftest import settings
from upstox_bot.backtest.grid import GridRun, parse_grid, rank, run_grid
from upstox_bot.backtest.models import BacktestRequest, BacktestResult
from upstox_bot.backtest.report import render_html
from upstox_bot.backtest.service import parse_timeframe, run_backtest
from upstox_bot.errors import ConfigError
from upstox_bot.feed.replay import DAILY_INTERVAL_S


@pytest.fixture(scope="module")
def walk_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sessions of a zig-zag 1-minute walk that crosses its averages often."""
    path = tmp_path_factory.mktemp("data") / "ZIG.csv"
    lines = ["timestamp,open,high,low,close,volume"]
    price = 10_000
    for day in ("2026-11-23", "2026-11-24", "2026-11-25"):
        for minute in range(375):
            step = 15 if (minute // 12) % 2 == 0 else -14
            o, c = price, price + step
            h, lo = max(o, c) + 5, min(o, c) - 5
            hh, mm = divmod(9 * 60 + 15 + minute, 60)
            lines.append(
                f"{day} {hh:02d}:{mm:02d}:00,{o / 100:.2f},{h / 100:.2f},{lo / 100:.2f},"
                f"{c / 100:.2f},100"
            )
            price = c
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_parse_grid_ranges_lists_and_errors() -> None:
    assert parse_grid(["fast=5:20:5", "slow=30,40"]) == {"fast": [5, 10, 15, 20], "slow": [30, 40]}
    assert parse_grid(["k=0.5:1.5:0.5"])["k"] == [Decimal("0.5"), Decimal("1.0"), Decimal("1.5")]
    for bad in ("fast", "fast=5:1", "fast=1:5:0", "fast=a:b"):
        with pytest.raises(ConfigError):
            parse_grid([bad])


def test_timeframes() -> None:
    assert parse_timeframe("5m") == 300
    assert parse_timeframe("1h") == 3600
    assert parse_timeframe("1d") == DAILY_INTERVAL_S
    with pytest.raises(ConfigError):
        parse_timeframe("7x")


def test_run_backtest_json_round_trip_and_report(walk_csv: Path) -> None:
    request = BacktestRequest(
        data=str(walk_csv),
        strategy="sma_crossover",
        params={"fast": "3", "slow": "8"},
        quantity=10,
    )
    assert BacktestRequest.from_dict(request.to_dict()) == request
    result = run_backtest(request, settings=settings())
    assert result.summary.trade_count > 5
    assert result.summary.sessions == 3
    again = BacktestResult.from_dict(result.to_dict())
    assert again.trades == result.trades
    assert again.summary == result.summary
    html = render_html(result)
    assert html.count("<svg") == 2
    assert "Monthly returns" in html
    assert result.trades[0].exit_reason in html
    assert "<script" not in html
    assert "http" not in html.split("<body>")[1]


def test_grid_runs_every_combination_in_processes_and_ranks(walk_csv: Path) -> None:
    base = BacktestRequest(data=str(walk_csv), strategy="sma_crossover", quantity=10)
    runs = run_grid(
        base,
        parse_grid(["fast=3:5:2", "slow=8,4"]),
        settings=settings(),
        metric="net_pnl",
        workers=2,
    )
    assert len(runs) == 4
    failed = [r for r in runs if r.summary is None]
    assert [dict(r.params) for r in failed] == [{"fast": 5, "slow": 4}]  # fast must be < slow
    assert runs[-1] is failed[0]
    pnls = [r.summary.net_pnl_paise for r in runs if r.summary]
    assert pnls == sorted(pnls, reverse=True)
    single = run_backtest(
        BacktestRequest(
            data=str(walk_csv), strategy="sma_crossover", quantity=10, params={"fast": 3, "slow": 8}
        ),
        settings=settings(),
    )
    match = next(r for r in runs if dict(r.params) == {"fast": 3, "slow": 8})
    assert match.summary == single.summary


def test_rank_puts_missing_metric_last_and_refuses_unknown() -> None:
    assert rank([GridRun(params={}, summary=None)], "sharpe")[0].summary is None
    with pytest.raises(ConfigError):
        rank([], "luck")
