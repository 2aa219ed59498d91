"""Builders for backtest tests: bars at IST times, a dataset, a run with a scripted strategy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np

from tests.support.factories import TRADING_DATE, ScriptedStrategy, ist_ms, make_instrument
from upstox_bot.backtest.data import Dataset
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.runner import Backtest, RunOutput
from upstox_bot.backtest.service import build_config
from upstox_bot.config import Settings
from upstox_bot.domain import Instrument
from upstox_bot.feed.replay import BarSeries

Bar = tuple[int, float, float, float, float]  # start ms, open, high, low, close (rupees)


def bar(h: int, m: int, o: float, hi: float, lo: float, c: float, day: Any = TRADING_DATE) -> Bar:
    return (ist_ms(h, m, day=day), o, hi, lo, c)


def make_series(
    bars: Sequence[Bar], instrument: Instrument | None = None, interval_s: int = 60
) -> BarSeries:
    def paise(i: int) -> Any:
        return np.array([round(b[i] * 100) for b in bars], dtype=np.int64)

    return BarSeries(
        instrument=instrument or make_instrument(),
        interval_s=interval_s,
        start_ms=np.array([b[0] for b in bars], dtype=np.int64),
        open=paise(1),
        high=paise(2),
        low=paise(3),
        close=paise(4),
        volume=np.full(len(bars), 100, dtype=np.int64),
    )


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


def run_scripted(
    series: Sequence[BarSeries],
    script: dict[int, list[Any]],
    *,
    settings_overrides: dict[str, Any] | None = None,
    **request: Any,
) -> RunOutput:
    """Run the live engine over the bars with a scripted strategy and the request's options."""
    dataset = Dataset(series=tuple(series), interval_s=series[0].interval_s)
    values: dict[str, Any] = {"data": "-", "strategy": "scripted", "slippage_bps": Decimal(0)}
    values.update(request)
    config, _ = build_config(
        BacktestRequest(**values), settings(**(settings_overrides or {})), dataset
    )
    return Backtest(dataset, ScriptedStrategy(script), replace(config)).run()
