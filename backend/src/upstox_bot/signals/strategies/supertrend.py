"""Supertrend: ATR bands around the candle midpoint that ratchet with the trend."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from upstox_bot.domain import Direction
from upstox_bot.signals import indicators
from upstox_bot.signals.base import Param, Strategy, StrategySignal, reversal_signals
from upstox_bot.signals.series import CandleSeries, FloatArray

Int8Array = npt.NDArray[np.int8]


def supertrend(
    high: FloatArray, low: FloatArray, close: FloatArray, period: int, multiplier: float
) -> tuple[FloatArray, Int8Array, FloatArray]:
    """Compute the supertrend line and direction of every candle.

    The bands are mid +- multiplier x ATR(period), mid = (high + low) / 2, ATR Wilder's (TA-Lib).
    The upper band only moves down while the trend is down (it resets upward only after a close
    above it), the lower band only moves up while the trend is up; the trend turns down on a close
    below the lower band and up on a close above the upper band. The first candle with an ATR
    seeds the trend: up when its close is at or above its midpoint, down otherwise.

    The recursion runs over the window in plain Python floats: about 0.1 ms for 300 candles,
    measured in docs/strategies.md, so recomputing the window on each closed candle is cheap and
    survives a restart with nothing to persist.

    Returns:
        (line, trend, atr): the supertrend value (the lower band in an up trend, the upper band in
        a down trend), +1 / -1 for up / down (0 before the ATR exists), and the ATR; line and atr
        are NaN where undefined.
    """
    n = len(close)
    atr = indicators.atr(high, low, close, period)
    line = np.full(n, np.nan)
    trend = np.zeros(n, dtype=np.int8)
    valid = np.flatnonzero(~np.isnan(atr))
    if len(valid) == 0:
        return line, trend, atr
    first = int(valid[0])
    mid = (high + low) / 2.0
    upper_basic = (mid + multiplier * atr).tolist()
    lower_basic = (mid - multiplier * atr).tolist()
    closes = close.tolist()
    upper, lower = upper_basic[first], lower_basic[first]
    direction = 1 if closes[first] >= float(mid[first]) else -1
    lines = [math.nan] * n
    directions = [0] * n
    lines[first] = lower if direction == 1 else upper
    directions[first] = direction
    previous_close = closes[first]
    for i in range(first + 1, n):
        basic = upper_basic[i]
        if basic < upper or previous_close > upper:
            upper = basic
        basic = lower_basic[i]
        if basic > lower or previous_close < lower:
            lower = basic
        price = closes[i]
        if direction == 1:
            if price < lower:
                direction = -1
        elif price > upper:
            direction = 1
        lines[i] = lower if direction == 1 else upper
        directions[i] = direction
        previous_close = price
    line[:] = lines
    trend[:] = directions
    return line, trend, atr


class SupertrendStrategy(Strategy):
    """Long when the supertrend flips up; out (and short, if allowed) when it flips down.

    A flip up closes a short and is a long entry; a flip down closes a long and is a short entry
    (taken only if the bot allows shorts). Strength is 0.5 for a close on the new line, growing
    to 1.0 as the close gets one ATR beyond it.
    """

    name = "supertrend"
    description = "supertrend(ATR period, multiplier) direction flips"
    parameters = (
        Param(
            name="period",
            kind=int,
            default=10,
            minimum=2,
            maximum=200,
            description="ATR period (candles)",
        ),
        Param(
            name="multiplier",
            kind=float,
            default=3.0,
            minimum=0.5,
            maximum=10.0,
            description="band width in ATRs",
        ),
    )

    @property
    def startup_candles(self) -> int:
        # ATR's first value is at index `period`; a flip needs the direction of two candles.
        return int(self.params["period"]) + 2

    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        if len(candles) < self.startup_candles:
            return ()
        line, trend, atr = supertrend(
            candles.high,
            candles.low,
            candles.close,
            int(self.params["period"]),
            float(self.params["multiplier"]),
        )
        before, after = int(trend[-2]), int(trend[-1])
        if before == 0 or before == after:
            return ()
        last_close = float(candles.close[-1])
        last_line, last_atr = float(line[-1]), float(atr[-1])
        snapshot = {
            "close": last_close,
            "supertrend": round(last_line, 4),
            "atr": round(last_atr, 4),
            "trend": float(after),
        }
        beyond = abs(last_close - last_line) / last_atr if last_atr > 0 else 1.0
        strength = round(0.5 + 0.5 * min(1.0, beyond), 4)
        word, side = ("up", "above") if after == 1 else ("down", "below")
        return reversal_signals(
            Direction.LONG if after == 1 else Direction.SHORT,
            position=position,
            strength=strength,
            entry_reason=f"supertrend flipped {word}: close {last_close:g} {side} {last_line:.2f}",
            exit_reason=f"supertrend flipped {word}",
            indicators=snapshot,
        )
