"""IST session days of a candle window and the session VWAP (reset each IST day), in numpy."""

from __future__ import annotations

from datetime import time

import numpy as np
import numpy.typing as npt

from upstox_bot.clock import DAY_MS, IST_OFFSET_MS, NseCalendar, minute_of_ist_day
from upstox_bot.signals.series import FloatArray


def ist_day_numbers(start_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of each candle's IST date (equal numbers: same session day)."""
    return (start_ms + IST_OFFSET_MS) // DAY_MS


def session_start_index(start_ms: npt.NDArray[np.int64]) -> int:
    """Index of the first candle of the window that shares the last candle's IST date.

    Raises:
        ValueError: the window is empty.
    """
    if len(start_ms) == 0:
        raise ValueError("empty candle window")
    days = ist_day_numbers(start_ms)
    earlier = np.flatnonzero(days != days[-1])
    return int(earlier[-1]) + 1 if len(earlier) else 0


def session_complete(
    start_ms: npt.NDArray[np.int64], session_open: time = NseCalendar.SESSION_OPEN
) -> bool:
    """Whether the window holds every candle of the last candle's session day so far.

    True when the window reaches back into an earlier IST day, or when its first candle starts at
    or before the session open; False when older candles of the day have slid out of the window
    (or were never seen, as when the bot starts mid-session with no history).
    """
    first = session_start_index(start_ms)
    if first > 0:
        return True
    open_minute = session_open.hour * 60 + session_open.minute
    return minute_of_ist_day(int(start_ms[0])) <= open_minute


def session_vwap(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
    start_ms: npt.NDArray[np.int64],
) -> FloatArray:
    """Volume-weighted average of the typical price (high + low + close) / 3 per IST day.

    Each element is the VWAP of its day's candles up to and including it; the sums restart at the
    first candle of every IST date. NaN where the day has traded no volume yet.
    """
    n = len(close)
    if n == 0:
        return np.empty(0)
    typical = (high + low + close) / 3.0
    cum_pv = np.cumsum(typical * volume)
    cum_v = np.cumsum(volume)
    days = ist_day_numbers(start_ms)
    new_day = np.empty(n, dtype=bool)
    new_day[0] = True
    np.not_equal(days[1:], days[:-1], out=new_day[1:])
    starts = np.flatnonzero(new_day)
    group = np.cumsum(new_day) - 1
    # Sums before each day's first candle, subtracted so every day starts from zero.
    base_pv = np.concatenate(([0.0], cum_pv))[starts][group]
    base_v = np.concatenate(([0.0], cum_v))[starts][group]
    day_v = cum_v - base_v
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = (cum_pv - base_pv) / day_v
    return np.where(day_v > 0, vwap, np.nan)
