"""`data download` against the local Upstox simulator: chunks, resume, and a backtest on it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from upstox_bot.backtest.data import load_bars
from upstox_bot.backtest.download import Chunk, download_candles
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.service import run_backtest
from upstox_bot.cli import app
from upstox_bot.config import Settings
from upstox_bot.upstox.client import UpstoxClient

sim = pytest.fixture(upstox_simulator)
TODAY = date(2026, 1, 10)


def _client(upstox: UpstoxSimulator) -> UpstoxClient:
    token = upstox.rest.issue_token()
    return UpstoxClient(access_token=lambda: token, api_base_url=upstox.base_url)


async def test_download_writes_month_chunks_resumes_and_backtests(
    sim: UpstoxSimulator, tmp_path: Path
) -> None:
    seen: list[tuple[str, str, bool]] = []

    def on_chunk(symbol: str, chunk: Chunk, fetched: bool) -> None:
        seen.append((symbol, chunk.name, fetched))

    async def download() -> None:
        async with _client(sim) as client:
            await download_candles(
                client,
                symbols=["RELIANCE", "NSE_EQ|INE040A01034"],
                timeframe="5m",
                first=date(2025, 11, 20),
                last=date(2025, 12, 5),
                cache_dir=tmp_path,
                today=TODAY,
                on_chunk=on_chunk,
            )

    await download()
    assert seen == [
        ("RELIANCE", "2025-11", True),
        ("RELIANCE", "2025-12", True),
        ("HDFCBANK", "2025-11", True),
        ("HDFCBANK", "2025-12", True),
    ]
    folder = tmp_path / "5m"
    assert sorted(p.name for p in (folder / "RELIANCE").iterdir()) == [
        "2025-11.csv",
        "2025-12.csv",
        "meta.json",
    ]
    seen.clear()
    (folder / "RELIANCE" / "2025-12.csv").unlink()
    await download()  # resume: only the missing chunk is fetched again
    assert [s for s in seen if s[2]] == [("RELIANCE", "2025-12", True)]
    assert len(seen) == 4  # the other three were cached and complete

    data = load_bars(folder)
    assert data.interval_s == 300
    keys = sorted(s.instrument.instrument_key for s in data.series)
    assert keys == ["NSE_EQ|INE002A01018", "NSE_EQ|INE040A01034"]
    # every weekday of November and December 2025, 75 five-minute bars each
    assert all(len(s) % 75 == 0 and len(s) > 75 * 30 for s in data.series)
    result = run_backtest(
        BacktestRequest(
            data=str(folder),
            strategy="sma_crossover",
            params={"fast": 5, "slow": 20},
            start=date(2025, 11, 20),
            end=date(2025, 12, 5),
        ),
        settings=Settings(_env_file=None),
    )
    assert result.bars == 2 * 12 * 75  # 12 weekdays from 20 Nov to 5 Dec 2025
    assert result.timeframe == "5m"


def test_data_download_cli_then_backtest_cli(
    sim: UpstoxSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTOX_API_BASE_URL", sim.base_url)
    monkeypatch.setenv("UPSTOX_ACCESS_TOKEN", sim.rest.issue_token())
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    runner = CliRunner()
    args = ["data", "download", "--symbols", "RELIANCE", "--interval", "1d"]
    args += ["--from", "2024-01-01", "--to", "2025-06-30"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 chunks fetched, 0 already cached" in first.output
    again = runner.invoke(app, args)
    assert "0 chunks fetched, 2 already cached" in again.output
    out = tmp_path / "result.json"
    report = tmp_path / "report.html"
    run = runner.invoke(
        app,
        [
            "backtest",
            "--data",
            str(tmp_path / "candles" / "1d"),
            "--strategy",
            "sma_crossover",
            "--param",
            "fast=5",
            "--param",
            "slow=20",
            "--json",
            str(out),
            "--report",
            str(report),
        ],
    )
    assert run.exit_code == 0, run.output
    assert '"timeframe": "1d"' in out.read_text()
    assert "<svg" in report.read_text()
    bad = runner.invoke(app, ["backtest", "--data", str(tmp_path / "none.csv")])
    assert bad.exit_code == 2
