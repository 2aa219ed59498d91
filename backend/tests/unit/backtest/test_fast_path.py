"""The backtest's fast path (step only the minutes that matter) against the full path: the same
RunOutput over varied data and rules, and the pieces it rests on."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from tests.support.factories import ScriptedStrategy, make_instrument
from tests.unit.backtest.conftest import settings
from upstox_bot.backtest.data import Dataset
from upstox_bot.backtest.fastpath import history_of
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.runner import Backtest, RunOutput
from upstox_bot.backtest.service import build_config
from upstox_bot.clock import NseCalendar, session_open_ms
from upstox_bot.domain import Candle, SignalType
from upstox_bot.feed.replay import BarSeries
from upstox_bot.signals.base import CandleHistory, Strategy
from upstox_bot.signals.series import CandleSeries
from upstox_bot.signals.strategies.sma_crossover import SmaCrossoverStrategy


def random_series(
    key: str, *, days: int, seed: int, drop: float = 0.0, grid: int = 1, vol: int = 40
) -> BarSeries:
    """1-minute bars over `days` NSE sessions: a random walk in paise, some minutes missing."""
    calendar = NseCalendar.default()
    sessions: list[date] = []
    day = date(2024, 1, 1)
    while len(sessions) < days:
        if calendar.is_trading_day(day):
            sessions.append(day)
        day += timedelta(days=1)
    minute = 60_000 * np.arange(375, dtype=np.int64)
    starts = np.concatenate([session_open_ms(d) + minute for d in sessions])
    rng = np.random.default_rng(seed)
    starts = starts[rng.random(len(starts)) >= drop]
    count = len(starts)
    close = np.maximum(20_000 + np.cumsum(rng.integers(-vol, vol + 1, size=count)), 1_000)
    close = close // grid * grid
    open_ = np.concatenate(([20_000], close[:-1])) + rng.integers(-5, 6, size=count) * grid
    high = np.maximum(open_, close) + rng.integers(0, 30, size=count) * grid
    low = np.minimum(open_, close) - rng.integers(0, 30, size=count) * grid
    symbol = key.split("|")[-1]
    return BarSeries(
        instrument=make_instrument(instrument_key=key, trading_symbol=symbol),
        interval_s=60,
        start_ms=starts.astype(np.int64),
        open=open_.astype(np.int64),
        high=high.astype(np.int64),
        low=low.astype(np.int64),
        close=close.astype(np.int64),
        volume=rng.integers(1, 1_000, size=count).astype(np.int64),
    )


class VectorisedScript(ScriptedStrategy):
    """The scripted strategy with a vectorised form: it can signal only on scripted candles."""

    def signal_candidates(self, history: CandleHistory, *, window: int) -> Any:
        return np.isin(history.start_ms, np.array(sorted(self.script), dtype=np.int64))


def run_both(
    series: list[BarSeries], make_strategy: Any, overrides: dict[str, Any], **request: Any
) -> tuple[RunOutput, RunOutput]:
    dataset = Dataset(series=tuple(series), interval_s=60)
    values: dict[str, Any] = {"data": "-", "strategy": "x", "slippage_bps": Decimal(0)}
    values.update(request)
    config, _ = build_config(BacktestRequest(**values), settings(**overrides), dataset)
    fast = Backtest(dataset, make_strategy(), config).run()
    full = Backtest(dataset, make_strategy(), replace(config, fast_path=False)).run()
    return fast, full


def assert_same(fast: RunOutput, full: RunOutput) -> None:
    assert fast.trades == full.trades
    assert fast.open_positions == full.open_positions
    assert fast.equity == full.equity
    assert fast.exposure == full.exposure
    assert fast.unfilled_orders == full.unfilled_orders


EXITS = {
    "all": {},
    "none": {
        "stop_loss_pct": Decimal(0),
        "take_profit_pct": Decimal(0),
        "trailing_stop_pct": Decimal(0),
    },
    "tight": {
        "stop_loss_pct": Decimal("0.5"),
        "take_profit_pct": Decimal("0.4"),
        "trailing_stop_pct": Decimal("0.2"),
    },
    "no_trailing": {"stop_loss_pct": Decimal("0.6"), "trailing_stop_pct": Decimal(0)},
    "no_target": {"take_profit_pct": Decimal(0), "stop_loss_pct": Decimal("0.8")},
}


@pytest.mark.parametrize("exits", sorted(EXITS))
@pytest.mark.parametrize("shorts", [False, True])
def test_sma_crossover_fast_path_matches_full_path_over_several_symbols(
    exits: str, shorts: bool
) -> None:
    series = [
        random_series("NSE_EQ|A", days=3, seed=1),
        random_series("NSE_EQ|B", days=3, seed=2, drop=0.2),
        random_series("NSE_EQ|C", days=3, seed=3, drop=0.05, grid=5),
    ]
    overrides = {
        "ALLOW_SHORT": shorts,
        "MAX_OPEN_POSITIONS": 2,
        "SIGNAL_COOLDOWN_MINUTES": 3,
        "DAILY_LOSS_LIMIT": Decimal("0.3"),
        "ACCOUNT_SIZE": Decimal(200_000),
    }
    fast, full = run_both(
        series,
        lambda: SmaCrossoverStrategy(fast=5, slow=12),
        overrides,
        charges="upstox",
        slippage_bps=Decimal(3),
        **EXITS[exits],
    )
    assert full.trades, "the data must trade"
    assert fast.trades_replayed < full.trades_replayed  # the fast path did skip
    assert_same(fast, full)


def test_fast_path_matches_full_path_when_the_daily_loss_limit_bites() -> None:
    series = [
        random_series("NSE_EQ|A", days=4, seed=11, vol=120),
        random_series("NSE_EQ|B", days=4, seed=12, vol=120),
    ]
    overrides = {"DAILY_LOSS_LIMIT": Decimal("0.05"), "SIGNAL_COOLDOWN_MINUTES": 0}
    fast, full = run_both(
        series,
        lambda: SmaCrossoverStrategy(fast=3, slow=8),
        overrides,
        charges="none",
        quantity=50,
        **EXITS["none"],
    )
    assert full.trades
    assert_same(fast, full)


@pytest.mark.parametrize("exits", ["all", "tight", "none"])
@pytest.mark.parametrize("shorts", [False, True])
def test_one_symbol_without_cooldown_matches_full_path_skipping_refused_candidates(
    exits: str, shorts: bool
) -> None:
    # One series and no cooldown: a candidate the engine refuses in a flat book (outside the
    # entry window, after the loss limit) is skipped, not stepped.
    series = [random_series("NSE_EQ|A", days=4, seed=31, drop=0.05, vol=80)]
    overrides = {
        "ALLOW_SHORT": shorts,
        "SIGNAL_COOLDOWN_MINUTES": 0,
        "DAILY_LOSS_LIMIT": Decimal("0.4"),
        "ENTRY_START_TIME": time(10, 0),
        "ENTRY_END_TIME": time(13, 0),
        "ACCOUNT_SIZE": Decimal(200_000),
    }
    fast, full = run_both(
        series,
        lambda: SmaCrossoverStrategy(fast=3, slow=8),
        overrides,
        charges="upstox",
        **EXITS[exits],
    )
    assert full.trades
    assert_same(fast, full)


def test_refused_candidates_in_a_flat_book_are_not_evaluated_and_trade_alike() -> None:
    series = [random_series("NSE_EQ|A", days=3, seed=41, drop=0.1)]
    script = scripted(series, seed=7)
    overrides = {
        "ALLOW_SHORT": True,
        "SIGNAL_COOLDOWN_MINUTES": 0,
        "ENTRY_START_TIME": time(10, 30),
        "ENTRY_END_TIME": time(12, 30),
        "MIN_ORDER_INTERVAL_SECONDS": 45,
    }
    strategies: list[VectorisedScript] = []

    def make() -> VectorisedScript:
        strategies.append(VectorisedScript(script))
        return strategies[-1]

    fast, full = run_both(series, make, overrides, charges="upstox")
    assert full.trades
    assert_same(fast, full)
    fast_seen, full_seen = (set(s.seen) for s in strategies)
    candidates = set(script) & full_seen
    assert fast_seen <= candidates
    assert len(fast_seen) < len(candidates)  # some refused candidates were never evaluated
    assert fast.trades_replayed < full.trades_replayed


def scripted(series: list[BarSeries], seed: int) -> dict[int, list[Any]]:
    rng = np.random.default_rng(seed)
    kinds = [
        [SignalType.ENTRY_LONG],
        [SignalType.ENTRY_SHORT],
        [SignalType.EXIT_LONG],
        [SignalType.EXIT_SHORT],
        [SignalType.EXIT_LONG, SignalType.ENTRY_SHORT],
    ]
    starts = np.unique(np.concatenate([s.start_ms for s in series]))
    chosen = rng.choice(starts, size=len(starts) // 25, replace=False)
    return {int(t): kinds[int(rng.integers(len(kinds)))] for t in chosen}


@pytest.mark.parametrize("exits", ["all", "tight", "none"])
def test_scripted_strategy_with_and_without_a_vectorised_form_trades_alike(exits: str) -> None:
    series = [
        random_series("NSE_EQ|A", days=3, seed=21, drop=0.1),
        random_series("NSE_EQ|B", days=3, seed=22),
    ]
    script = scripted(series, seed=5)
    overrides = {"ALLOW_SHORT": True, "MAX_OPEN_POSITIONS": 1, "MIN_ORDER_INTERVAL_SECONDS": 45}
    request = {"charges": "upstox", **EXITS[exits]}
    fast, full = run_both(series, lambda: VectorisedScript(script), overrides, **request)
    without, _ = run_both(series, lambda: ScriptedStrategy(script), overrides, **request)
    assert full.trades
    assert fast.trades_replayed < full.trades_replayed
    assert without.trades_replayed == full.trades_replayed  # no vectorised form: full path
    assert_same(fast, full)
    assert_same(without, full)


def test_sma_candidates_include_every_candle_that_signals() -> None:
    # Prices off the 25-paise grid: the float averages are not exact, ties are near ones.
    s = random_series("NSE_EQ|A", days=4, seed=7, vol=3)
    history = history_of(s)
    strategy = SmaCrossoverStrategy(fast=4, slow=9)
    marked = strategy.signal_candidates(history, window=300)
    assert marked is not None
    window = CandleSeries("NSE_EQ|A", 60, 300)
    signalled = []
    for i in range(len(s)):
        window.append(
            Candle(
                instrument_key="NSE_EQ|A",
                interval_s=60,
                start_ms=int(s.start_ms[i]),
                open_paise=int(s.open[i]),
                high_paise=int(s.high[i]),
                low_paise=int(s.low[i]),
                close_paise=int(s.close[i]),
                volume=int(s.volume[i]),
            )
        )
        if len(window) >= strategy.startup_candles and strategy.evaluate(
            window,
            position=None,
            now=None,  # type: ignore[arg-type]
        ):
            signalled.append(i)
    assert signalled
    assert marked[signalled].all()
    # A superset, not much larger: away from ties it is the crossing candles themselves.
    assert marked.sum() <= 2 * len(signalled)
    too_short = strategy.signal_candidates(history, window=strategy.startup_candles - 1)
    assert too_short is not None
    assert not too_short.any()


@pytest.mark.parametrize("chunks", [[1, 1, 1], [5, 300, 2], [299, 1, 700], [1000], [3, 3, 3, 3]])
def test_candle_series_extend_equals_appending_one_by_one(chunks: list[int]) -> None:
    total = sum(chunks)
    rng = np.random.default_rng(len(chunks))
    prices = rng.integers(100, 10_000, size=total)
    one = CandleSeries("K", 60, 300)
    many = CandleSeries("K", 60, 300)
    at = 0
    for size in chunks:
        for i in range(at, at + size):
            price = int(prices[i])
            one.append(
                Candle(
                    instrument_key="K",
                    interval_s=60,
                    start_ms=i * 60_000,
                    open_paise=price,
                    high_paise=price + 1,
                    low_paise=price - 1,
                    close_paise=price,
                    volume=i,
                )
            )
        part = prices[at : at + size]
        many.extend(
            np.arange(at, at + size, dtype=np.int64) * 60_000,
            np.stack(
                (
                    part / 100,
                    (part + 1) / 100,
                    (part - 1) / 100,
                    part / 100,
                    np.arange(at, at + size, dtype=np.float64),
                )
            ),
        )
        at += size
        assert len(one) == len(many)
        with pytest.raises(ValueError, match="shape"):
            many.extend(np.arange(1, dtype=np.int64), np.zeros((1, 5)))
        for name in ("open", "high", "low", "close", "volume", "start_ms"):
            assert np.array_equal(getattr(one, name), getattr(many, name)), name


def test_strategy_without_a_vectorised_form_says_none() -> None:
    class Plain(Strategy):
        name = "plain"

        @property
        def startup_candles(self) -> int:
            return 1

        def evaluate(self, candles: Any, *, position: Any, now: Any) -> list[Any]:
            return []

    s = random_series("NSE_EQ|A", days=1, seed=1)
    history = history_of(s)
    assert Plain().signal_candidates(history, window=300) is None
