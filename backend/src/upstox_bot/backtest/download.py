"""Fill the local cache of Upstox candles that backtests read (`upstox-bot data download`).

Layout: `<cache>/<timeframe>/<SYMBOL>/<chunk>.csv` plus `meta.json` with the instrument key, so
`--data <cache>/<timeframe>` is a folder of symbol folders that `backtest.data.load_bars` reads.
Minute and hour candles come in calendar-month chunks (`2025-01.csv`), daily candles in
calendar-year chunks (`2025.csv`): each chunk is one request within Upstox's span limits.
A chunk that ended before today is complete and is skipped on the next run (resume); the chunk
holding today is fetched again. Files are written whole (a temporary file, then a rename), so an
interrupted download never leaves half a chunk.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from upstox_bot.backtest.data import META_FILE, instrument_for
from upstox_bot.domain import IST, Instrument, ms_to_datetime
from upstox_bot.errors import ConfigError
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.models import CandleUnit, HistoricalCandle

_TIMEFRAME = re.compile(r"^(\d+)(m|h|d)$")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One request's date range (IST dates, inclusive) and the file it is cached in."""

    first: date
    last: date
    name: str


@dataclass(slots=True)
class DownloadReport:
    downloaded: int = 0  # chunks fetched
    skipped: int = 0  # chunks already cached and complete
    candles: int = 0  # candles written


def upstox_interval(timeframe: str) -> tuple[CandleUnit, int]:
    """ "1m" -> (minutes, 1), "2h" -> (hours, 2), "1d" -> (days, 1).

    Raises:
        ConfigError: not a timeframe Upstox serves.
    """
    match = _TIMEFRAME.match(timeframe.strip().lower())
    if not match:
        raise ConfigError(f"interval {timeframe!r}: expected e.g. 1m, 5m, 30m, 1h or 1d")
    number = int(match.group(1))
    unit = {"m": CandleUnit.MINUTES, "h": CandleUnit.HOURS, "d": CandleUnit.DAYS}[match.group(2)]
    if not 1 <= number <= unit.max_interval:
        raise ConfigError(f"interval {timeframe!r}: Upstox serves 1-{unit.max_interval} {unit}")
    return unit, number


def chunks(unit: CandleUnit, first: date, last: date) -> list[Chunk]:
    """Whole calendar months (minutes, hours) or years (days) covering first..last."""
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    out: list[Chunk] = []
    if unit in (CandleUnit.DAYS, CandleUnit.WEEKS):
        for year in range(first.year, last.year + 1):
            out.append(Chunk(date(year, 1, 1), date(year, 12, 31), f"{year}"))
        return out
    month = date(first.year, first.month, 1)
    while month <= last:
        following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        out.append(Chunk(month, following - timedelta(days=1), f"{month:%Y-%m}"))
        month = following
    return out


def resolve_instrument(symbol: str) -> Instrument:
    """The instrument of a trading symbol in the packaged universe, or of a raw instrument key
    ("NSE_EQ|INE002A01018", cached under the part after "|").

    Raises:
        ConfigError: a symbol that is neither.
    """
    text = symbol.strip()
    if "|" in text:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", text.split("|", 1)[1])
        return instrument_for(name, text)
    instrument = instrument_for(text.upper())
    if instrument.instrument_key == text.upper():
        raise ConfigError(
            f"symbol {symbol!r} is not in the packaged F&O universe; give its instrument key "
            "(e.g. NSE_EQ|INE002A01018)"
        )
    return instrument


def _write_chunk(path: Path, candles: Sequence[HistoricalCandle]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", "open", "high", "low", "close", "volume", "oi"])
        for c in candles:
            stamp = ms_to_datetime(c.start_ms).astimezone(IST).isoformat()
            prices = (f"{p // 100}.{p % 100:02d}" for p in (c.open_paise, c.high_paise))
            rest = (f"{p // 100}.{p % 100:02d}" for p in (c.low_paise, c.close_paise))
            out.writerow([stamp, *prices, *rest, c.volume, c.oi])
    os.replace(tmp, path)


async def download_candles(
    client: UpstoxClient,
    *,
    symbols: Sequence[str],
    timeframe: str,
    first: date,
    last: date,
    cache_dir: Path,
    today: date,
    on_chunk: Callable[[str, Chunk, bool], None] | None = None,
) -> DownloadReport:
    """Download the candles of `symbols` from first to last into the cache, skipping chunks
    cached earlier and complete.

    Args:
        client: a logged-in Upstox client.
        symbols: trading symbols of the packaged universe, or instrument keys.
        timeframe: "1m".."300m", "1h".."5h" or "1d".
        first, last: IST dates, inclusive (whole months or years are fetched).
        cache_dir: the cache root; files go under `<cache_dir>/<timeframe>/<SYMBOL>/`.
        today: the IST date now: chunks ending before it are complete.
        on_chunk: called after each chunk with (symbol, chunk, whether it was fetched).

    Raises:
        ConfigError: a bad timeframe, range or symbol.
        UpstoxApiError: Upstox refused a request (after the client's retries).
    """
    unit, interval = upstox_interval(timeframe)
    instruments = [resolve_instrument(s) for s in symbols]
    plan = chunks(unit, first, last)
    report = DownloadReport()
    root = cache_dir / timeframe.strip().lower()
    for instrument in instruments:
        folder = root / instrument.trading_symbol
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "instrument_key": instrument.instrument_key,
            "trading_symbol": instrument.trading_symbol,
        }
        (folder / META_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        for chunk in plan:
            path = folder / f"{chunk.name}.csv"
            if path.exists() and chunk.last < today:
                report.skipped += 1
                if on_chunk is not None:
                    on_chunk(instrument.trading_symbol, chunk, False)
                continue
            to_day = min(chunk.last, today)
            candles = (
                await client.historical_candles(
                    instrument.instrument_key, unit, interval, to_day, chunk.first
                )
                if chunk.first <= to_day
                else []
            )
            _write_chunk(path, candles)
            report.downloaded += 1
            report.candles += len(candles)
            if on_chunk is not None:
                on_chunk(instrument.trading_symbol, chunk, True)
    return report
