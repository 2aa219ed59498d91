"""Simple moving average crossover."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from upstox_bot.domain import Direction
from upstox_bot.errors import ConfigError
from upstox_bot.signals import indicators
from upstox_bot.signals.base import (
    CandleHistory,
    Param,
    Strategy,
    StrategySignal,
    reversal_signals,
)
from upstox_bot.signals.series import CandleSeries

# Unit roundoff of float64: the error bound of one rounded operation, relative to its result.
_ROUNDOFF = 2.0**-53


class SmaCrossoverStrategy(Strategy):
    """Long when SMA(fast) crosses above SMA(slow); flat when it crosses back below.

    The short side mirrors it: a cross below is a short entry (taken only if the bot allows
    shorts) and a cross above closes a short. Strength is 0.5 for a bare cross, growing to 1.0 as
    the gap between the averages reaches 0.1 % of the close.
    """

    name = "sma_crossover"
    description = "SMA(fast)/SMA(slow) crossover"
    parameters = (
        Param(
            name="fast",
            kind=int,
            default=10,
            minimum=2,
            maximum=200,
            description="fast SMA period (candles)",
        ),
        Param(
            name="slow",
            kind=int,
            default=30,
            minimum=3,
            maximum=500,
            description="slow SMA period (candles)",
        ),
    )

    def validate(self) -> None:
        if self.params["fast"] >= self.params["slow"]:
            raise ConfigError("parameter fast: must be smaller than slow")

    @property
    def startup_candles(self) -> int:
        # SMA(slow) on the last two candles: its first value is at index slow - 1.
        return int(self.params["slow"]) + 1

    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        if len(candles) < self.startup_candles:
            return ()
        fast_period, slow_period = int(self.params["fast"]), int(self.params["slow"])
        # Only the last two values of each average matter: slow + 1 closes define them.
        close = candles.close[-(slow_period + 1) :]
        fast = indicators.sma(close, fast_period)
        slow = indicators.sma(close, slow_period)
        up = indicators.crossed_above(fast, slow)
        down = not up and indicators.crossed_below(fast, slow)
        if not (up or down):
            return ()
        last_close = float(close[-1])
        snapshot = {
            "close": last_close,
            "sma_fast": round(float(fast[-1]), 4),
            "sma_slow": round(float(slow[-1]), 4),
        }
        gap = abs(float(fast[-1]) - float(slow[-1])) / last_close
        strength = round(0.5 + 0.5 * min(1.0, gap * 1000), 4)
        word = "above" if up else "below"
        return reversal_signals(
            Direction.LONG if up else Direction.SHORT,
            position=position,
            strength=strength,
            entry_reason=f"SMA{fast_period} crossed {word} SMA{slow_period}",
            exit_reason=f"SMA fast crossed {word} slow",
            indicators=snapshot,
        )

    def signal_candidates(
        self, history: CandleHistory, *, window: int
    ) -> npt.NDArray[np.bool_] | None:
        """Candles where the averages may cross, by exact integer sums with a float margin.

        `evaluate` compares TA-Lib averages of float rupees, whose last bits depend on the
        window they are summed over; here the sums are exact (integer paise), and a candle is
        a candidate when the exact comparison, moved by more than the float error can move
        it, could still read as a cross. Away from ties that is exactly the crossing candles.
        """
        count = len(history)
        fast_n, slow_n = int(self.params["fast"]), int(self.params["slow"])
        candidates = np.zeros(count, dtype=np.bool_)
        if window < self.startup_candles or count < self.startup_candles:
            return candidates
        close = history.close_paise.astype(np.int64, copy=False)
        sums = np.empty(count + 1, dtype=np.int64)
        sums[0] = 0
        np.cumsum(close, out=sums[1:])
        # gap[k] = fast_n * slow_n * (SMA fast - SMA slow) at candle k + slow_n - 1 in paise,
        # exactly: sums[i + 1] - sums[i + 1 - n] is the sum of the n closes ending at candle i.
        last = sums[slow_n:]
        fast_sum = last - sums[slow_n - fast_n : count + 1 - fast_n]
        slow_sum = last - sums[: count + 1 - slow_n]
        gap = fast_sum * slow_n - slow_sum * fast_n
        # evaluate() sums slow_n + 1 closes in a running total (adds and subtracts): each SMA
        # is off by at most (2 * length + 2) roundoffs of the largest close, the difference by
        # twice that; the margin is twice that again, in the units of `gap`.
        length = slow_n + 1
        largest_rupees = float(close.max()) / 100 + 1
        margin = 4 * (2 * length + 2) * _ROUNDOFF * largest_rupees * 100 * fast_n * slow_n
        before, now = gap[:-1], gap[1:]
        up = (before <= margin) & (now > -margin)
        down = (before >= -margin) & (now < margin)
        # gap[k] belongs to candle k + slow_n - 1; a cross needs the previous value too, so the
        # first candidate is candle slow_n (the startup_candles-th candle).
        candidates[slow_n:] = up | down
        return candidates
