"""Upstox Market Data Feed V3: protobuf frame decoder, connection sharding and websocket client.

Every binary frame from the server is one `FeedResponse` protobuf. `decode_frame` turns it into
domain `Tick`s (prices in integer paise, times in epoch ms UTC) plus the frame type and segment
status; the richer full-mode data (depth, candles, ATP, total buy/sell quantity, auction fields)
is decoded on demand by `DecodedFrame.quote`, so that the hot path pays only for what it uses.
`MarketDataFeedV3Client` keeps one websocket connection alive: authorize, connect, subscribe,
decode, and reconnect with bounded, jittered backoff when the connection drops or falls silent
during market hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import random
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TextIO

import httpx
from google.protobuf.message import DecodeError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from upstox_bot.domain import TICK_FIELDS, Candle, Tick, rupees_to_paise
from upstox_bot.errors import ConfigError, FeedError, MalformedFrame
from upstox_bot.feed.proto import MarketDataFeedV3_pb2 as pb

log = logging.getLogger(__name__)

AUTHORIZE_PATH: Final = "/v3/feed/market-data-feed/authorize"


class FrameType(StrEnum):
    """Kind of a feed frame (`FeedResponse.type`)."""

    INITIAL_FEED = "initial_feed"  # snapshot after a subscription
    LIVE_FEED = "live_feed"
    MARKET_INFO = "market_info"  # segment status, first frame on a connection
    UNKNOWN = "unknown"  # a type number this schema does not know: its feeds are not trusted


class FeedMode(StrEnum):
    """Subscription mode, spelled as in subscription requests."""

    LTPC = "ltpc"
    OPTION_GREEKS = "option_greeks"
    FULL = "full"  # 5-level depth; `full_d5` in frames
    FULL_D30 = "full_d30"  # 30-level depth, Upstox Plus


class MarketStatus(StrEnum):
    """Status of an exchange segment (`MarketInfo.segmentStatus`)."""

    PRE_OPEN_START = "pre_open_start"
    PRE_OPEN_END = "pre_open_end"
    NORMAL_OPEN = "normal_open"
    NORMAL_CLOSE = "normal_close"
    CLOSING_START = "closing_start"
    CLOSING_END = "closing_end"
    UNKNOWN = "unknown"  # a status number this schema does not know


_FRAME_TYPES: Final = (FrameType.INITIAL_FEED, FrameType.LIVE_FEED, FrameType.MARKET_INFO)
_MODES_BY_NUMBER: Final = (FeedMode.LTPC, FeedMode.FULL, FeedMode.OPTION_GREEKS, FeedMode.FULL_D30)
_MARKET_STATUSES: Final = (
    MarketStatus.PRE_OPEN_START,
    MarketStatus.PRE_OPEN_END,
    MarketStatus.NORMAL_OPEN,
    MarketStatus.NORMAL_CLOSE,
    MarketStatus.CLOSING_START,
    MarketStatus.CLOSING_END,
)
# Candle interval names of the full feed and their length in seconds.
_CANDLE_INTERVALS_S: Final[Mapping[str, int]] = MappingProxyType(
    {"1d": 86_400, "I1": 60, "I30": 1_800}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusInfo:
    """A segment's auction or pre-open status string and when it last changed (epoch ms UTC)."""

    status: str
    updated_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketInfo:
    """Segment status of a `market_info` frame, keyed by segment (`NSE_EQ`, `NSE_FO`, ...)."""

    segment_status: Mapping[str, MarketStatus]
    cas_status: Mapping[str, StatusInfo] = field(default_factory=dict)  # closing auction
    pre_open_status: Mapping[str, StatusInfo] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DepthLevel:
    """One price level of one side of the book."""

    price_paise: int
    quantity: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketDepth:
    """Order book depth, best level first; levels the exchange left empty are dropped."""

    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FullQuote:
    """The data of a full or option-greeks frame that `Tick` does not carry.

    Quantities are shares. `None` means the mode does not carry the field; proto3 cannot tell a
    zero from an absent scalar, so the full-mode auction fields are 0 outside auctions.
    """

    instrument_key: str
    mode: FeedMode
    atp_paise: int | None = None  # average traded price (VWAP) of the day
    tbq: int | None = None  # total buy quantity pending
    tsq: int | None = None  # total sell quantity pending
    iep_paise: int | None = None  # indicative equilibrium price (pre-open / auction)
    reference_price_paise: int | None = None
    ieq: int | None = None  # indicative equilibrium quantity
    iiq_total: int | None = None  # indicative imbalance quantity, total
    iiq_market: int | None = None  # indicative imbalance quantity, market orders
    cas_eligible: bool | None = None  # eligible for the closing auction session
    depth: MarketDepth | None = None
    candles: tuple[Candle, ...] = ()  # 1d, I1 and I30 candles as sent (current and previous)


# Field order of domain.Tick: `_make_tick` takes the values in it, as the C decoder gives them.
_TICK_FIELDS: Final = TICK_FIELDS

_TickFactory = Callable[
    [
        str,
        int,
        int,
        int,
        int,
        int,
        int | None,
        int | None,
        int | None,
        int | None,
        int | None,
        float | None,
        float | None,
        float | None,
        float | None,
        float | None,
        float | None,
    ],
    Tick,
]


def _tick_is_plain_slots() -> bool:
    """Whether a Tick can be built by writing its slots in _TICK_FIELDS order."""
    names = tuple(f.name for f in dataclasses.fields(Tick))
    return (
        names == _TICK_FIELDS and not hasattr(Tick, "__post_init__") and "__slots__" in vars(Tick)
    )


def _tick_is_native() -> bool:
    """Whether Tick is compiled (native fields with setters) and built by its own __new__."""
    names = tuple(f.name for f in dataclasses.fields(Tick))
    return (
        names == _TICK_FIELDS
        and not hasattr(Tick, "__post_init__")
        and all(isinstance(vars(Tick).get(n), types.GetSetDescriptorType) for n in names)
        and Tick.__new__ is not object.__new__
    )


def _tick_factory() -> _TickFactory:
    # A frozen dataclass __init__ sets each of Tick's 17 fields through object.__setattr__, which
    # costs more than parsing the protobuf itself. Writing the slots (or a compiled Tick's native
    # fields) directly gives the same object (as copy and pickle do) at a third of the cost. If
    # Tick ever changes shape, fall back to the constructor rather than build a half-initialised
    # object.
    if _tick_is_plain_slots():
        new: Callable[[type[Tick]], Tick] = object.__new__
    elif _tick_is_native():
        new = Tick.__new__
    else:

        def construct(*values: Any) -> Tick:
            return Tick(**dict(zip(_TICK_FIELDS, values, strict=True)))

        return construct

    s = tuple(getattr(Tick, name).__set__ for name in _TICK_FIELDS)

    def build(
        key: str,
        ts_ms: int,
        ltp: int,
        ltq: int,
        volume: int,
        close: int,
        bid: int | None,
        ask: int | None,
        bid_qty: int | None,
        ask_qty: int | None,
        oi: int | None,
        iv: float | None,
        delta: float | None,
        gamma: float | None,
        theta: float | None,
        vega: float | None,
        rho: float | None,
    ) -> Tick:
        t: Tick = new(Tick)
        s[0](t, key)
        s[1](t, ts_ms)
        s[2](t, ltp)
        s[3](t, ltq)
        s[4](t, volume)
        s[5](t, close)
        s[6](t, bid)
        s[7](t, ask)
        s[8](t, bid_qty)
        s[9](t, ask_qty)
        s[10](t, oi)
        s[11](t, iv)
        s[12](t, delta)
        s[13](t, gamma)
        s[14](t, theta)
        s[15](t, vega)
        s[16](t, rho)
        return t

    return build


_make_tick: Final = _tick_factory()


def _load_compiled_decoder() -> tuple[Any, type[Exception]]:
    """The compiled frame decoder's `decode` and its error type; (None, a placeholder) when the
    extension is not built, and then every frame takes the Python path."""
    try:
        from upstox_bot.feed import _v3_decoder
    except ImportError as e:
        log.debug("feed.decoder.python_only", extra={"reason": str(e)})
        return None, _NoCompiledDecoder
    if _tick_is_plain_slots() or _tick_is_native():
        # Its slots, or a compiled Tick's native fields, written through their descriptors.
        fields = tuple(vars(Tick)[name] for name in _TICK_FIELDS)
        try:
            _v3_decoder.configure(Tick, fields, _make_tick, to_paise)
        except TypeError:  # descriptors of an unexpected kind: build ticks through the factory
            _v3_decoder.configure(Tick, None, _make_tick, to_paise)
    else:
        _v3_decoder.configure(Tick, None, _make_tick, to_paise)
    return _v3_decoder.decode, _v3_decoder.WireError


class _NoCompiledDecoder(Exception):
    """Never raised: stands in for the compiled decoder's WireError when it is not built."""


def to_paise(rupees: float) -> int:
    """Convert a float rupee price from the feed to integer paise, rounding half up.

    Gives exactly `domain.rupees_to_paise` (which rounds the shortest decimal form of the float),
    but takes the Decimal path only when the value lies within a hair of half a paisa.

    Raises:
        ValueError: for NaN or infinite values.
    """
    scaled = rupees * 100.0
    if scaled >= 0.0:
        whole = int(scaled)
        frac = scaled - whole
        if frac < 0.4999:
            return whole
        if frac > 0.5001:
            return whole + 1
        return rupees_to_paise(rupees)
    if scaled < 0.0:
        return -to_paise(-rupees)
    raise ValueError(f"not a price: {rupees!r}")


class _PaiseTable(dict[float, int]):
    """Memo of `to_paise`: feed prices sit on a tick grid and repeat, and a dict hit is cheaper
    than the conversion. Bounded; NaN never hits (NaN != NaN) and so always raises."""

    max_size = 1 << 16

    def __missing__(self, rupees: float) -> int:
        value = to_paise(rupees)
        if len(self) >= self.max_size:
            self.clear()
        self[rupees] = value
        return value


_PAISE: Final = _PaiseTable()
_compiled_decode, _WireError = _load_compiled_decoder()
COMPILED_DECODER: Final = _compiled_decode is not None  # whether decode_frame uses it


class DecodedFrame:
    """One decoded `FeedResponse`: frame type, server time, ticks and segment status.

    `ticks` holds one `Tick` per instrument that has a last price (an instrument that has not
    traded yet, LTP 0, gives no tick). `quote()` decodes the full-mode extras of one instrument
    when asked; it keeps a reference to the parsed message for that.
    """

    __slots__ = ("_data", "_feeds", "current_ts_ms", "market_info", "ticks", "type")

    def __init__(
        self,
        frame_type: FrameType,
        current_ts_ms: int,
        ticks: list[Tick],
        market_info: MarketInfo | None,
        feeds: Any = None,
        data: bytes | None = None,
    ) -> None:
        self.type = frame_type
        self.current_ts_ms = current_ts_ms  # server time of the frame, epoch ms UTC
        self.ticks = ticks
        self.market_info = market_info
        self._feeds = feeds  # the parsed feeds map, or None until `_feed_map` parses `_data`
        self._data = data  # the frame's bytes when the compiled decoder built the ticks

    def _feed_map(self) -> Any:
        """The upb feeds map; a frame decoded by the compiled path is parsed on first use."""
        if self._feeds is None and self._data is not None:
            try:
                self._feeds = _parse(self._data).feeds
            except (DecodeError, RuntimeError) as e:  # the compiled walk accepted it: not expected
                raise MalformedFrame(f"not a FeedResponse ({len(self._data)} bytes): {e}") from e
            self._data = None
        return self._feeds

    def __repr__(self) -> str:
        return (
            f"DecodedFrame(type={self.type.value}, current_ts_ms={self.current_ts_ms}, "
            f"ticks={len(self.ticks)}, market_info={self.market_info is not None})"
        )

    @property
    def instrument_keys(self) -> list[str]:
        """Keys of every instrument in the frame, with or without a tick."""
        feeds = self._feed_map()
        return [] if feeds is None else list(feeds)

    def mode(self, instrument_key: str) -> FeedMode | None:
        """The mode the instrument is subscribed in, per this frame; None if not in the frame."""
        feeds = self._feed_map()
        if feeds is None or instrument_key not in feeds:
            return None
        return _mode_of(feeds[instrument_key])

    def quote(self, instrument_key: str) -> FullQuote | None:
        """Decode the full-mode / option-greeks extras of one instrument.

        Returns:
            None when the instrument is not in the frame or is in LTPC mode.

        Raises:
            MalformedFrame: a price in it is not a finite number.
        """
        feeds = self._feed_map()
        if feeds is None or instrument_key not in feeds:
            return None
        try:
            return _decode_quote(instrument_key, feeds[instrument_key])
        except (ValueError, OverflowError) as e:
            raise MalformedFrame(f"bad value for {instrument_key}: {e}") from e

    def quotes(self) -> dict[str, FullQuote]:
        """`quote()` of every instrument in the frame that has one."""
        out: dict[str, FullQuote] = {}
        for key in self.instrument_keys:
            q = self.quote(key)
            if q is not None:
                out[key] = q
        return out


_parse: Final = pb.FeedResponse.FromString
_TYPE_MARKET_INFO: Final = 2


def decode_frame(data: bytes) -> DecodedFrame:
    """Decode one binary feed frame into domain ticks.

    A tick's `ts_ms` is the last trade time, or the frame's server time when the feed omits it
    (snapshots of instruments with no trade time). Prices are rounded half up to paise. `iv` is
    None when the feed sends 0 (proto3 cannot tell "no IV" from 0, and an IV of 0 is no quote);
    greeks are set only when the option greeks message is present. Ticks come one per
    instrument; their order within a frame carries no meaning.

    Feed frames go through the compiled decoder (`_v3_decoder`, when it is built), which walks
    the wire bytes straight into Ticks; market-info frames and anything else go through
    `decode_frame_python`, the reference that the compiled path must agree with.

    Raises:
        MalformedFrame: the bytes are not a `FeedResponse` or carry a non-finite price.
    """
    if _compiled_decode is not None and type(data) is bytes:
        try:
            decoded = _compiled_decode(data)
        except _WireError as e:
            raise MalformedFrame(f"not a FeedResponse ({len(data)} bytes): {e}") from e
        except (ValueError, OverflowError) as e:
            raise MalformedFrame(f"bad value in feed frame: {e}") from e
        if decoded is not None:
            type_number, now, ticks = decoded
            if 0 <= type_number < _TYPE_MARKET_INFO:
                return DecodedFrame(_FRAME_TYPES[type_number], now, ticks, None, data=data)
            return DecodedFrame(FrameType.UNKNOWN, now, [], None)
    return decode_frame_python(data)


def decode_frame_python(data: bytes) -> DecodedFrame:
    """`decode_frame` over the upb parse, in Python: the reference decoder, and the fallback
    when the compiled one is not built. Same results (tick order aside) and same errors."""
    try:
        msg = _parse(data)
    except (DecodeError, RuntimeError, TypeError) as e:
        raise MalformedFrame(f"not a FeedResponse ({len(data)} bytes): {e}") from e
    type_number = msg.type
    now = msg.currentTs
    if type_number == _TYPE_MARKET_INFO:
        return DecodedFrame(FrameType.MARKET_INFO, now, [], _decode_market_info(msg.marketInfo))
    if type_number > _TYPE_MARKET_INFO or type_number < 0:
        return DecodedFrame(FrameType.UNKNOWN, now, [], None)
    feeds = msg.feeds
    try:
        ticks = _decode_ticks(feeds, now)
    except (ValueError, OverflowError) as e:
        raise MalformedFrame(f"bad value in feed frame: {e}") from e
    market_info = _decode_market_info(msg.marketInfo) if msg.HasField("marketInfo") else None
    return DecodedFrame(_FRAME_TYPES[type_number], now, ticks, market_info, feeds)


def _decode_ticks(feeds: Any, now: int) -> list[Tick]:
    # One flat loop with local names: this is the hot path, measured by bench_feed_decode.py.
    ticks: list[Tick] = []
    append = ticks.append
    make = _make_tick
    paise = _PAISE.__getitem__
    for key, feed in feeds.items():
        which = feed.WhichOneof("FeedUnion")
        if which == "fullFeed":
            full = feed.fullFeed
            if full.WhichOneof("FullFeedUnion") == "marketFF":
                m = full.marketFF
                ltpc = m.ltpc
                ltp = ltpc.ltp
                if ltp == 0.0:
                    continue
                bid = ask = bid_qty = ask_qty = None
                quotes = m.marketLevel.bidAskQuote
                if quotes:
                    q = quotes[0]
                    bid_p = q.bidP
                    bid_q = q.bidQ
                    if bid_p or bid_q:
                        bid = paise(bid_p)
                        bid_qty = bid_q
                    ask_p = q.askP
                    ask_q = q.askQ
                    if ask_p or ask_q:
                        ask = paise(ask_p)
                        ask_qty = ask_q
                if m.HasField("optionGreeks"):
                    g = m.optionGreeks
                    delta, gamma, theta, vega, rho = g.delta, g.gamma, g.theta, g.vega, g.rho
                else:
                    delta = gamma = theta = vega = rho = None
                iv = m.iv
                append(
                    make(
                        key,
                        ltpc.ltt or now,
                        paise(ltp),
                        ltpc.ltq,
                        m.vtt,
                        paise(ltpc.cp),
                        bid,
                        ask,
                        bid_qty,
                        ask_qty,
                        int(m.oi),
                        iv if iv else None,
                        delta,
                        gamma,
                        theta,
                        vega,
                        rho,
                    )
                )
            else:
                ltpc = full.indexFF.ltpc
                ltp = ltpc.ltp
                if ltp == 0.0:
                    continue
                append(
                    make(
                        key,
                        ltpc.ltt or now,
                        paise(ltp),
                        ltpc.ltq,
                        0,
                        paise(ltpc.cp),
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                    )
                )
        elif which == "ltpc":
            ltpc = feed.ltpc
            ltp = ltpc.ltp
            if ltp == 0.0:
                continue
            append(
                make(
                    key,
                    ltpc.ltt or now,
                    paise(ltp),
                    ltpc.ltq,
                    0,
                    paise(ltpc.cp),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                )
            )
        elif which == "firstLevelWithGreeks":
            f = feed.firstLevelWithGreeks
            ltpc = f.ltpc
            ltp = ltpc.ltp
            if ltp == 0.0:
                continue
            bid = ask = bid_qty = ask_qty = None
            if f.HasField("firstDepth"):
                q = f.firstDepth
                bid_p = q.bidP
                bid_q = q.bidQ
                if bid_p or bid_q:
                    bid = paise(bid_p)
                    bid_qty = bid_q
                ask_p = q.askP
                ask_q = q.askQ
                if ask_p or ask_q:
                    ask = paise(ask_p)
                    ask_qty = ask_q
            if f.HasField("optionGreeks"):
                g = f.optionGreeks
                delta, gamma, theta, vega, rho = g.delta, g.gamma, g.theta, g.vega, g.rho
            else:
                delta = gamma = theta = vega = rho = None
            iv = f.iv
            append(
                make(
                    key,
                    ltpc.ltt or now,
                    paise(ltp),
                    ltpc.ltq,
                    f.vtt,
                    paise(ltpc.cp),
                    bid,
                    ask,
                    bid_qty,
                    ask_qty,
                    int(f.oi),
                    iv if iv else None,
                    delta,
                    gamma,
                    theta,
                    vega,
                    rho,
                )
            )
        # A feed with none of the known members set (a newer schema's member) carries nothing we
        # can read: skip it.
    return ticks


def _mode_of(feed: Any) -> FeedMode | None:
    number = feed.requestMode
    if 0 <= number < len(_MODES_BY_NUMBER):
        mode = _MODES_BY_NUMBER[number]
        # requestMode 0 (ltpc) is absent on the wire; trust the member that is set instead.
        if number != 0:
            return mode
    which = feed.WhichOneof("FeedUnion")
    if which == "ltpc":
        return FeedMode.LTPC
    if which == "firstLevelWithGreeks":
        return FeedMode.OPTION_GREEKS
    if which == "fullFeed":
        return FeedMode.FULL
    return None


def _iep_paise(ltpc: Any, fallback: float) -> int | None:
    if ltpc.HasField("iep"):
        return to_paise(ltpc.iep.value)
    return to_paise(fallback) if fallback else None


def _decode_quote(key: str, feed: Any) -> FullQuote | None:
    which = feed.WhichOneof("FeedUnion")
    mode = _mode_of(feed) or FeedMode.FULL
    if which == "fullFeed":
        full = feed.fullFeed
        if full.WhichOneof("FullFeedUnion") == "marketFF":
            m = full.marketFF
            return FullQuote(
                instrument_key=key,
                mode=mode,
                atp_paise=to_paise(m.atp),
                tbq=round(m.tbq),
                tsq=round(m.tsq),
                iep_paise=_iep_paise(m.ltpc, m.iep),
                reference_price_paise=to_paise(m.rp),
                ieq=m.ieq,
                iiq_total=m.iiqTotal,
                iiq_market=m.iiqM,
                cas_eligible=m.casEligible,
                depth=_decode_depth(m.marketLevel.bidAskQuote),
                candles=_decode_candles(key, m.marketOHLC.ohlc),
            )
        index = full.indexFF
        return FullQuote(
            instrument_key=key,
            mode=mode,
            iep_paise=_iep_paise(index.ltpc, 0.0),
            candles=_decode_candles(key, index.marketOHLC.ohlc),
        )
    if which == "firstLevelWithGreeks":
        f = feed.firstLevelWithGreeks
        depth = _decode_depth([f.firstDepth]) if f.HasField("firstDepth") else None
        return FullQuote(
            instrument_key=key,
            mode=FeedMode.OPTION_GREEKS,
            iep_paise=_iep_paise(f.ltpc, 0.0),
            depth=depth,
        )
    return None


def _decode_depth(quotes: Iterable[Any]) -> MarketDepth:
    bids: list[DepthLevel] = []
    asks: list[DepthLevel] = []
    for q in quotes:
        if q.bidP or q.bidQ:
            bids.append(DepthLevel(price_paise=to_paise(q.bidP), quantity=q.bidQ))
        if q.askP or q.askQ:
            asks.append(DepthLevel(price_paise=to_paise(q.askP), quantity=q.askQ))
    return MarketDepth(bids=tuple(bids), asks=tuple(asks))


def _decode_candles(key: str, ohlcs: Iterable[Any]) -> tuple[Candle, ...]:
    candles: list[Candle] = []
    for c in ohlcs:
        interval_s = _CANDLE_INTERVALS_S.get(c.interval)
        if interval_s is None:
            log.debug("feed.candle.unknown_interval", extra={"interval": c.interval})
            continue
        candles.append(
            Candle(
                instrument_key=key,
                interval_s=interval_s,
                start_ms=c.ts,
                open_paise=to_paise(c.open),
                high_paise=to_paise(c.high),
                low_paise=to_paise(c.low),
                close_paise=to_paise(c.close),
                volume=c.vol,
            )
        )
    return tuple(candles)


def _decode_market_info(info: Any) -> MarketInfo:
    statuses = len(_MARKET_STATUSES)
    return MarketInfo(
        segment_status={
            segment: _MARKET_STATUSES[n] if 0 <= n < statuses else MarketStatus.UNKNOWN
            for segment, n in info.segmentStatus.items()
        },
        cas_status={
            segment: StatusInfo(status=s.status, updated_ms=s.updatedTime)
            for segment, s in info.casMarketStatus.items()
        },
        pre_open_status={
            segment: StatusInfo(status=s.status, updated_ms=s.updatedTime)
            for segment, s in info.preOpenSessionStatus.items()
        },
    )


# --- JSON lines output -------------------------------------------------------------------------


def tick_to_json(tick: Tick, quote: FullQuote | None = None) -> dict[str, object]:
    """A JSON-ready dict of one tick: rupee floats, epoch-ms times, Upstox's short field names.

    Always: instrument_key, ltp, ltt, ltq, cp. With full/option-greeks data also (where present)
    volume, oi, atp, tbq, tsq, bid, bid_qty, ask, ask_qty, iv, delta, theta, gamma, vega, rho.
    """
    out: dict[str, object] = {
        "instrument_key": tick.instrument_key,
        "ltp": tick.ltp_paise / 100,
        "ltt": tick.ts_ms,
        "ltq": tick.ltq,
        "cp": tick.close_paise / 100,
    }
    if quote is None:
        return out
    out["volume"] = tick.volume
    optional: tuple[tuple[str, object], ...] = (
        ("oi", tick.oi),
        ("atp", None if quote.atp_paise is None else quote.atp_paise / 100),
        ("tbq", quote.tbq),
        ("tsq", quote.tsq),
        ("bid", None if tick.bid_paise is None else tick.bid_paise / 100),
        ("bid_qty", tick.bid_qty),
        ("ask", None if tick.ask_paise is None else tick.ask_paise / 100),
        ("ask_qty", tick.ask_qty),
        ("iv", tick.iv),
        ("delta", tick.delta),
        ("theta", tick.theta),
        ("gamma", tick.gamma),
        ("vega", tick.vega),
        ("rho", tick.rho),
    )
    for name, value in optional:
        if value is not None:
            out[name] = value
    return out


async def stream_jsonl(
    client: MarketDataFeedV3Client, out: TextIO, max_messages: int | None
) -> int:
    """Write one JSON line per decoded tick from a started client, flushing after each line.

    Args:
        client: a started client with its subscriptions made; it is not closed here.
        out: text stream to write to.
        max_messages: stop after this many lines; None runs until the client closes.

    Returns:
        The number of lines written.
    """
    written = 0
    if max_messages is not None and max_messages <= 0:
        return 0
    async for frame in client.frames():
        for tick in frame.ticks:
            record = tick_to_json(tick, frame.quote(tick.instrument_key))
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            out.flush()
            written += 1
            if max_messages is not None and written >= max_messages:
                return written
    return written


# --- Limits and sharding -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedLimits:
    """Upstox subscription limits of one plan (API facts section 3.4).

    `keys_per_mode` caps a mode when it is the only mode subscribed; `combined_keys_per_mode`
    caps each mode when modes are mixed. Upstox does not say whether the caps are per connection
    or per user; `per_user=True` (the default) reads them as per user, the conservative choice.
    """

    max_connections: int
    keys_per_mode: Mapping[FeedMode, int]
    combined_keys_per_mode: Mapping[FeedMode, int]
    per_user: bool = True

    def cap(self, mode: FeedMode, *, combined: bool = False) -> int:
        """Key cap of one mode on one connection.

        Raises:
            ConfigError: the plan does not offer the mode.
        """
        caps = self.combined_keys_per_mode if combined else self.keys_per_mode
        if mode not in caps:
            raise ConfigError(f"feed mode {mode.value!r} is not available on this Upstox plan")
        return caps[mode]


NORMAL_PLAN_LIMITS: Final = FeedLimits(
    max_connections=2,
    keys_per_mode=MappingProxyType(
        {FeedMode.LTPC: 5000, FeedMode.OPTION_GREEKS: 3000, FeedMode.FULL: 2000}
    ),
    combined_keys_per_mode=MappingProxyType(
        {FeedMode.LTPC: 2000, FeedMode.OPTION_GREEKS: 2000, FeedMode.FULL: 1500}
    ),
)
PLUS_PLAN_LIMITS: Final = FeedLimits(
    max_connections=5,
    keys_per_mode=MappingProxyType(
        {
            FeedMode.LTPC: 5000,
            FeedMode.OPTION_GREEKS: 3000,
            FeedMode.FULL: 2000,
            FeedMode.FULL_D30: 50,
        }
    ),
    combined_keys_per_mode=MappingProxyType(
        {
            FeedMode.LTPC: 2000,
            FeedMode.OPTION_GREEKS: 2000,
            FeedMode.FULL: 1500,
            FeedMode.FULL_D30: 1500,
        }
    ),
)


def plan_shards(
    instrument_keys: Iterable[str],
    mode: FeedMode,
    limits: FeedLimits = NORMAL_PLAN_LIMITS,
    *,
    combined: bool = False,
    connections: int | None = None,
) -> list[list[str]]:
    """Split instruments over as few connections as the limits allow, in balanced shards.

    Duplicates are dropped (first occurrence kept) and order is kept within each shard.

    Args:
        instrument_keys: Upstox instrument keys.
        mode: the mode all of them are subscribed in.
        limits: the user's plan.
        combined: the user also subscribes other modes, so the combined caps apply.
        connections: spread over this many connections when the limits allow it (capped at
            `limits.max_connections` and at one key per connection).

    Returns:
        One list of keys per connection; empty when there are no keys.

    Raises:
        ConfigError: the keys exceed what the user may subscribe in this mode.
    """
    keys = list(dict.fromkeys(instrument_keys))
    if not keys:
        return []
    cap = limits.cap(mode, combined=combined)
    user_cap = cap if limits.per_user else cap * limits.max_connections
    if len(keys) > user_cap:
        scope = "per user" if limits.per_user else f"over {limits.max_connections} connections"
        raise ConfigError(
            f"{len(keys)} instruments in mode {mode.value!r} exceed the Upstox limit of "
            f"{user_cap} {scope}; subscribe fewer instruments or a cheaper mode"
        )
    needed = math.ceil(len(keys) / cap)
    count = max(needed, min(connections or 1, limits.max_connections))
    count = min(count, len(keys))
    size, extra = divmod(len(keys), count)
    shards: list[list[str]] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        shards.append(keys[start:end])
        start = end
    return shards


# --- Websocket client --------------------------------------------------------------------------


class FeedUnauthorized(FeedError):
    """Upstox refused the access token (HTTP 401): refresh the token; retrying will not help."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential reconnect backoff: initial * 2**attempt, capped at max, times 1 +/- jitter."""

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.2  # fraction of the delay, both ways

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before reconnect attempt `attempt` (0 for the first)."""
        base = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 32)))
        return max(0.0, base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0)))


FrameHandler = Callable[[DecodedFrame], Awaitable[None] | None]
_END: Final = object()
_SUBSCRIBE_GUID_PREFIX: Final = "upstox-bot-"


class MarketDataFeedV3Client:
    """One Upstox Market Data Feed V3 connection, kept alive with its subscriptions.

    Decoded frames go to `on_frame` (sync or async) when given, otherwise to the `frames()` /
    `ticks()` async iterators (one consumer). Counters are plain attributes for metrics.
    Use `async with` or `start()` / `close()`.
    """

    def __init__(
        self,
        *,
        api_base_url: str,
        access_token: str | Callable[[], str],
        clock: Callable[[], datetime],
        is_market_open: Callable[[datetime], bool],
        on_frame: FrameHandler | None = None,
        http_client: httpx.AsyncClient | None = None,
        limits: FeedLimits = NORMAL_PLAN_LIMITS,
        silence_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
        max_reconnect_attempts: int | None = None,
        queue_size: int = 10_000,
        rng: random.Random | None = None,
        resume_on_new_token: bool = False,
        on_unauthorized: Callable[[str], None] | None = None,
        token_check_s: float = 2.0,
    ) -> None:
        """Configure the client; nothing connects until `start()`.

        Args:
            api_base_url: Upstox REST base URL (setting UPSTOX_API_BASE_URL); the authorize call
                goes to `<api_base_url>/v3/feed/market-data-feed/authorize`.
            access_token: the token, or a callable returning the current one (read on every
                authorize, so a refreshed token is picked up on reconnect).
            clock: returns the current aware datetime (injected; never the system clock here).
            is_market_open: whether data is expected at that time; silence outside it is normal.
            on_frame: called with every decoded frame that carries ticks or market status.
            http_client: client for the authorize call; one is created (and closed) if None.
            limits: plan limits; a subscription beyond one connection's cap is refused.
            silence_timeout_s: during market hours, a connection with subscriptions that sends no
                frame for this long is treated as dead and replaced.
            backoff: reconnect delays.
            open_timeout_s: timeout of the authorize call and of the websocket handshake.
            max_reconnect_attempts: give up (FeedError) after this many failed attempts in a row;
                None retries forever.
            queue_size: frames held for the iterators; older frames are kept and new ones dropped
                (and counted) when the consumer falls this far behind.
            rng: random source for the jitter.
            resume_on_new_token: when Upstox refuses the token (401), wait until `access_token`
                returns another one (the next login) and connect with it, instead of stopping;
                the client then never stops on its own.
            on_unauthorized: called with the refused token when Upstox refuses it (report it:
                the authorize call is a read, so its 401 is conclusive).
            token_check_s: how often a refused client reads `access_token` for a new token.
        """
        self._base_url = api_base_url.rstrip("/")
        self._token = access_token
        self._clock = clock
        self._is_market_open = is_market_open
        self._on_frame = on_frame
        self._http = http_client
        self._own_http = http_client is None
        self._limits = limits
        self.silence_timeout_s = silence_timeout_s
        self._backoff = backoff or Backoff()
        self._open_timeout_s = open_timeout_s
        self._max_attempts = max_reconnect_attempts
        self._rng = rng or random.Random()
        self._refused_token = ""  # the token of the last authorize (refused when it 401s)
        self._resume_on_new_token = resume_on_new_token
        self._on_unauthorized = on_unauthorized
        self._token_check_s = token_check_s
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._subscriptions: dict[str, FeedMode] = {}
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self.error: FeedError | None = None  # the fatal error that stopped the client, if any
        self.market_status: dict[str, MarketStatus] = {}
        # counters
        self.frames_received = 0  # frames decoded (any type)
        self.ticks_received = 0
        self.malformed_frames = 0  # undecodable frames, skipped
        self.unknown_frames = 0  # frames of an unknown type, skipped
        self.dropped_frames = 0  # frames dropped because the iterator consumer fell behind
        self.handler_errors = 0
        self.connects = 0  # websocket connections opened
        self.reconnects = 0  # connection losses (drops, handshake failures, silence) retried
        self.silence_reconnects = 0  # of which: silent during market hours
        self.unauthorized = 0  # times Upstox refused the token
        self.resumed = 0  # times a new token brought the client back after a refusal

    # lifecycle

    async def __aenter__(self) -> MarketDataFeedV3Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._task is not None:
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._open_timeout_s)
        self._task = asyncio.create_task(self._run(), name="upstox-feed-v3")

    async def close(self) -> None:
        """Close the connection (code 1000), stop reconnecting and end the iterators."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
        if self._task is not None:
            # The loop may be anywhere (authorizing, connecting, backing off): stop it there.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def connected(self) -> bool:
        """Whether a websocket connection is open now."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until a connection is open and its subscriptions were sent."""
        await self._connected.wait()

    @property
    def subscriptions(self) -> Mapping[str, FeedMode]:
        """Subscribed instrument keys and their modes (resent on every reconnect)."""
        return MappingProxyType(self._subscriptions)

    # subscriptions

    async def subscribe(self, instrument_keys: Sequence[str], mode: FeedMode) -> None:
        """Subscribe instruments in a mode (also re-modes keys already subscribed).

        Raises:
            ConfigError: the connection's cap for the mode would be exceeded.
        """
        keys = list(dict.fromkeys(instrument_keys))
        self._check_caps({**self._subscriptions, **dict.fromkeys(keys, mode)})
        for key in keys:
            self._subscriptions[key] = mode
        await self._send_request("sub", keys, mode)

    async def unsubscribe(self, instrument_keys: Sequence[str]) -> None:
        """Stop receiving instruments."""
        keys = [k for k in dict.fromkeys(instrument_keys) if k in self._subscriptions]
        for key in keys:
            del self._subscriptions[key]
        if keys:
            await self._send_request("unsub", keys, None)

    async def change_mode(self, instrument_keys: Sequence[str], mode: FeedMode) -> None:
        """Switch subscribed instruments to another mode.

        Raises:
            ValueError: a key is not subscribed.
            ConfigError: the connection's cap for the mode would be exceeded.
        """
        keys = list(dict.fromkeys(instrument_keys))
        missing = [k for k in keys if k not in self._subscriptions]
        if missing:
            raise ValueError(f"not subscribed: {', '.join(missing)}")
        self._check_caps({**self._subscriptions, **dict.fromkeys(keys, mode)})
        for key in keys:
            self._subscriptions[key] = mode
        await self._send_request("change_mode", keys, mode)

    def _check_caps(self, wanted: Mapping[str, FeedMode]) -> None:
        counts: dict[FeedMode, int] = {}
        for mode in wanted.values():
            counts[mode] = counts.get(mode, 0) + 1
        combined = len(counts) > 1
        for mode, count in counts.items():
            cap = self._limits.cap(mode, combined=combined)
            if count > cap:
                kind = "combined" if combined else "single-mode"
                raise ConfigError(
                    f"{count} instruments in mode {mode.value!r} exceed the {kind} cap of {cap} "
                    "per connection; shard them with plan_shards()"
                )

    async def _send_request(self, method: str, keys: list[str], mode: FeedMode | None) -> None:
        ws = self._ws
        if ws is None or not keys:
            return  # sent on (re)connect from self._subscriptions
        try:
            async with self._send_lock:
                await ws.send(_request_bytes(method, keys, mode))
        except ConnectionClosed:
            log.info("feed.request.unsent", extra={"method": method, "keys": len(keys)})

    async def _resubscribe(self, ws: ClientConnection) -> None:
        by_mode: dict[FeedMode, list[str]] = {}
        for key, mode in self._subscriptions.items():
            by_mode.setdefault(mode, []).append(key)
        async with self._send_lock:
            for mode, keys in by_mode.items():
                await ws.send(_request_bytes("sub", keys, mode))

    # iteration

    async def frames(self) -> AsyncIterator[DecodedFrame]:
        """Yield decoded frames until the client is closed.

        Raises:
            FeedError: the client stopped on a fatal error (e.g. FeedUnauthorized).
        """
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # let another waiting iterator end too
                if self.error is not None:
                    raise self.error
                return
            if isinstance(item, DecodedFrame):
                yield item

    async def ticks(self) -> AsyncIterator[Tick]:
        """Yield decoded ticks until the client is closed (see `frames`)."""
        async for frame in self.frames():
            for tick in frame.ticks:
                yield tick

    # connection loop

    def _current_token(self) -> str:
        return self._token() if callable(self._token) else self._token

    async def _wait_for_new_token(self, refused: str) -> None:
        """Wait until the token source gives a token other than the refused one."""
        log.warning("feed.waiting_for_login")
        while not self._closing.is_set():
            token = self._current_token()
            if token and token != refused:
                self.resumed += 1
                log.info("feed.token.renewed")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self._token_check_s)

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing.is_set():
                delivered = False
                refused: str | None = None
                try:
                    delivered = await self._connect_once()
                except FeedUnauthorized as e:
                    self.unauthorized += 1
                    refused = self._refused_token
                    if self._on_unauthorized is not None:
                        try:
                            self._on_unauthorized(refused)
                        except Exception:
                            log.exception("feed.unauthorized_hook.failed")
                    if not self._resume_on_new_token:
                        raise
                    log.error("feed.unauthorized", extra={"error": str(e)})
                except (
                    ConnectionClosed,
                    InvalidHandshake,
                    InvalidURI,
                    OSError,
                    TimeoutError,
                    httpx.HTTPError,
                    FeedError,
                ) as e:
                    log.warning("feed.connection.lost", extra={"error": f"{type(e).__name__}: {e}"})
                finally:
                    self._ws = None
                    self._connected.clear()
                if self._closing.is_set():
                    break
                if refused is not None:
                    await self._wait_for_new_token(refused)
                    attempt = 0
                    continue
                attempt = 0 if delivered else attempt + 1
                if self._max_attempts is not None and attempt > self._max_attempts:
                    raise FeedError(f"feed: gave up after {self._max_attempts} failed reconnects")
                self.reconnects += 1
                delay = self._backoff.delay(max(attempt - 1, 0), self._rng)
                log.info("feed.reconnect", extra={"attempt": attempt, "delay_s": round(delay, 3)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=delay)
        except FeedError as e:
            self.error = e
            log.error("feed.stopped", extra={"error": str(e)})
        finally:
            self._put(_END, force=True)

    async def _connect_once(self) -> bool:
        """Authorize, connect, subscribe and receive until the connection ends.

        Returns whether any frame arrived (a healthy connection resets the backoff).
        """
        uri = await self._authorize()
        ws = await connect(
            uri,
            open_timeout=self._open_timeout_s,
            proxy=None,
            compression=None,
            max_size=2**24,
        )
        self._ws = ws
        self.connects += 1
        alive = True
        try:
            await self._resubscribe(ws)
            self._connected.set()
            log.info("feed.connected", extra={"subscriptions": len(self._subscriptions)})
            delivered, alive = await self._receive(ws)
            return delivered
        finally:
            if alive:
                await ws.close()
            else:
                ws.transport.abort()  # a dead peer would not answer a closing handshake

    async def _authorize(self) -> str:
        token = self._current_token()
        self._refused_token = token
        if not token:
            raise FeedUnauthorized("no Upstox access token: log in first")
        http = self._http
        if http is None:  # start() creates it; close() may have just dropped it
            raise FeedError("feed client is not started")
        response = await http.get(
            self._base_url + AUTHORIZE_PATH,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=self._open_timeout_s,
        )
        if response.status_code == 401:
            raise FeedUnauthorized(f"feed authorize refused the token: {_error_text(response)}")
        if response.status_code != 200:
            raise FeedError(f"feed authorize HTTP {response.status_code}: {_error_text(response)}")
        try:
            data = response.json()["data"]
            uri = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FeedError("feed authorize: unexpected response body") from e
        if not isinstance(uri, str) or not uri.startswith(("ws://", "wss://")):
            raise FeedError(f"feed authorize: no websocket URI in the response ({uri!r})")
        return uri

    async def _receive(self, ws: ClientConnection) -> tuple[bool, bool]:
        """Receive until the connection ends; returns (any frame arrived, connection alive)."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        delivered = False
        while True:
            timeout = max(0.01, quiet_since + self.silence_timeout_s - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    message = await ws.recv()
            except TimeoutError:
                if self._closing.is_set():
                    return delivered, True
                now = loop.time()
                if now - quiet_since < self.silence_timeout_s:
                    continue
                if self._subscriptions and self._is_market_open(self._clock()):
                    self.silence_reconnects += 1
                    log.warning(
                        "feed.connection.silent",
                        extra={"silent_s": round(now - quiet_since, 3)},
                    )
                    return delivered, False
                quiet_since = now  # silence outside market hours (or unsubscribed) is normal
                continue
            except ConnectionClosed as e:
                if self._closing.is_set() or (e.rcvd is not None and e.rcvd.code == 1000):
                    log.info("feed.connection.closed", extra={"code": ws.close_code})
                    return delivered, True
                raise
            quiet_since = loop.time()
            delivered = True
            await self._on_message(message)

    async def _on_message(self, message: bytes | str) -> None:
        if isinstance(message, str):
            self.malformed_frames += 1
            log.warning(
                "feed.frame.malformed", extra={"reason": "text frame", "size": len(message)}
            )
            return
        try:
            frame = decode_frame(message)
        except MalformedFrame as e:
            self.malformed_frames += 1
            log.warning("feed.frame.malformed", extra={"reason": str(e), "size": len(message)})
            return
        self.frames_received += 1
        if frame.type is FrameType.UNKNOWN:
            self.unknown_frames += 1
            log.warning("feed.frame.unknown_type", extra={"size": len(message)})
            return
        if frame.market_info is not None:
            self.market_status.update(frame.market_info.segment_status)
        self.ticks_received += len(frame.ticks)
        if self._on_frame is None:
            self._put(frame)
            return
        try:
            result = self._on_frame(frame)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.handler_errors += 1
            log.exception("feed.handler.failed")

    def _put(self, item: object, *, force: bool = False) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if not force:
                self.dropped_frames += 1
                log.warning("feed.frame.dropped", extra={"dropped": self.dropped_frames})
                return
            self._queue.get_nowait()  # make room for the end marker
            self._queue.put_nowait(item)


def _request_bytes(method: str, keys: list[str], mode: FeedMode | None) -> bytes:
    data: dict[str, object] = {"instrumentKeys": keys}
    if mode is not None:
        data = {"mode": mode.value, "instrumentKeys": keys}
    body = {"guid": _SUBSCRIBE_GUID_PREFIX + uuid.uuid4().hex, "method": method, "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


def _error_text(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        code = first.get("error_code") or first.get("errorCode") or ""
        return f"{code} {first.get('message', '')}".strip()
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.text[:200]
