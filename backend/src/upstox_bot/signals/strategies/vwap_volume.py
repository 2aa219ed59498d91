"""VWAP momentum on a volume surge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from upstox_bot.domain import Direction, SignalType
from upstox_bot.signals.base import Param, Strategy, StrategySignal
from upstox_bot.signals.series import CandleSeries, FloatArray
from upstox_bot.signals.session import ist_day_numbers, session_complete, session_vwap


class VwapVolumeStrategy(Strategy):
    """Long when a candle closes above the session VWAP on a volume surge; out below VWAP.

    The session VWAP is the volume-weighted typical price (high + low + close) / 3 of the IST
    day so far. A surge is a candle volume above `volume_factor` times the average volume of the
    `volume_period` candles before it. The entry fires on the candle where "close above VWAP and
    surge" becomes true (not on the following candles while it stays true); a long is closed
    when the close crosses back below the VWAP. Shorts mirror it (close below VWAP on a surge,
    closed when the close crosses back above).
    """

    name = "vwap_volume"
    description = "close beyond the session VWAP on a volume surge; exit on the VWAP cross back"
    parameters = (
        Param(
            name="volume_period",
            kind=int,
            default=20,
            minimum=2,
            maximum=200,
            description="candles in the average volume a surge is measured against",
        ),
        Param(
            name="volume_factor",
            kind=float,
            default=2.0,
            minimum=1.0,
            maximum=20.0,
            description="a surge is a volume above this multiple of the average",
        ),
    )

    @property
    def startup_candles(self) -> int:
        # The surge test on the last two candles, each against the `volume_period` before it.
        return int(self.params["volume_period"]) + 2

    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        if len(candles) < self.startup_candles:
            return ()
        start_ms = candles.start_ms
        if not session_complete(start_ms):
            return ()
        period = int(self.params["volume_period"])
        factor = float(self.params["volume_factor"])
        close, volume = candles.close, candles.volume
        vwap = session_vwap(candles.high, candles.low, close, volume, start_ms)
        if np.isnan(vwap[-1]):
            return ()
        average = _trailing_mean(volume, period)
        surge = volume[-2:] > factor * average
        above = close[-2:] > vwap[-2:]
        below = close[-2:] < vwap[-2:]
        same_day = bool(ist_day_numbers(start_ms[-2:])[0] == ist_day_numbers(start_ms[-2:])[1])
        last_close, last_vwap = float(close[-1]), float(vwap[-1])
        ratio = float(volume[-1] / average[-1]) if average[-1] > 0 else float("inf")
        snapshot = {
            "close": last_close,
            "vwap": round(last_vwap, 4),
            "volume": float(volume[-1]),
            "average_volume": round(float(average[-1]), 4),
        }
        strength = round(0.5 + 0.5 * min(1.0, (ratio - factor) / factor), 4)
        out: list[StrategySignal] = []
        if (
            position is Direction.LONG
            and same_day
            and not np.isnan(vwap[-2])
            and close[-2] >= vwap[-2]
            and below[1]
        ):
            out.append(
                StrategySignal(
                    type=SignalType.EXIT_LONG,
                    strength=1.0,
                    reason=f"close {last_close:g} crossed below VWAP {last_vwap:.2f}",
                    indicators=snapshot,
                )
            )
        if (
            position is Direction.SHORT
            and same_day
            and not np.isnan(vwap[-2])
            and close[-2] <= vwap[-2]
            and above[1]
        ):
            out.append(
                StrategySignal(
                    type=SignalType.EXIT_SHORT,
                    strength=1.0,
                    reason=f"close {last_close:g} crossed above VWAP {last_vwap:.2f}",
                    indicators=snapshot,
                )
            )
        if surge[1] and above[1] and not (surge[0] and above[0]):
            out.append(
                StrategySignal(
                    type=SignalType.ENTRY_LONG,
                    strength=strength,
                    reason=f"close {last_close:g} above VWAP {last_vwap:.2f} on volume "
                    f"{ratio:.1f}x the {period}-candle average",
                    indicators=snapshot,
                )
            )
        elif surge[1] and below[1] and not (surge[0] and below[0]):
            out.append(
                StrategySignal(
                    type=SignalType.ENTRY_SHORT,
                    strength=strength,
                    reason=f"close {last_close:g} below VWAP {last_vwap:.2f} on volume "
                    f"{ratio:.1f}x the {period}-candle average",
                    indicators=snapshot,
                )
            )
        return out


def _trailing_mean(volume: FloatArray, period: int) -> FloatArray:
    """Mean volume of the `period` candles before each of the last two candles."""
    return np.array(
        [volume[-period - 2 : -2].mean(), volume[-period - 1 : -1].mean()], dtype=np.float64
    )
