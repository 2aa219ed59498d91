"""Bars replayed as trades: the one bar-to-tick path shared by the backtester and the replay market.

Each bar becomes a short, deterministic sequence of trades inside its interval, so that the
engine, the paper broker and the exit manager see a bar the way they see a live session:

    slot  offset in the bar             price
    0     0 ms (the bar's start)        open
    1     1 ms                          open again (a repeat)
    2     one third of the bar          first extreme: low if close >= open, else high
    3     one third + 1 ms              first extreme again (a repeat)
    4     two thirds of the bar         second extreme: high if close >= open, else low
    5     two thirds + 1 ms             second extreme again (a repeat)
    6     the bar's last second         close

A price equal to the one before it on the path is left out together with its repeat (a flat bar
is just its open and the repeat). The repeats exist for the paper broker's rule that a MARKET
order fills at the first trade after it was placed: an order decided on the open (a candle that
closed when the bar's first trade arrived, or a square-off) fills at the open, and an exit
triggered at an extreme fills at that extreme, never at the next extreme of the bar. The whole
bar's volume is on the open trade. Offsets are whole seconds (plus the 1 ms of a repeat), so a
repeat never crosses a minute boundary.

Daily bars span the NSE session (09:15 to 15:30 IST) of their date.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from upstox_bot.clock import DAY_MS, IST_OFFSET_MS, SESSION_MS, ist_midnight_ms
from upstox_bot.domain import Instrument, Tick, reduce_to_fields

IntArray = npt.NDArray[np.int64]

DAILY_INTERVAL_S = 86_400  # the interval of daily bars (one bar per session)
_CHUNK_BARS = 16_384

# One step of a bar's path: (offset in the bar in ms, price in paise, is a repeat).
PathStep = tuple[int, int, bool]
# One trade of a merged replay: (epoch ms, instrument index, price paise, quantity, is a repeat).
ReplayTrade = tuple[int, int, int, int, bool]


@lru_cache(maxsize=64)
def path_offsets(span_ms: int) -> tuple[int, int, int, int, int, int, int]:
    """Offsets (ms) of the seven path slots in a bar spanning `span_ms` (at least 6 seconds)."""
    if span_ms < 6_000 or span_ms % 1000:
        raise ValueError("a bar must span a whole number of seconds, at least 6")
    third = (span_ms // 3000) * 1000
    return (0, 1, third, third + 1, 2 * third, 2 * third + 1, span_ms - 1000)


def bar_path(
    open_paise: int, high_paise: int, low_paise: int, close_paise: int, span_ms: int
) -> list[PathStep]:
    """The trades one bar becomes: (offset ms, price paise, is a repeat), in time order.

    This is the single definition of the bar path (see the module docstring); the backtester
    and `ReplayMarket` both build their ticks from it.
    """
    offsets = path_offsets(span_ms)
    if close_paise >= open_paise:
        first, second = low_paise, high_paise
    else:
        first, second = high_paise, low_paise
    path: list[PathStep] = [(0, open_paise, False), (1, open_paise, True)]
    previous = open_paise
    if first != previous:
        path.append((offsets[2], first, False))
        path.append((offsets[3], first, True))
        previous = first
    if second != previous:
        path.append((offsets[4], second, False))
        path.append((offsets[5], second, True))
        previous = second
    if close_paise != previous:
        path.append((offsets[6], close_paise, False))
    return path


def bar_ticks(
    instrument_key: str,
    start_ms: int,
    span_ms: int,
    open_paise: int,
    high_paise: int,
    low_paise: int,
    close_paise: int,
    volume: int,
) -> list[Tick]:
    """The ticks of one bar (its `bar_path` as `Tick`s; the volume on the first)."""
    return [
        Tick(
            instrument_key=instrument_key,
            ts_ms=start_ms + offset,
            ltp_paise=price,
            ltq=volume if offset == 0 else 0,
        )
        for offset, price, _repeat in bar_path(
            open_paise, high_paise, low_paise, close_paise, span_ms
        )
    ]


def _empty() -> IntArray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class BarSeries:
    """The bars of one instrument, oldest first, as parallel int64 arrays (prices in paise).

    `interval_s` is the bar length (60 x minutes), or `DAILY_INTERVAL_S` for daily bars, whose
    `start_ms` is the session open (09:15 IST) of their date.
    """

    instrument: Instrument
    interval_s: int
    start_ms: IntArray = field(default_factory=_empty)
    open: IntArray = field(default_factory=_empty)
    high: IntArray = field(default_factory=_empty)
    low: IntArray = field(default_factory=_empty)
    close: IntArray = field(default_factory=_empty)
    volume: IntArray = field(default_factory=_empty)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    def __len__(self) -> int:
        return len(self.start_ms)

    @property
    def daily(self) -> bool:
        return self.interval_s == DAILY_INTERVAL_S

    @property
    def span_ms(self) -> int:
        """How long one bar's trades last: the interval, or the session for daily bars."""
        return SESSION_MS if self.daily else self.interval_s * 1000

    def between(self, start_ms: int | None, end_ms: int | None) -> BarSeries:
        """The bars whose start is in [start_ms, end_ms) (None: unbounded)."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.start_ms, start_ms, "left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.start_ms, end_ms, "left"))
        return BarSeries(
            instrument=self.instrument,
            interval_s=self.interval_s,
            start_ms=self.start_ms[lo:hi],
            open=self.open[lo:hi],
            high=self.high[lo:hi],
            low=self.low[lo:hi],
            close=self.close[lo:hi],
            volume=self.volume[lo:hi],
        )

    def trading_dates(self) -> list[date]:
        """The IST dates that have bars, in order."""
        days = (self.start_ms + IST_OFFSET_MS) // DAY_MS
        ordinal = date(1970, 1, 1).toordinal()
        return [date.fromordinal(ordinal + int(d)) for d in np.unique(days)]


def _series_trades(series: BarSeries, index: int) -> Iterator[ReplayTrade]:
    span = series.span_ms
    # Python ints are made a chunk at a time: a million bars as lists would take ~200 MB.
    for lo in range(0, len(series), _CHUNK_BARS):
        hi = lo + _CHUNK_BARS
        for start, o, h, low, c, v in zip(
            series.start_ms[lo:hi].tolist(),
            series.open[lo:hi].tolist(),
            series.high[lo:hi].tolist(),
            series.low[lo:hi].tolist(),
            series.close[lo:hi].tolist(),
            series.volume[lo:hi].tolist(),
            strict=True,
        ):
            for offset, price, repeat in bar_path(o, h, low, c, span):
                yield (start + offset, index, price, v if offset == 0 else 0, repeat)


def replay_trades(series: Sequence[BarSeries]) -> Iterator[ReplayTrade]:
    """Every bar path of every series merged in time order; equal times in series order."""
    streams = [_series_trades(s, i) for i, s in enumerate(series)]
    if len(streams) == 1:
        return streams[0]
    # (ts, index) is unique: within one series the times strictly increase.
    return heapq.merge(*streams)


class ReplayMarket:
    """A market replayed from bars, with the interface of `feed.sim.SimulatedMarket`.

    `iter_ticks()` yields the trades of `bar_path` for every bar of the session (or of all the
    data when no date is given), merged across instruments in time order. The backtester drives
    the engine with exactly these trades, so a replayed session and a backtest agree.
    """

    def __init__(self, series: Sequence[BarSeries], *, trading_date: date | None = None) -> None:
        """Set up a replay.

        Args:
            series: the bars per instrument (distinct instrument keys).
            trading_date: replay this IST date only; None replays everything.

        Raises:
            ValueError: no series, or a repeated instrument key.
        """
        if not series:
            raise ValueError("no bars to replay")
        keys = [s.instrument.instrument_key for s in series]
        if len(set(keys)) != len(keys):
            raise ValueError("instrument keys must be distinct")
        self._trading_date = trading_date
        if trading_date is not None:
            lo = ist_midnight_ms(trading_date)
            series = [s.between(lo, lo + DAY_MS) for s in series]
        self._series = tuple(series)
        self._keys = tuple(keys)
        self._last: dict[str, int] = {}
        self._finished = False

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """The replayed instruments, in the order given."""
        return tuple(s.instrument for s in self._series)

    @property
    def trading_date(self) -> date | None:
        """The replayed IST date, or None for all the data."""
        return self._trading_date

    @property
    def finished(self) -> bool:
        """Whether the latest `iter_ticks()` ran to the end."""
        return self._finished

    def trading_dates(self) -> list[date]:
        """The IST dates with at least one bar, in order."""
        return sorted({d for s in self._series for d in s.trading_dates()})

    def closing_prices(self) -> dict[str, int]:
        """Last traded price (paise) of each instrument among the ticks handed out so far."""
        return dict(self._last)

    def iter_ticks(self) -> Iterator[Tick]:
        """Yield the ticks of the replay in non-decreasing `ts_ms` order."""
        self._finished = False
        self._last = {}
        keys = self._keys
        last = self._last
        for ts, index, price, quantity, _repeat in replay_trades(self._series):
            key = keys[index]
            last[key] = price
            yield Tick(instrument_key=key, ts_ms=ts, ltp_paise=price, ltq=quantity)
        self._finished = True
