"""Opening range breakout."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from upstox_bot.clock import DAY_MS, IST_OFFSET_MS, MINUTE_MS, NseCalendar
from upstox_bot.domain import Direction, SignalType
from upstox_bot.signals.base import Param, Strategy, StrategySignal
from upstox_bot.signals.series import CandleSeries
from upstox_bot.signals.session import session_complete, session_start_index

_OPEN_MINUTE = NseCalendar.SESSION_OPEN.hour * 60 + NseCalendar.SESSION_OPEN.minute


class OpeningRangeBreakoutStrategy(Strategy):
    """Trade the first close outside the range of the session's first minutes.

    The opening range is the highest high and lowest low of the candles of the day (IST date of
    the candle start) that start within `range_minutes` of the 09:15 open. After it, the first
    close above the range high is a long entry and the first close below the range low a short
    entry: at most one entry per direction per day, however often the price comes back. A long
    is closed when the price closes back below the range low, a short above the range high.
    Nothing is said when the window no longer holds the whole day (see docs/strategies.md).
    """

    name = "orb"
    description = "opening range breakout: first close outside the first minutes' range"
    parameters = (
        Param(
            name="range_minutes",
            kind=int,
            default=15,
            minimum=1,
            maximum=180,
            description="length of the opening range from 09:15 IST (minutes)",
        ),
    )

    @property
    def startup_candles(self) -> int:
        # One candle to form the range, one to break it; the rest is checked per day.
        return 2

    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        if len(candles) < self.startup_candles:
            return ()
        start_ms = candles.start_ms
        if not session_complete(start_ms):
            return ()
        first = session_start_index(start_ms)
        minutes = ((start_ms[first:] + IST_OFFSET_MS) % DAY_MS) // MINUTE_MS
        range_end = _OPEN_MINUTE + int(self.params["range_minutes"])
        in_range = (minutes >= _OPEN_MINUTE) & (minutes < range_end)
        after = minutes >= range_end
        if not in_range.any() or not after[-1]:
            return ()
        range_high = float(candles.high[first:][in_range].max())
        range_low = float(candles.low[first:][in_range].min())
        closes_after = candles.close[first:][after]
        last_close = float(closes_after[-1])
        earlier = closes_after[:-1]
        previous = float(earlier[-1]) if len(earlier) else None
        width = range_high - range_low
        snapshot = {
            "close": last_close,
            "range_high": range_high,
            "range_low": range_low,
        }
        out: list[StrategySignal] = []
        if last_close > range_high:
            if position is Direction.SHORT and (previous is None or previous <= range_high):
                out.append(
                    StrategySignal(
                        type=SignalType.EXIT_SHORT,
                        strength=1.0,
                        reason=f"close {last_close:g} back above the opening range high",
                        indicators=snapshot,
                    )
                )
            if not bool(np.any(earlier > range_high)):
                out.append(
                    StrategySignal(
                        type=SignalType.ENTRY_LONG,
                        strength=_strength(last_close - range_high, width),
                        reason=f"first close {last_close:g} above the opening range high "
                        f"{range_high:g}",
                        indicators=snapshot,
                    )
                )
        elif last_close < range_low:
            if position is Direction.LONG and (previous is None or previous >= range_low):
                out.append(
                    StrategySignal(
                        type=SignalType.EXIT_LONG,
                        strength=1.0,
                        reason=f"close {last_close:g} back below the opening range low",
                        indicators=snapshot,
                    )
                )
            if not bool(np.any(earlier < range_low)):
                out.append(
                    StrategySignal(
                        type=SignalType.ENTRY_SHORT,
                        strength=_strength(range_low - last_close, width),
                        reason=f"first close {last_close:g} below the opening range low "
                        f"{range_low:g}",
                        indicators=snapshot,
                    )
                )
        return out


def _strength(beyond: float, width: float) -> float:
    """0.5 at the edge of the range, 1.0 once the close is a whole range width beyond it."""
    if width <= 0:
        return 1.0
    return round(0.5 + 0.5 * min(1.0, beyond / width), 4)
