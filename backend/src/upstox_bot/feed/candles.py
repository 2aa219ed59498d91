"""Candle aggregation: ticks into 1-minute candles, and 1-minute candles into multiples.

Buckets are aligned to the session open (09:15 IST), as NSE and Upstox align theirs: a 5-minute
candle spans 09:15-09:20, a 30-minute one 09:15-09:45, a 60-minute one 09:15-10:15. Ticks outside
the session are not candled. A minute with no tick has no candle (no flat fillers), so a gap in the
feed is a gap in the candles. A candle closes when a tick of a later bucket arrives for the same
instrument or when the clock passes its end (`flush`), whichever comes first; a tick older than the
instrument's open bucket is late and is counted, not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from upstox_bot.clock import DAY_MS, SESSION_CLOSE_MS, SESSION_OPEN_MS, ist_day_start_ms
from upstox_bot.domain import Candle, Tick


class _Builder:
    """The open candle of one instrument (mutable: this is the per-tick hot path)."""

    def __init__(self, start: int, end: int, price: int, last_volume: int) -> None:
        self.start = start
        self.end = end
        self.open = price
        self.high = price
        self.low = price
        self.close = price
        self.volume = 0
        self.ticks = 0
        self.last_volume = last_volume

    def to_candle(self, key: str, interval_s: int) -> Candle:
        return Candle(
            instrument_key=key,
            interval_s=interval_s,
            start_ms=self.start,
            open_paise=self.open,
            high_paise=self.high,
            low_paise=self.low,
            close_paise=self.close,
            volume=self.volume,
            ticks=self.ticks,
        )


@dataclass(slots=True)
class AggregatorStats:
    ticks: int = 0
    outside_session: int = 0
    late: int = 0
    candles: int = 0


class TickAggregator:
    """Builds candles of one interval (default 60 s) from ticks of many instruments.

    Volume: the difference of the cumulative day volume when ticks carry it (Upstox full feed,
    the simulator), else the sum of last traded quantities.
    """

    def __init__(
        self,
        interval_s: int = 60,
        *,
        session_open_offset_ms: int = SESSION_OPEN_MS,
        session_close_offset_ms: int = SESSION_CLOSE_MS,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._interval_ms = interval_s * 1000
        self._open_offset = session_open_offset_ms
        self._close_offset = session_close_offset_ms
        self._builders: dict[str, _Builder] = {}
        self._day_start = -1
        self._session_open = 0
        self._session_close = 0
        self.stats = AggregatorStats()

    def _set_day(self, ts_ms: int) -> None:
        day = ist_day_start_ms(ts_ms)
        self._day_start = day
        self._session_open = day + self._open_offset
        self._session_close = day + self._close_offset

    def state(self) -> list[list[object]]:
        """The open candles and volume baselines of every instrument, in the order the
        instruments were first seen (which is the order a flush closes candles in): JSON
        data that `restore_state` turns back into exactly this aggregator."""
        return [
            [key, b.start, b.end, b.open, b.high, b.low, b.close, b.volume, b.ticks, b.last_volume]
            for key, b in self._builders.items()
        ]

    def restore_state(self, rows: list[list[object]]) -> None:
        """Rebuild the aggregator from `state()` (a restart), before any trade is applied."""
        builders: dict[str, _Builder] = {}
        for row in rows:
            key = str(row[0])
            start, end, open_, high, low, close, volume, ticks, last = (
                int(str(v)) for v in row[1:]
            )
            builder = _Builder(start, end, open_, last)
            builder.high, builder.low, builder.close = high, low, close
            builder.volume, builder.ticks = volume, ticks
            builders[key] = builder
        self._builders = builders
        self._day_start = -1
        self._session_open = 0
        self._session_close = 0

    def on_tick(self, tick: Tick) -> Candle | None:
        """Apply a tick; return the candle it closed for its instrument, if any."""
        return self.on_trade(tick.instrument_key, tick.ts_ms, tick.ltp_paise, tick.ltq, tick.volume)

    def on_trade(
        self, key: str, ts: int, price: int, ltq: int, cumulative: int = 0
    ) -> Candle | None:
        """Apply a trade given by its fields (see `on_tick`; `cumulative` is the day volume,
        0 when unknown); return the candle it closed for its instrument, if any."""
        self.stats.ticks += 1
        if not (self._session_open <= ts < self._session_close):
            if ts - self._day_start >= DAY_MS or ts < self._day_start:
                self._set_day(ts)
            if not (self._session_open <= ts < self._session_close):
                self.stats.outside_session += 1
                return None
        builder = self._builders.get(key)
        closed: Candle | None = None
        if builder is not None and ts < builder.end:
            if ts < builder.start:
                self.stats.late += 1
                return None
            if price > builder.high:
                builder.high = price
            elif price < builder.low:
                builder.low = price
            builder.close = price
        else:
            last_volume = 0
            if builder is not None:
                if builder.ticks:
                    closed = builder.to_candle(key, self.interval_s)
                    self.stats.candles += 1
                last_volume = builder.last_volume
            start = (
                self._session_open
                + ((ts - self._session_open) // self._interval_ms) * self._interval_ms
            )
            end = min(start + self._interval_ms, self._session_close)
            # A new day's first candle must not subtract yesterday's cumulative volume.
            if builder is not None and builder.start < self._session_open:
                last_volume = 0
            builder = _Builder(start, end, price, last_volume)
            self._builders[key] = builder
        builder.ticks += 1
        if cumulative:
            if cumulative > builder.last_volume:
                builder.volume += cumulative - builder.last_volume
            builder.last_volume = cumulative
        else:
            builder.volume += ltq
        return closed

    def flush(self, now_ms: int) -> list[Candle]:
        """Close every open candle whose end is at or before now_ms, in instrument order."""
        closed: list[Candle] = []
        for key, builder in self._builders.items():
            if builder.end <= now_ms and builder.ticks:
                closed.append(builder.to_candle(key, self.interval_s))
                self.stats.candles += 1
                builder.ticks = 0  # closed: a later tick of this bucket would be late
                builder.start = builder.end
        return closed

    def open_candle(self, instrument_key: str) -> Candle | None:
        """The candle being built for an instrument, or None."""
        builder = self._builders.get(instrument_key)
        if builder is None or not builder.ticks:
            return None
        return builder.to_candle(instrument_key, self.interval_s)


class CandleResampler:
    """Rolls closed candles of a base interval up into a multiple, aligned to the session open."""

    def __init__(
        self,
        interval_s: int,
        *,
        base_interval_s: int = 60,
        session_open_offset_ms: int = SESSION_OPEN_MS,
        session_close_offset_ms: int = SESSION_CLOSE_MS,
    ) -> None:
        if interval_s % base_interval_s:
            raise ValueError("interval_s must be a multiple of base_interval_s")
        self.interval_s = interval_s
        self._interval_ms = interval_s * 1000
        self._base_interval_s = base_interval_s
        self._open_offset = session_open_offset_ms
        self._close_offset = session_close_offset_ms
        self._open: dict[str, Candle] = {}

    def _bucket(self, start_ms: int) -> tuple[int, int]:
        day = ist_day_start_ms(start_ms)
        session_open = day + self._open_offset
        start = session_open + ((start_ms - session_open) // self._interval_ms) * self._interval_ms
        return start, min(start + self._interval_ms, day + self._close_offset)

    def on_candle(self, candle: Candle) -> list[Candle]:
        """Add a closed base candle; return the multiples it completed, oldest first.

        A multiple closes when its last base candle arrives, or when a base candle of a later
        bucket arrives (its last minutes had no trade).
        """
        if candle.interval_s != self._base_interval_s:
            raise ValueError(f"expected {self._base_interval_s}s candles, got {candle.interval_s}s")
        start, end = self._bucket(candle.start_ms)
        key = candle.instrument_key
        completed: list[Candle] = []
        current = self._open.pop(key, None)
        if current is not None and current.start_ms != start:
            completed.append(current)
            current = None
        if current is None:
            current = Candle(
                instrument_key=key,
                interval_s=self.interval_s,
                start_ms=start,
                open_paise=candle.open_paise,
                high_paise=candle.high_paise,
                low_paise=candle.low_paise,
                close_paise=candle.close_paise,
                volume=candle.volume,
                ticks=candle.ticks,
            )
        else:
            current = Candle(
                instrument_key=key,
                interval_s=self.interval_s,
                start_ms=start,
                open_paise=current.open_paise,
                high_paise=max(current.high_paise, candle.high_paise),
                low_paise=min(current.low_paise, candle.low_paise),
                close_paise=candle.close_paise,
                volume=current.volume + candle.volume,
                ticks=current.ticks + candle.ticks,
            )
        if candle.end_ms >= end:
            completed.append(current)
        else:
            self._open[key] = current
        return completed

    def state(self) -> list[list[object]]:
        """The multiples being built, as JSON data for `restore_state`."""
        return [
            [
                c.instrument_key,
                c.start_ms,
                c.open_paise,
                c.high_paise,
                c.low_paise,
                c.close_paise,
                c.volume,
                c.ticks,
            ]
            for c in self._open.values()
        ]

    def restore_state(self, rows: list[list[object]]) -> None:
        """Rebuild the multiples being built from `state()` (a restart)."""
        self._open = {}
        for row in rows:
            key = str(row[0])
            start, open_, high, low, close, volume, ticks = (int(str(v)) for v in row[1:])
            self._open[key] = Candle(
                instrument_key=key,
                interval_s=self.interval_s,
                start_ms=start,
                open_paise=open_,
                high_paise=high,
                low_paise=low,
                close_paise=close,
                volume=volume,
                ticks=ticks,
            )

    def flush(self, now_ms: int) -> list[Candle]:
        """Close multiples whose bucket ended at or before now_ms."""
        closed = []
        for key in list(self._open):
            candle = self._open[key]
            _, end = self._bucket(candle.start_ms)
            if end <= now_ms:
                closed.append(self._open.pop(key))
        return closed
