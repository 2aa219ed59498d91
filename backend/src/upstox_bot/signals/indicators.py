"""Indicators over candle arrays, computed by TA-Lib (float64 arrays in, arrays out)."""

from __future__ import annotations

import math

import numpy as np
import talib

from upstox_bot.signals.series import FloatArray


def ema(close: FloatArray, period: int) -> FloatArray:
    """Exponential moving average (TA-Lib seeds it with the SMA of the first `period` values)."""
    return np.asarray(talib.EMA(close, timeperiod=period), dtype=np.float64)


def sma(close: FloatArray, period: int) -> FloatArray:
    """Simple moving average."""
    return np.asarray(talib.SMA(close, timeperiod=period), dtype=np.float64)


def rsi(close: FloatArray, period: int) -> FloatArray:
    """Wilder's relative strength index, 0-100."""
    return np.asarray(talib.RSI(close, timeperiod=period), dtype=np.float64)


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int) -> FloatArray:
    """Average true range."""
    return np.asarray(talib.ATR(high, low, close, timeperiod=period), dtype=np.float64)


def _last_two(fast: FloatArray, slow: FloatArray) -> tuple[float, float, float, float] | None:
    if len(fast) < 2 or len(slow) < 2:
        return None
    values = (float(fast[-2]), float(fast[-1]), float(slow[-2]), float(slow[-1]))
    return None if any(math.isnan(v) for v in values) else values


def crossed_above(fast: FloatArray, slow: FloatArray) -> bool:
    """True when fast was at or below slow on the previous value and is above it now."""
    last = _last_two(fast, slow)
    if last is None:
        return False
    f0, f1, s0, s1 = last
    return f0 <= s0 and f1 > s1


def crossed_below(fast: FloatArray, slow: FloatArray) -> bool:
    """True when fast was at or above slow on the previous value and is below it now."""
    last = _last_two(fast, slow)
    if last is None:
        return False
    f0, f1, s0, s1 = last
    return f0 >= s0 and f1 < s1
