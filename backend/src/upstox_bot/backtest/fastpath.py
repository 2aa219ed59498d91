"""The fast path's plan: which minutes of a backtest must be stepped tick by tick.

Stepping a bar through the engine costs tens of microseconds; most bars of a long backtest
change nothing but the candle window and the last price. Before the loop, a strategy that has
an exact vectorised form (`Strategy.signal_candidates`) says after which candles it may signal;
the minute of such a candle and the next one (where the candle closes, is evaluated and the
order fills) are always stepped. The rest is stepped only while something is pending (a working
order, a queued exit) or an open position could reach an exit level, the square-off time or the
daily loss limit inside the bar; otherwise the runner skips it with `Engine.extend_candles` and
`Engine.apply_quiet_prices`, which leave the engine as the ticks would have.

Only 1-minute bars traded as 1-minute candles, aligned to the minute and inside the session,
take this path: there each bar is exactly one candle of the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time

import numpy as np
import numpy.typing as npt

from upstox_bot.clock import (
    DAY_MS,
    IST_OFFSET_MS,
    MINUTE_MS,
    SESSION_CLOSE_MS,
    SESSION_OPEN_MS,
    ist_date_of_ms,
    ist_day_start_ms,
    time_of_day_ms,
)
from upstox_bot.domain import reduce_to_fields
from upstox_bot.feed.replay import BarSeries, path_offsets
from upstox_bot.signals.base import CandleHistory, Strategy
from upstox_bot.signals.series import ROWS

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SeriesArrays:
    """One series' bars as the candles the engine builds from their ticks."""

    start_ms: IntArray
    close_paise: IntArray
    last_offset_ms: IntArray  # offset of the bar path's last trade that is not a repeat
    min_paise: IntArray  # lowest trade of the bar's path: min(open, high, low, close)
    max_paise: IntArray  # highest trade of the path
    rows: FloatArray  # the candle window's rows (CandleSeries.extend): prices in rupees, volume

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True)
class FastPlan:
    """The minutes of the run (every bar start of every series, in order) and which must step."""

    minutes: IntArray
    days: tuple[tuple[date, int, int], ...]  # (IST date, first minute index, end index)
    next_must: IntArray  # for each minute index, the first index >= it in `build` or `full`
    build: BoolArray  # minutes whose candles must be built from their trades (candidates)
    full: BoolArray  # minutes that must be stepped through the engine (decisions, fills)
    bar_at: tuple[IntArray, ...]  # per series: index of its first bar at or after each minute
    series: tuple[SeriesArrays, ...]
    candidates: Mapping[str, frozenset[int]]  # start ms of the candles that may signal, by key

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    @classmethod
    def build_or_none(
        cls,
        series: Sequence[BarSeries],
        strategy: Strategy,
        *,
        candle_interval_s: int,
        window: int,
    ) -> FastPlan | None:
        """The plan, or None when the run must step every bar (no vectorised form, or bars
        that are not one engine candle each)."""
        if candle_interval_s != 60 or any(s.interval_s != 60 for s in series):
            return None
        for s in series:
            ms_of_day = (s.start_ms + IST_OFFSET_MS) % DAY_MS
            if (
                np.any(s.start_ms % MINUTE_MS)
                or np.any(ms_of_day < SESSION_OPEN_MS)
                or np.any(ms_of_day >= SESSION_CLOSE_MS)
                or np.any(np.diff(s.start_ms) <= 0)
            ):
                return None
        masks: list[BoolArray] = []
        for s in series:
            mask = strategy.signal_candidates(history_of(s), window=window)
            if mask is None:
                return None
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.shape != (len(s),):
                raise ValueError(f"{strategy.name}: signal_candidates gave {mask.shape} values")
            masks.append(mask)
        if len(series) == 1:
            minutes = series[0].start_ms  # strictly increasing (checked above)
        else:
            every = np.sort(np.concatenate([s.start_ms for s in series]))
            minutes = every[np.concatenate(([True], every[1:] != every[:-1]))]
        count = len(minutes)
        day_of = (minutes + IST_OFFSET_MS) // DAY_MS
        build = np.zeros(count + 1, dtype=np.bool_)
        full = np.zeros(count + 1, dtype=np.bool_)
        for s, mask in zip(series, masks, strict=True):
            at = np.searchsorted(minutes, s.start_ms[mask])
            # A candidate's candle must be built from its trades (it stays open in the
            # aggregator); it closes at the next minute's first trade (or at the close timer
            # when it is the day's last), which is stepped: the decision is taken there and
            # the order fills at the instrument's next trade.
            build[at] = True
            after = at + 1
            after = after[after < count]
            after = after[day_of[after] == day_of[after - 1]]
            full[after] = True
        full[count] = True
        # The first marked index at or after each index: a running minimum from the end.
        index = np.arange(count + 1, dtype=np.int64)
        next_must = np.minimum.accumulate(np.where(build | full, index, count)[::-1])[::-1][:count]
        bounds = np.flatnonzero(np.diff(day_of)) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        ends = np.concatenate((bounds, [count])).tolist()
        days = tuple(
            (ist_date_of_ms(int(minutes[lo])), int(lo), int(hi))
            for lo, hi in zip(starts, ends, strict=True)
        )
        return cls(
            minutes=minutes,
            days=days,
            next_must=next_must,
            build=build,
            full=full,
            bar_at=(
                (index,)  # one series: its bars are the minutes
                if len(series) == 1
                else tuple(np.searchsorted(s.start_ms, minutes).astype(np.int64) for s in series)
            ),
            series=tuple(_arrays(s) for s in series),
            candidates={
                s.instrument.instrument_key: frozenset(s.start_ms[mask].tolist())
                for s, mask in zip(series, masks, strict=True)
            },
        )

    def square_off_index(self, day_lo: int, day_hi: int, square_off: time | None) -> int:
        """The first minute of the day at or after the square-off time (day_hi if none)."""
        if square_off is None:
            return day_hi
        first = int(self.minutes[day_lo])
        at = ist_day_start_ms(first) + time_of_day_ms(square_off)
        return day_lo + int(np.searchsorted(self.minutes[day_lo:day_hi], at, "left"))


def _arrays(s: BarSeries) -> SeriesArrays:
    # bar_path: open, then the first extreme, the second and the close, each only when it
    # differs from the trade before it.
    offsets = path_offsets(s.span_ms)
    rising = s.close >= s.open
    first = np.where(rising, s.low, s.high)
    second = np.where(rising, s.high, s.low)
    previous = np.where(first != s.open, first, s.open)
    has_second = second != previous
    previous = np.where(has_second, second, previous)
    last_offset = np.where(
        s.close != previous,
        offsets[6],
        np.where(has_second, offsets[4], np.where(first != s.open, offsets[2], 0)),
    ).astype(np.int64)
    high = np.maximum(np.maximum(s.open, s.high), np.maximum(s.low, s.close))
    low = np.minimum(np.minimum(s.open, s.high), np.minimum(s.low, s.close))
    rows = np.empty((len(ROWS), len(s)))
    for row, values in enumerate((s.open, high, low, s.close)):
        np.divide(values, 100, out=rows[row])
    rows[4] = s.volume
    return SeriesArrays(
        start_ms=s.start_ms,
        close_paise=s.close,
        last_offset_ms=last_offset,
        min_paise=low,
        max_paise=high,
        rows=rows,
    )


def history_of(series: BarSeries) -> CandleHistory:
    """The bars of `series` as the candle history a strategy's `signal_candidates` reads."""
    return CandleHistory(
        start_ms=series.start_ms,
        open_paise=series.open,
        high_paise=series.high,
        low_paise=series.low,
        close_paise=series.close,
        volume=series.volume,
    )
