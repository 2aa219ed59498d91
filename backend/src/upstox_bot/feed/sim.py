"""Seeded simulated NSE market: a whole session of ticks for many stocks, the same for a seed.

Each instrument's day comes from its own numpy PCG64 stream, seeded from the market seed, a CRC-32
of its instrument key and the trading date, so a stock's ticks do not depend on which other stocks
are simulated nor on the speed the caller replays them at (nothing here reads the wall clock).

The price model works on a one-second grid of the session: an opening gap against the previous
close, then a geometric random walk whose log-return is the sum of a regime drift (up trends, down
trends and flat chop, switching at random with occasional straight reversals), diffusion scaled by
the intraday U-shaped activity profile, a mean-reverting Ornstein-Uhlenbeck wiggle, rare jumps,
and on a few stock-days a strong trend of 4.5-8 % over one to three hours. Trades arrive as a
Poisson process whose rate follows the same U-shaped profile (busy at the open and the close) and
print at the bid or the ask around the path, rounded to the tick size.

The paths are precomputed per session; arrivals and tick fields are generated in time chunks with
vectorised numpy, merged across instruments by a stable sort, and turned into `Tick` objects lazily.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import math
import types
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from upstox_bot.clock import NseCalendar
from upstox_bot.domain import Instrument, Tick

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

UNIVERSE_COLUMNS = (
    "instrument_key",
    "trading_symbol",
    "name",
    "isin",
    "lot_size",
    "tick_size_paise",
    "sector",
    "approx_price_paise",
)

_SEED_MASK = (1 << 64) - 1
_SECONDS_PER_MINUTE = 60


def load_universe(
    path: Path | None = None, limit: int | None = None
) -> list[tuple[Instrument, int]]:
    """Read instruments and their approximate prices (paise) from a universe CSV.

    Args:
        path: a CSV with the columns of `UNIVERSE_COLUMNS`; None reads the packaged sample of 92
            NSE F&O stocks (reference data, not a live universe).
        limit: keep only the first `limit` rows (file order).

    Returns:
        (instrument, approx_price_paise) pairs in file order.

    Raises:
        ValueError: a column is missing, a number is not a positive integer, or a key repeats.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    if path is None:
        text = resources.files("upstox_bot.data").joinpath("fno_universe.csv").read_text("utf-8")
        return _read_universe(io.StringIO(text, newline=""), "fno_universe.csv", limit)
    with path.open(newline="", encoding="utf-8") as handle:
        return _read_universe(handle, str(path), limit)


def _read_universe(
    handle: Iterable[str], source: str, limit: int | None
) -> list[tuple[Instrument, int]]:
    reader = csv.DictReader(handle)
    missing = [c for c in UNIVERSE_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{source}: missing columns {', '.join(missing)}")
    out: list[tuple[Instrument, int]] = []
    seen: set[str] = set()
    for row in reader:
        if limit is not None and len(out) >= limit:
            break
        line = reader.line_num
        key = row["instrument_key"].strip()
        if not key or key in seen:
            raise ValueError(f"{source} line {line}: empty or repeated instrument_key {key!r}")
        seen.add(key)
        numbers: dict[str, int] = {}
        for column in ("lot_size", "tick_size_paise", "approx_price_paise"):
            text = row[column].strip()
            if not text.isdigit() or int(text) <= 0:
                raise ValueError(f"{source} line {line}: {column} must be a positive integer")
            numbers[column] = int(text)
        instrument = Instrument(
            instrument_key=key,
            trading_symbol=row["trading_symbol"].strip(),
            name=row["name"].strip(),
            isin=row["isin"].strip(),
            lot_size=numbers["lot_size"],
            tick_size_paise=numbers["tick_size_paise"],
            sector=row["sector"].strip(),
            segment=key.split("|", 1)[0],
        )
        out.append((instrument, numbers["approx_price_paise"]))
    return out


TickFactory = Callable[[str, int, int, int, int, int, int, int, int, int], Tick]


def _plain_tick(
    key: str,
    ts_ms: int,
    ltp: int,
    ltq: int,
    volume: int,
    close: int,
    bid: int,
    ask: int,
    bid_qty: int,
    ask_qty: int,
) -> Tick:
    return Tick(
        instrument_key=key,
        ts_ms=ts_ms,
        ltp_paise=ltp,
        ltq=ltq,
        volume=volume,
        close_paise=close,
        bid_paise=bid,
        ask_paise=ask,
        bid_qty=bid_qty,
        ask_qty=ask_qty,
    )


_GIVEN_TICK_FIELDS = (
    "instrument_key",
    "ts_ms",
    "ltp_paise",
    "ltq",
    "volume",
    "close_paise",
    "bid_paise",
    "ask_paise",
    "bid_qty",
    "ask_qty",
)


def _fast_tick_factory() -> TickFactory | None:
    """A Tick constructor that fills the fields directly, or None if Tick's shape forbids it.

    The frozen dataclass __init__ pays an object.__setattr__ per field (about 2.8 us a tick);
    writing through the field descriptors (a slots dataclass's slots, or a compiled Tick's
    native fields) builds an identical object three times faster. It is only valid while Tick
    has no __post_init__ and its other fields have plain defaults, which is checked here.
    """
    fields = dataclasses.fields(Tick)
    if hasattr(Tick, "__post_init__") or not set(_GIVEN_TICK_FIELDS) <= {f.name for f in fields}:
        return None
    descriptors = {f.name: inspect.getattr_static(Tick, f.name, None) for f in fields}
    kinds = {type(d) for d in descriptors.values()}
    if kinds == {types.GetSetDescriptorType} and Tick.__new__ is not object.__new__:
        # A compiled Tick: native fields with setters, allocated by its own __new__.
        new: Callable[[type[Tick]], Tick] = Tick.__new__
    elif kinds == {types.MemberDescriptorType}:
        new = object.__new__
    else:
        return None
    rest = [f for f in fields if f.name not in _GIVEN_TICK_FIELDS]
    if any(f.default is dataclasses.MISSING for f in rest):
        return None
    s_key, s_ts, s_ltp, s_ltq, s_vol, s_close, s_bid, s_ask, s_bq, s_aq = (
        descriptors[name].__set__ for name in _GIVEN_TICK_FIELDS
    )
    defaults = tuple((descriptors[f.name].__set__, f.default) for f in rest)

    def make(
        key: str,
        ts_ms: int,
        ltp: int,
        ltq: int,
        volume: int,
        close: int,
        bid: int,
        ask: int,
        bid_qty: int,
        ask_qty: int,
    ) -> Tick:
        tick: Tick = new(Tick)
        s_key(tick, key)
        s_ts(tick, ts_ms)
        s_ltp(tick, ltp)
        s_ltq(tick, ltq)
        s_vol(tick, volume)
        s_close(tick, close)
        s_bid(tick, bid)
        s_ask(tick, ask)
        s_bq(tick, bid_qty)
        s_aq(tick, ask_qty)
        for setter, default in defaults:
            setter(tick, default)
        return tick

    return make


_make_tick: TickFactory = _fast_tick_factory() or _plain_tick


def activity_profile(seconds: int) -> FloatArray:
    """Relative trading activity per second of a session, mean 1: U-shaped, the open busiest.

    The open's surge decays over about 20 minutes and the close's builds over the last 20.
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    x = (np.arange(seconds, dtype=np.float64) + 0.5) / seconds
    # Widths are fractions of the session (0.055 of 375 minutes is about 20), so a shorter
    # special session keeps the shape.
    profile = 1.0 + 2.2 * np.exp(-x / 0.055) + 1.3 * np.exp(-(1.0 - x) / 0.05)
    normalised: FloatArray = profile / profile.mean()
    return normalised


@dataclasses.dataclass(frozen=True, slots=True)
class _Character:
    """What a stock is like on any day: volatility level and how often its spread is two ticks."""

    daily_sigma: float
    wide_spread_ratio: float


def _character(key: str) -> _Character:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([zlib.crc32(key.encode())])))
    return _Character(
        daily_sigma=float(rng.uniform(0.010, 0.022)),
        wide_spread_ratio=float(rng.uniform(0.05, 0.4)),
    )


def _regime_drift(
    rng: np.random.Generator,
    *,
    sigma: float,
    seconds: int,
    gap: float,
    trend_day_probability: float,
) -> FloatArray:
    """Log-drift per second: trend and chop regimes, plus on some days one strong trend."""
    drift = np.zeros(seconds, dtype=np.float64)
    gap_sign = 1 if gap >= 0 else -1
    u = rng.random()
    # The open either runs with the gap, fills it, or chops.
    state = gap_sign if u < 0.35 else (-gap_sign if u < 0.6 else 0)
    t = 0
    while t < seconds:
        if state == 0:
            length = int(rng.exponential(40 * _SECONDS_PER_MINUTE)) + 10 * _SECONDS_PER_MINUTE
        else:
            length = int(rng.exponential(30 * _SECONDS_PER_MINUTE)) + 8 * _SECONDS_PER_MINUTE
            drift[t : t + length] = state * sigma * rng.uniform(0.2, 0.6) / 3600.0
        t += length
        u = rng.random()
        if state == 0:
            state = 1 if u < 0.4 else (-1 if u < 0.8 else 0)
        else:
            state = 0 if u < 0.5 else (-state if u < 0.8 else state)
    if rng.random() < trend_day_probability:
        length = min(seconds, int(rng.uniform(80, 180) * _SECONDS_PER_MINUTE))
        start = int(rng.integers(0, seconds - length + 1))
        move = rng.uniform(0.045, 0.08) * (1 if rng.random() < 0.5 else -1)
        drift[start : start + length] = move / length
    return drift


def _ou_wiggle(rng: np.random.Generator, *, sigma: float, seconds: int) -> FloatArray:
    """Mean-reverting log-price wiggle: an Ornstein-Uhlenbeck process sampled per minute (exact
    discretisation, starting at 0) and interpolated to seconds."""
    minutes = seconds // _SECONDS_PER_MINUTE + 2
    tau_minutes = rng.uniform(8.0, 20.0)
    phi = math.exp(-1.0 / tau_minutes)
    shocks = rng.standard_normal(minutes) * (0.25 * sigma * math.sqrt(1.0 - phi * phi))
    values = np.empty(minutes, dtype=np.float64)
    x = 0.0
    values[0] = 0.0
    for i in range(1, minutes):
        x = phi * x + float(shocks[i])
        values[i] = x
    grid = np.arange(minutes, dtype=np.float64) * _SECONDS_PER_MINUTE
    wiggle: FloatArray = np.interp(np.arange(seconds, dtype=np.float64), grid, values)
    return wiggle


def _session_path(
    rng: np.random.Generator,
    *,
    previous_close_paise: int,
    sigma: float,
    seconds: int,
    vol_profile: FloatArray,
    trend_day_probability: float,
) -> FloatArray:
    """Mid price (paise, float) at each second of the session, starting at the gapped open."""
    gap = float(np.clip(0.25 * sigma * rng.standard_t(4), -0.08, 0.08))
    drift = _regime_drift(
        rng, sigma=sigma, seconds=seconds, gap=gap, trend_day_probability=trend_day_probability
    )
    steps = rng.standard_normal(seconds) * (0.4 * sigma / math.sqrt(seconds)) * vol_profile
    jumps = int(rng.poisson(1.5))
    if jumps:
        at = rng.integers(1, seconds, size=jumps) if seconds > 1 else np.zeros(0, np.int64)
        steps[at] += rng.normal(0.0, 0.3 * sigma, size=at.size)
    steps += drift
    steps[0] = 0.0
    log_price = math.log(previous_close_paise) + gap + np.cumsum(steps)
    log_price += _ou_wiggle(rng, sigma=sigma, seconds=seconds)
    path: FloatArray = np.exp(log_price)
    return path


@dataclasses.dataclass(slots=True)
class _Stream:
    """One instrument's state while a session plays."""

    key: str
    lot_size: int
    tick_paise: int
    previous_close_paise: int
    wide_spread_ratio: float
    mid_ticks: FloatArray  # mid price per session second, in ticks
    rng: np.random.Generator
    volume: int = 0


class SimulatedMarket:
    """Ticks of one NSE session for a set of instruments, reproducible from a seed.

    Iterate `iter_ticks()` to get the whole session (open inclusive to close exclusive) in
    non-decreasing `ts_ms` order; the caller paces them. Each call replays the same day.
    """

    def __init__(
        self,
        instruments: Sequence[Instrument],
        start_prices_paise: Mapping[str, int],
        *,
        seed: int,
        trading_date: date,
        calendar: NseCalendar,
        mean_tick_interval_ms: int = 1000,
        volatility_scale: float = 1.0,
        trend_day_probability: float = 0.05,
    ) -> None:
        """Set up a session.

        Args:
            instruments: the stocks to simulate (distinct instrument keys).
            start_prices_paise: previous close per instrument key; the day opens with a gap
                against it.
            seed: the market seed; the same seed, date and instruments give the same ticks.
            trading_date: the IST session date; must be a trading day of `calendar`.
            calendar: gives the session hours (a special session simulates its own hours).
            mean_tick_interval_ms: average time between two trades of one instrument over the
                day (the open and close are busier, midday quieter).
            volatility_scale: multiplies every stock's daily volatility (1.0: about 1-3 %).
            trend_day_probability: chance per stock-day of a strong 4.5-8 % trend (0-1).

        Raises:
            ValueError: no instruments, a repeated key, a missing or non-positive start price,
                bad parameters, or a date that is not a trading day.
        """
        if not instruments:
            raise ValueError("no instruments to simulate")
        keys = [i.instrument_key for i in instruments]
        if len(set(keys)) != len(keys):
            raise ValueError("instrument keys must be distinct")
        for key in keys:
            price = start_prices_paise.get(key)
            if price is None or price <= 0:
                raise ValueError(f"{key}: needs a positive start price in paise")
        if mean_tick_interval_ms <= 0:
            raise ValueError("mean_tick_interval_ms must be positive")
        if volatility_scale <= 0:
            raise ValueError("volatility_scale must be positive")
        if not 0.0 <= trend_day_probability <= 1.0:
            raise ValueError("trend_day_probability must be within 0-1")
        if not calendar.is_trading_day(trading_date):
            raise ValueError(f"{trading_date.isoformat()} is not an NSE trading day")
        self._instruments = tuple(instruments)
        self._start_prices = {key: int(start_prices_paise[key]) for key in keys}
        self._seed = seed & _SEED_MASK
        self._trading_date = trading_date
        self._mean_tick_interval_ms = mean_tick_interval_ms
        self._volatility_scale = volatility_scale
        self._trend_day_probability = trend_day_probability
        self.session_open_ms, self.session_close_ms = calendar.session_bounds_ms(trading_date)
        # Last traded prices: settled for finished chunks, plus the part of the current chunk
        # that has been handed out (its merged instrument indices and prices, and a cursor).
        self._last_ltp = dict(self._start_prices)
        self._chunk_index: list[int] = []
        self._chunk_ltp: list[int] = []
        self._chunk_delivered = 0
        self._finished = False

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """The simulated instruments, in the order given."""
        return self._instruments

    @property
    def trading_date(self) -> date:
        """The IST date of the simulated session."""
        return self._trading_date

    @property
    def finished(self) -> bool:
        """Whether the latest `iter_ticks()` ran to the close."""
        return self._finished

    def closing_prices(self) -> dict[str, int]:
        """Last traded price (paise) of each instrument among the ticks handed out so far.

        After a full play these are the day's closing prices, to seed the next day. If the
        caller stopped early they are the prices at that point (the tick it stopped on counts);
        an instrument that has not traded keeps its previous close.
        """
        prices = dict(self._last_ltp)
        keys = [i.instrument_key for i in self._instruments]
        delivered = self._chunk_delivered
        for index, ltp in zip(
            self._chunk_index[:delivered], self._chunk_ltp[:delivered], strict=True
        ):
            prices[keys[index]] = ltp
        return prices

    def iter_ticks(self) -> Iterator[Tick]:
        """Yield the session's ticks of all instruments in non-decreasing `ts_ms` order.

        Ties in `ts_ms` come in instrument order. `volume` is each instrument's cumulative day
        volume; `close_paise` its previous close; bid and ask are one or two ticks apart and the
        trade printed at one of them.
        """
        self._last_ltp = dict(self._start_prices)
        self._chunk_index, self._chunk_ltp, self._chunk_delivered = [], [], 0
        self._finished = False
        session_ms = self.session_close_ms - self.session_open_ms
        seconds = -(-session_ms // 1000)
        activity = activity_profile(seconds)
        vol_profile = np.sqrt(activity)
        expected_per_second = 1000.0 / self._mean_tick_interval_ms
        # Expected arrivals up to each second boundary, and the ms offset of that boundary.
        cumulative = np.concatenate(([0.0], np.cumsum(activity) * expected_per_second))
        boundary_ms = np.minimum(np.arange(seconds + 1, dtype=np.float64) * 1000.0, session_ms)
        streams = [
            self._stream(instrument, seconds, vol_profile) for instrument in self._instruments
        ]
        # About a thousand arrivals per instrument per chunk on average: bounded memory at any
        # tick rate, and the chunking depends on nothing but the tick interval.
        chunk_s = max(1, (1024 * self._mean_tick_interval_ms) // 1000)
        for first in range(0, seconds, chunk_s):
            last = min(seconds, first + chunk_s)
            yield from self._chunk_ticks(streams, first, last, cumulative, boundary_ms)
        self._finished = True

    def _stream(self, instrument: Instrument, seconds: int, vol_profile: FloatArray) -> _Stream:
        key = instrument.instrument_key
        entropy = [self._seed, zlib.crc32(key.encode()), self._trading_date.toordinal()]
        path_seq, tick_seq = np.random.SeedSequence(entropy).spawn(2)
        character = _character(key)
        path_rng = np.random.Generator(np.random.PCG64(path_seq))
        day_factor = float(path_rng.lognormal(0.0, 0.2))
        sigma = min(0.05, character.daily_sigma * day_factor * self._volatility_scale)
        previous_close = self._start_prices[key]
        path = _session_path(
            path_rng,
            previous_close_paise=previous_close,
            sigma=sigma,
            seconds=seconds,
            vol_profile=vol_profile,
            trend_day_probability=self._trend_day_probability,
        )
        tick = max(1, instrument.tick_size_paise)
        return _Stream(
            key=key,
            lot_size=max(1, instrument.lot_size),
            tick_paise=tick,
            previous_close_paise=previous_close,
            wide_spread_ratio=character.wide_spread_ratio,
            mid_ticks=path / tick,
            rng=np.random.Generator(np.random.PCG64(tick_seq)),
        )

    def _chunk_ticks(
        self,
        streams: Sequence[_Stream],
        first: int,
        last: int,
        cumulative: FloatArray,
        boundary_ms: FloatArray,
    ) -> Iterator[Tick]:
        parts: list[tuple[IntArray, ...]] = []
        chunk_closes: dict[str, int] = {}
        for index, stream in enumerate(streams):
            arrays = self._stream_chunk(stream, first, last, cumulative, boundary_ms)
            if arrays is not None:
                parts.append((np.full(arrays[0].size, index, dtype=np.int64), *arrays))
                chunk_closes[stream.key] = int(arrays[1][-1])
        if not parts:
            return
        columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
        order = np.argsort(columns[1], kind="stable")
        index_l, ts_l, ltp_l, ltq_l, vol_l, bid_l, ask_l, bq_l, aq_l = (
            column[order].tolist() for column in columns
        )
        keys = [s.key for s in streams]
        closes = [s.previous_close_paise for s in streams]
        base = self.session_open_ms
        make = _make_tick
        self._chunk_index, self._chunk_ltp, self._chunk_delivered = index_l, ltp_l, 0
        for delivered, (i, ts, ltp, ltq, vol, bid, ask, bq, aq) in enumerate(
            zip(index_l, ts_l, ltp_l, ltq_l, vol_l, bid_l, ask_l, bq_l, aq_l, strict=True), 1
        ):
            self._chunk_delivered = delivered
            yield make(keys[i], base + ts, ltp, ltq, vol, closes[i], bid, ask, bq, aq)
        self._last_ltp.update(chunk_closes)
        self._chunk_index, self._chunk_ltp, self._chunk_delivered = [], [], 0

    @staticmethod
    def _stream_chunk(
        stream: _Stream,
        first: int,
        last: int,
        cumulative: FloatArray,
        boundary_ms: FloatArray,
    ) -> tuple[IntArray, ...] | None:
        """Arrays (ts offset ms, ltp, ltq, volume, bid, ask, bid qty, ask qty) of one instrument's
        trades in session seconds [first, last), or None if it did not trade."""
        rng = stream.rng
        low, high = float(cumulative[first]), float(cumulative[last])
        count = int(rng.poisson(high - low))
        if count == 0:
            return None
        # Sorted uniform draws on the expected-arrivals scale, mapped back through its inverse:
        # an inhomogeneous Poisson process following the activity profile.
        levels = low + np.sort(rng.random(count)) * (high - low)
        offsets = np.interp(levels, cumulative[first : last + 1], boundary_ms[first : last + 1])
        end_ms = int(boundary_ms[last])
        ts = np.clip(offsets.astype(np.int64), first * 1000, end_ms - 1)
        mid = stream.mid_ticks[ts // 1000]
        draws = rng.random((2, count))
        wide = draws[0] < stream.wide_spread_ratio
        bid_ticks = np.where(wide, np.rint(mid) - 1.0, np.floor(mid))
        bid_ticks = np.maximum(bid_ticks, 1.0).astype(np.int64)
        ask_ticks = bid_ticks + np.where(wide, 2, 1)
        ltp_ticks = np.where(draws[1] < 0.5, ask_ticks, bid_ticks)
        tick = stream.tick_paise
        lot = stream.lot_size
        ltq = np.maximum(1, np.rint(lot * np.exp(rng.normal(-0.7, 0.9, count)))).astype(np.int64)
        volume = stream.volume + np.cumsum(ltq)
        quantities = rng.integers(1, 9, size=(2, count), dtype=np.int64) * lot
        stream.volume = int(volume[-1])
        return (
            ts,
            ltp_ticks * tick,
            ltq,
            volume,
            bid_ticks * tick,
            ask_ticks * tick,
            quantities[0],
            quantities[1],
        )
