"""Scripted candle windows for strategy tests: build a CandleSeries, replay it like the engine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from tests.support.factories import TRADING_DATE, ist, ist_ms, make_candle
from upstox_bot.domain import Candle, Direction, SignalType
from upstox_bot.signals.base import Strategy
from upstox_bot.signals.series import CandleSeries

KEY = "NSE_EQ|INE062A01020"


def bars(
    closes: Sequence[float],
    *,
    highs: Sequence[float] | None = None,
    lows: Sequence[float] | None = None,
    volumes: Sequence[int] | None = None,
    start_ms: int | None = None,
    interval_s: int = 60,
) -> list[tuple[int, float, float, float, int]]:
    """(start_ms, high, low, close, volume) rows, one candle per close, back to back."""
    first = ist_ms(9, 15) if start_ms is None else start_ms
    return [
        (
            first + i * interval_s * 1000,
            highs[i] if highs is not None else close,
            lows[i] if lows is not None else close,
            close,
            volumes[i] if volumes is not None else 100,
        )
        for i, close in enumerate(closes)
    ]


def day_start_ms(day: date = TRADING_DATE) -> int:
    return ist_ms(9, 15, day=day)


def series(
    rows: Sequence[tuple[int, float, float, float, int]], interval_s: int = 60, capacity: int = 300
) -> CandleSeries:
    """A CandleSeries holding the rows (prices in rupees)."""
    out = CandleSeries(KEY, interval_s, capacity)
    for row in rows:
        out.append(_candle(row, interval_s))
    return out


def replay(
    strategy: Strategy,
    rows: Sequence[tuple[int, float, float, float, int]],
    *,
    position: Direction | None = None,
    interval_s: int = 60,
    capacity: int = 300,
) -> dict[int, list[SignalType]]:
    """Append the rows one by one and evaluate after each, as the engine does on candle close.

    Unlike the engine, the strategy is asked even before `startup_candles`, so tests can pin that
    it stays silent then. Returns the signal types said, by row index (silent rows left out).
    """
    window = CandleSeries(KEY, interval_s, capacity)
    said: dict[int, list[SignalType]] = {}
    for i, row in enumerate(rows):
        window.append(_candle(row, interval_s))
        out = strategy.evaluate(window, position=position, now=ist(15, 29))
        for s in out:
            assert 0.0 <= s.strength <= 1.0
            assert s.reason
            assert s.indicators["close"] == row[3]
        if out:
            said[i] = [s.type for s in out]
    return said


def _paise(rupees: float) -> int:
    return round(rupees * 100)


def _candle(row: tuple[int, float, float, float, int], interval_s: int) -> Candle:
    start, high, low, close, volume = row
    return make_candle(
        instrument_key=KEY,
        interval_s=interval_s,
        start_ms=start,
        open_paise=_paise(close),
        high_paise=_paise(max(high, close)),
        low_paise=_paise(min(low, close)),
        close_paise=_paise(close),
        volume=volume,
    )
