"""Backtest speed: `sma_crossover` over a million 1-minute bars, beside backtrader on the same bars.

Both run the same rules on the same seeded random walk (on a 25-paise grid): SMA(10)/SMA(30)
crossover, long only, one share, market orders filled at the next bar's open, no slippage, no
charges, no stop, target or trailing stop; intraday rules as configured by default (entries
decided at 09:20-14:45 IST, square-off at 15:15), no signal cooldown. The script prints bars per
second for each, their ratio, whether the two trade lists are identical, and the peak memory
(resource.getrusage) after our run and after backtrader's.

    python benchmarks/bench_backtest.py [--bars 1000000] [--profile] [--no-backtrader]

backtrader is a benchmark-only baseline, not a project dependency:

    pip install backtrader==1.9.78.123

Targets: identical trades, at least 20 times faster than backtrader, under 1 GB resident.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import time
from datetime import date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from typing import Any

import numpy as np

from upstox_bot.backtest.data import Dataset, instrument_for
from upstox_bot.backtest.models import BacktestRequest, BacktestTrade
from upstox_bot.backtest.service import run_backtest
from upstox_bot.clock import NseCalendar, session_open_ms
from upstox_bot.config import Settings
from upstox_bot.domain import IST
from upstox_bot.feed.replay import BarSeries

FAST, SLOW = 10, 30
BARS_PER_SESSION = 375
Trade = tuple[datetime, int, datetime, int]  # entry bar start (IST, naive), price, exit, price


def make_bars(count: int, seed: int = 20_260_101) -> BarSeries:
    """`count` 1-minute bars over consecutive NSE sessions from 2015: a seeded random walk."""
    calendar = NseCalendar.default()
    sessions = -(-count // BARS_PER_SESSION)
    days: list[date] = []
    day = date(2015, 1, 1)
    while len(days) < sessions:
        if calendar.is_trading_day(day):
            days.append(day)
        day += timedelta(days=1)
    minute = 60_000 * np.arange(BARS_PER_SESSION, dtype=np.int64)
    starts = np.concatenate([session_open_ms(d) + minute for d in days])[:count]
    rng = np.random.default_rng(seed)
    # Prices on a 25-paise grid are exact binary fractions of a rupee, so every moving average
    # is the correctly rounded mean in both programs and ties compare alike.
    steps = rng.integers(-3, 4, size=count) * 25
    close = np.maximum(50_000 + np.cumsum(steps), 500)
    open_ = np.concatenate(([50_000], close[:-1])) + rng.integers(-1, 2, size=count) * 25
    open_ = np.maximum(open_, 500)
    high = np.maximum(open_, close) + rng.integers(0, 3, size=count) * 25
    low = np.maximum(np.minimum(open_, close) - rng.integers(0, 3, size=count) * 25, 100)
    return BarSeries(
        instrument=instrument_for("BENCH"),
        interval_s=60,
        start_ms=starts.astype(np.int64),
        open=open_.astype(np.int64),
        high=high.astype(np.int64),
        low=low.astype(np.int64),
        close=close.astype(np.int64),
        volume=np.full(count, 1_000, dtype=np.int64),
    )


def _minute(at: datetime) -> datetime:
    return at.astimezone(IST).replace(second=0, microsecond=0, tzinfo=None)


def run_ours(series: BarSeries, profile: bool) -> tuple[float, list[Trade], int]:
    settings = Settings(
        _env_file=None,
        SIGNAL_COOLDOWN_MINUTES=0,
        ACCOUNT_SIZE=Decimal(100_000_000),
        MIN_ORDER_INTERVAL_SECONDS=0,
        MAX_ORDERS_PER_MINUTE=1000,
    )
    request = BacktestRequest(
        data="(in memory)",
        strategy="sma_crossover",
        params={"fast": FAST, "slow": SLOW},
        quantity=1,
        charges="none",
        stop_loss_pct=Decimal(0),
        take_profit_pct=Decimal(0),
        trailing_stop_pct=Decimal(0),
        slippage_bps=Decimal(0),
    )
    dataset = Dataset(series=(series,), interval_s=60)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = run_backtest(request, settings=settings, dataset=dataset)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    trades = [_as_trade(t) for t in result.trades]
    return elapsed, trades, len(result.open_positions)


def _as_trade(t: BacktestTrade) -> Trade:
    return (_minute(t.entry_time), t.entry_price_paise, _minute(t.exit_time), t.exit_price_paise)


def run_backtrader(series: BarSeries) -> tuple[float, list[Trade]]:
    import backtrader as bt  # type: ignore[import-untyped]

    starts = [
        datetime.fromtimestamp(ms / 1000, tz=IST).replace(tzinfo=None)
        for ms in series.start_ms.tolist()
    ]
    columns = [a / 100 for a in (series.open, series.high, series.low, series.close)]
    opens, highs, lows, closes = (c.tolist() for c in columns)
    volumes = series.volume.tolist()

    class ArrayFeed(bt.feed.DataBase):  # type: ignore[misc]
        def start(self) -> None:
            super().start()
            self._i = 0

        def _load(self) -> bool:
            i = self._i
            if i >= len(starts):
                return False
            self.lines.datetime[0] = bt.date2num(starts[i])
            self.lines.open[0] = opens[i]
            self.lines.high[0] = highs[i]
            self.lines.low[0] = lows[i]
            self.lines.close[0] = closes[i]
            self.lines.volume[0] = volumes[i]
            self.lines.openinterest[0] = 0
            self._i = i + 1
            return True

    entry_start, entry_end, square_off = day_time(9, 20), day_time(14, 45), day_time(15, 15)
    fills: list[tuple[datetime, int, bool]] = []

    class SmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.fast = bt.indicators.SMA(self.data.close, period=FAST)
            self.slow = bt.indicators.SMA(self.data.close, period=SLOW)

        def notify_order(self, order: Any) -> None:
            if order.status == order.Completed:
                at = bt.num2date(order.executed.dt)
                fills.append((at, round(order.executed.price * 100), order.isbuy()))

        def next(self) -> None:
            # The bar's candle closes one minute after its start: decisions are taken then.
            closes_at = (self.data.datetime.datetime(0) + timedelta(minutes=1)).time()
            up = self.fast[-1] <= self.slow[-1] and self.fast[0] > self.slow[0]
            down = self.fast[-1] >= self.slow[-1] and self.fast[0] < self.slow[0]
            if self.position:
                if down or closes_at == square_off:
                    self.close()
            elif up and entry_start <= closes_at <= entry_end:
                self.buy(size=1)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(ArrayFeed())
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(1e9)
    started = time.perf_counter()
    cerebro.run()
    elapsed = time.perf_counter() - started
    trades: list[Trade] = []
    for (entry_at, entry, is_buy), (exit_at, exit_, _) in zip(
        fills[::2], fills[1::2], strict=False
    ):
        assert is_buy
        trades.append((entry_at.replace(second=0, microsecond=0), entry, exit_at, exit_))
    return elapsed, trades


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true", help="profile our run (slower)")
    parser.add_argument("--no-backtrader", action="store_true")
    args = parser.parse_args()

    series = make_bars(args.bars)
    print(f"{args.bars:,} one-minute bars, SMA({FAST})/SMA({SLOW}) crossover, long only")
    ours_s, ours, still_open = run_ours(series, args.profile)
    ours_peak = _peak_mb()
    print(f"upstox-bot (live engine): {ours_s:8.2f} s  {args.bars / ours_s:12,.0f} bars/s")
    print(f"  trades: {len(ours):,} (+{still_open} open at the end); peak RSS {ours_peak:,.0f} MB")
    if args.no_backtrader:
        return
    try:
        import backtrader  # noqa: F401
    except ImportError:
        print("backtrader is not installed: pip install backtrader==1.9.78.123 (benchmark only)")
        return
    bt_s, theirs = run_backtrader(series)
    print(f"backtrader 1.9.78.123:    {bt_s:8.2f} s  {args.bars / bt_s:12,.0f} bars/s")
    print(f"  trades: {len(theirs):,}; peak RSS of the process now {_peak_mb():,.0f} MB")
    print(f"speed-up: {bt_s / ours_s:.1f}x (target >= 20x)")
    if ours == theirs:
        print("trade lists: identical")
    else:
        first = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        print(f"trade lists: DIFFER at trade {first}")
        print(f"  ours:       {ours[first] if first < len(ours) else None}")
        print(f"  backtrader: {theirs[first] if first < len(theirs) else None}")
    print(f"peak memory of our run: {ours_peak:,.0f} MB (target < 1024 MB)")


if __name__ == "__main__":
    main()
