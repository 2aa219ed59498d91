"""Upstox Market Data Feed V3: the wire protocol, without the connection.

Every binary frame from the server is one `FeedResponse` protobuf. `decode_frame` turns it into
domain `Tick`s (prices in integer paise, times in epoch ms UTC) plus the frame type and segment
status; the richer full-mode data (depth, candles, ATP, total buy/sell quantity, auction fields)
is decoded on demand by `DecodedFrame.quote`, so that the hot path pays only for what it uses.
Also here: the JSON-lines form of a tick, and the plan limits with the sharding of instruments
over connections. The connection itself is `upstox.market_feed`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from google.protobuf.message import DecodeError

from upstox_bot.domain import TICK_FIELDS, Candle, Tick, rupees_to_paise
from upstox_bot.errors import ConfigError, MalformedFrame
from upstox_bot.upstox.proto import MarketDataFeedV3_pb2 as pb

log = logging.getLogger(__name__)


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
        from upstox_bot.upstox import _v3_decoder
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
