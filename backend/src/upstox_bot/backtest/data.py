"""Historical bars from CSV files, folders of them, or the local cache of Upstox candles.

A CSV has a header row; its time column is `timestamp`, `datetime` or `date` (the first of those
present), then `open`, `high`, `low`, `close` and optionally `volume`, matched case-insensitively;
other columns are ignored. Times are ISO-8601 (a naive time is IST) or epoch seconds or
milliseconds. Rows with a date only (or every time at midnight) are daily bars. Prices are
rupees. Intraday bars must sit on the session grid (09:15 IST plus whole bars); bars outside the
NSE session are skipped and counted. Every refusal names the file, the line and the column.

Prices are kept as given: with `exact_prices` (backtests) a price with more than two decimals,
as split-adjusted history has (1.427083), is kept to the millionth of a rupee, and the dataset
says in how many units each paisa is counted (`price_scale`: 1, 10, 100, 1,000 or 10,000).
Without it (the replayed market) prices are rounded half up to the paisa.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import numpy.typing as npt

from upstox_bot.clock import (
    DAY_MS,
    IST_OFFSET_MS,
    MINUTE_MS,
    SESSION_MS,
    SESSION_OPEN_MS,
    ist_midnight_ms,
)
from upstox_bot.domain import Instrument
from upstox_bot.feed.replay import DAILY_INTERVAL_S, BarSeries
from upstox_bot.feed.sim import load_universe

TIME_COLUMNS = ("timestamp", "datetime", "date")
PRICE_COLUMNS = ("open", "high", "low", "close")
META_FILE = "meta.json"  # in a cache folder: {"instrument_key": ..., "trading_symbol": ...}

_EPOCH_NAIVE = datetime(1970, 1, 1)  # noqa: DTZ001 - the epoch as a naive value, for IST arithmetic


class DataError(ValueError):
    """Historical data could not be read: the message names the file, line and column."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """Bars of one or more instruments at one interval, and what was skipped while reading."""

    series: tuple[BarSeries, ...]
    interval_s: int
    skipped_bars: int = 0
    price_scale: int = 1  # price units per paisa: prices are paise x price_scale

    @property
    def daily(self) -> bool:
        return self.interval_s == DAILY_INTERVAL_S

    @property
    def bar_count(self) -> int:
        return sum(len(s) for s in self.series)

    def between(self, first: date | None, last: date | None) -> Dataset:
        """The bars of IST dates first..last (inclusive; None: unbounded)."""
        lo = None if first is None else ist_midnight_ms(first)
        hi = None if last is None else ist_midnight_ms(last) + DAY_MS
        return replace(self, series=tuple(s.between(lo, hi) for s in self.series))


@dataclass(slots=True)
class _Rows:
    start: list[int]
    open: list[int]
    high: list[int]
    low: list[int]
    close: list[int]
    volume: list[int]
    lines: list[int]
    date_only: list[bool]
    source: list[str]


MICRO_PER_PAISA = 10_000  # a millionth of a rupee, the finest price kept
_SCALES = (1, 10, 100, 1_000, 10_000)


def parse_micro(text: str) -> int:
    """Rupees as decimal text to integer millionths of a rupee (half up beyond six decimals).

    Raises:
        ValueError: not a decimal number.
    """
    text = text.strip()
    whole, dot, frac = text.partition(".")
    if whole.isdigit() and (not dot or (len(frac) <= 6 and frac.isdigit())):
        return int(whole) * 1_000_000 + (int(frac.ljust(6, "0")) if dot else 0)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    if not value.is_finite():
        raise ValueError(text)
    return int((value * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price_scale_of(micro: Iterable[npt.NDArray[np.int64]]) -> int:
    """The fewest price units per paisa that hold every price (in millionths) exactly."""
    scale = 1
    for values in micro:
        while scale < MICRO_PER_PAISA and np.any(values % (MICRO_PER_PAISA // scale)):
            scale *= 10
    return scale


def parse_paise(text: str) -> int:
    """Rupees as decimal text to integer paise (half up).

    Raises:
        ValueError: not a decimal number.
    """
    micro = parse_micro(text)
    return (2 * micro + MICRO_PER_PAISA) // (2 * MICRO_PER_PAISA)


def _parse_volume(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(text)
    return int(value)


def _parse_time(text: str) -> tuple[int, bool]:
    """(epoch ms, whether the text held a date only)."""
    text = text.strip()
    if text.isdigit():
        number = int(text)
        return (number if number >= 100_000_000_000 else number * 1000), False
    if len(text) == 10:
        day = date.fromisoformat(text)
        return ist_midnight_ms(day), True
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        delta = at - _EPOCH_NAIVE
        ms = delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000
        return ms - IST_OFFSET_MS, False
    return int(at.timestamp() * 1000), False


def _read_csv(path: Path, rows: _Rows) -> None:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file, expected a header row")
        names = [h.strip().lower() for h in header]
        time_col = next((c for c in TIME_COLUMNS if c in names), None)
        if time_col is None:
            raise DataError(f"{path} line 1: no time column (one of {', '.join(TIME_COLUMNS)})")
        missing = [c for c in PRICE_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{path} line 1: missing column(s) {', '.join(missing)}")
        it, io_, ih, il, ic = (names.index(c) for c in (time_col, *PRICE_COLUMNS))
        iv = names.index("volume") if "volume" in names else -1
        width = max(it, io_, ih, il, ic, iv) + 1
        source = str(path)
        for line, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width:
                raise DataError(f"{path} line {line}: {len(row)} fields, expected {len(names)}")
            column, index = time_col, it
            try:
                ms, date_only = _parse_time(row[it])
                column, index = "open", io_
                o = parse_micro(row[io_])
                column, index = "high", ih
                h = parse_micro(row[ih])
                column, index = "low", il
                low = parse_micro(row[il])
                column, index = "close", ic
                c = parse_micro(row[ic])
                column, index = "volume", iv
                v = _parse_volume(row[iv]) if iv >= 0 else 0
            except ValueError:
                raise DataError(
                    f"{path} line {line} column {column}: cannot read {row[index].strip()!r}"
                ) from None
            if min(o, h, low, c) < MICRO_PER_PAISA // 2:  # under half a paisa: rounds to 0
                raise DataError(f"{path} line {line}: prices must be positive")
            if h < max(o, c, low) or low > min(o, c):
                raise DataError(
                    f"{path} line {line} column high/low: high must be the highest and low the "
                    "lowest of the bar's prices"
                )
            if v < 0:
                raise DataError(f"{path} line {line} column volume: must not be negative")
            rows.start.append(ms)
            rows.open.append(o)
            rows.high.append(h)
            rows.low.append(low)
            rows.close.append(c)
            rows.volume.append(v)
            rows.lines.append(line)
            rows.date_only.append(date_only)
            rows.source.append(source)


def _where(rows: _Rows, i: int) -> str:
    return f"{rows.source[i]} line {rows.lines[i]}"


def _to_series(instrument: Instrument, rows: _Rows) -> tuple[BarSeries, int]:
    """Validate order and grid, convert daily starts, drop off-session bars; (series, skipped)."""
    n = len(rows.start)
    if n == 0:
        raise DataError(f"{instrument.trading_symbol}: no bars")
    for i in range(1, n):
        if rows.start[i] <= rows.start[i - 1]:
            raise DataError(
                f"{_where(rows, i)} column time: not after the row before "
                "(rows must be in time order, without repeats)"
            )
    start = np.asarray(rows.start, dtype=np.int64)
    day_start = (start + IST_OFFSET_MS) // DAY_MS * DAY_MS - IST_OFFSET_MS
    at_midnight = start == day_start
    daily = all(rows.date_only) or bool(at_midnight.all())
    if not daily and any(rows.date_only):
        i = rows.date_only.index(True)
        raise DataError(f"{_where(rows, i)} column time: a date without a time among intraday rows")
    keep = np.ones(n, dtype=bool)
    if daily:
        interval_s = DAILY_INTERVAL_S
        start = day_start + SESSION_OPEN_MS
    else:
        offset = start - day_start - SESSION_OPEN_MS
        keep = (offset >= 0) & (offset < SESSION_MS)
        kept = start[keep]
        same_day = ((kept[1:] - kept[:-1]) > 0) & (
            (kept[1:] + IST_OFFSET_MS) // DAY_MS == (kept[:-1] + IST_OFFSET_MS) // DAY_MS
        )
        gaps = (kept[1:] - kept[:-1])[same_day]
        interval_ms = int(gaps.min()) if len(gaps) else MINUTE_MS
        if interval_ms % MINUTE_MS:
            raise DataError(
                f"{rows.source[0]}: bars {interval_ms / 1000:g} s apart; intraday bars must be "
                "whole minutes"
            )
        interval_s = interval_ms // 1000
        off_grid = np.nonzero(keep & (offset % interval_ms != 0))[0]
        if len(off_grid):
            i = int(off_grid[0])
            raise DataError(
                f"{_where(rows, i)} column time: a {interval_s // 60}-minute bar must start at "
                "09:15 IST plus a whole number of bars"
            )
    series = BarSeries(
        instrument=instrument,
        interval_s=interval_s,
        start_ms=start[keep],
        open=np.asarray(rows.open, dtype=np.int64)[keep],
        high=np.asarray(rows.high, dtype=np.int64)[keep],
        low=np.asarray(rows.low, dtype=np.int64)[keep],
        close=np.asarray(rows.close, dtype=np.int64)[keep],
        volume=np.asarray(rows.volume, dtype=np.int64)[keep],
    )
    return series, int(n - keep.sum())


def instrument_for(symbol: str, instrument_key: str | None = None) -> Instrument:
    """The instrument of a symbol: from the packaged F&O universe when it is there (its key and
    tick size; one share per lot, as the bot trades the stock itself), else a plain one whose
    key is the symbol (or `instrument_key`)."""
    for instrument, _price in _universe():
        if instrument.trading_symbol == symbol or instrument.instrument_key == instrument_key:
            return replace(instrument, lot_size=1)
    return Instrument(
        instrument_key=instrument_key or symbol, trading_symbol=symbol, name=symbol, lot_size=1
    )


_UNIVERSE: list[tuple[Instrument, int]] = []


def _universe() -> list[tuple[Instrument, int]]:
    if not _UNIVERSE:
        _UNIVERSE.extend(load_universe())
    return _UNIVERSE


def _symbol_sources(path: Path) -> list[tuple[str, list[Path], str | None]]:
    """(symbol, its CSV files in order, its instrument key if a cache folder says so)."""
    if path.is_file():
        return [(path.stem, [path], None)]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    sources: list[tuple[str, list[Path], str | None]] = []
    for child in sorted(path.iterdir()):
        if child.is_file() and child.suffix.lower() == ".csv":
            sources.append((child.stem, [child], None))
        elif child.is_dir():
            files = sorted(f for f in child.glob("*.csv") if f.is_file())
            if not files:
                continue
            key = None
            meta = child / META_FILE
            if meta.is_file():
                try:
                    key = str(json.loads(meta.read_text("utf-8"))["instrument_key"])
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(f"{meta}: not a cache meta file ({e})") from None
            sources.append((child.name, files, key))
    if not sources:
        raise DataError(f"{path}: no CSV files")
    return sources


def load_bars(
    path: Path,
    *,
    symbols: Sequence[str] | None = None,
    first: date | None = None,
    last: date | None = None,
    exact_prices: bool = False,
) -> Dataset:
    """Read bars from a CSV, a folder of CSVs (one per symbol, named after it) or a cache
    folder (one subfolder of CSVs per symbol, as `data download` writes).

    Args:
        path: the file or folder.
        symbols: keep only these symbols (file or folder names); None keeps all.
        first, last: keep the IST dates first..last, inclusive.
        exact_prices: keep prices to the millionth of a rupee (the dataset's `price_scale`
            says how); False rounds them to the paisa.

    Raises:
        DataError: unreadable data (the message names file, line and column), a requested
            symbol that is not there, or symbols at different intervals.
    """
    sources = _symbol_sources(path)
    if symbols:
        wanted = {s.upper() for s in symbols}
        found = {s.upper() for s, _, _ in sources}
        absent = sorted(wanted - found)
        if absent:
            raise DataError(f"{path}: no data for {', '.join(absent)}")
        sources = [src for src in sources if src[0].upper() in wanted]
    series: list[BarSeries] = []
    skipped = 0
    for symbol, files, key in sources:
        rows = _Rows([], [], [], [], [], [], [], [], [])
        for file in files:
            _read_csv(file, rows)
        one, dropped = _to_series(instrument_for(symbol, key), rows)
        series.append(one)
        skipped += dropped
    intervals = {s.interval_s for s in series}
    if len(intervals) > 1:
        shown = ", ".join(f"{s.instrument.trading_symbol}={s.interval_s}s" for s in series)
        raise DataError(f"{path}: the symbols have different bar intervals ({shown})")
    keys = [s.instrument.instrument_key for s in series]
    if len(set(keys)) != len(keys):
        raise DataError(f"{path}: two files map to the same instrument")
    scale = price_scale_of(p for s in series for p in (s.open, s.high, s.low, s.close))
    if not exact_prices:
        scale = 1
    series = [_in_units(s, scale) for s in series]
    dataset = Dataset(
        series=tuple(series), interval_s=intervals.pop(), skipped_bars=skipped, price_scale=scale
    )
    if first is not None or last is not None:
        dataset = dataset.between(first, last)
    return dataset


def _in_units(series: BarSeries, scale: int) -> BarSeries:
    """Prices read in millionths of a rupee, as `scale` units per paisa (half up)."""
    step = MICRO_PER_PAISA // scale

    def units(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return ((values + step // 2) // step).astype(np.int64)

    return BarSeries(
        instrument=series.instrument,
        interval_s=series.interval_s,
        start_ms=series.start_ms,
        open=units(series.open),
        high=units(series.high),
        low=units(series.low),
        close=units(series.close),
        volume=series.volume,
    )


def write_csv(path: Path, series: BarSeries) -> None:
    """Write bars as a CSV this module reads back (ISO-8601 times in IST, rupees)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        out.writerows(_csv_rows(series))


def _csv_rows(series: BarSeries) -> Iterable[list[str]]:
    for start, o, h, low, c, v in zip(
        series.start_ms.tolist(),
        series.open.tolist(),
        series.high.tolist(),
        series.low.tolist(),
        series.close.tolist(),
        series.volume.tolist(),
        strict=True,
    ):
        at = _EPOCH_NAIVE + timedelta(milliseconds=start + IST_OFFSET_MS)
        stamp = at.date().isoformat() if series.daily else at.isoformat(sep=" ")
        yield [stamp, *(f"{p // 100}.{p % 100:02d}" for p in (o, h, low, c)), str(v)]
