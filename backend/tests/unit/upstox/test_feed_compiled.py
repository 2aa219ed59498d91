"""The compiled feed decoder against the Python reference: same ticks, same frames, same faults."""

from __future__ import annotations

import importlib.util
import math
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upstox_bot.domain import TICK_FIELDS, Tick
from upstox_bot.errors import MalformedFrame
from upstox_bot.upstox import feed_protocol
from upstox_bot.upstox.feed_protocol import DecodedFrame, decode_frame, decode_frame_python
from upstox_bot.upstox.proto import MarketDataFeedV3_pb2 as pb

# --- the two paths side by side -------------------------------------------------------------------


def _outcome(decode: Callable[[bytes], DecodedFrame], data: bytes) -> object:
    """Everything a caller can see of one decoded frame, comparable across the two paths.

    Ticks are sorted by instrument (the compiled path keeps wire order, upb's map its hash
    order) and compared by repr, so that NaN greeks compare equal.
    """
    try:
        frame = decode(data)
    except MalformedFrame:
        return "malformed"
    keys = sorted(frame.instrument_keys)
    extras: list[object] = []
    for key in keys:
        try:
            quote: object = frame.quote(key)
        except MalformedFrame:
            quote = "malformed"
        extras.append((key, frame.mode(key), repr(quote)))
    return (
        frame.type,
        frame.current_ts_ms,
        repr(sorted(frame.ticks, key=lambda t: t.instrument_key)),
        frame.market_info,
        extras,
    )


def _assert_same(data: bytes) -> object:
    compiled = _outcome(decode_frame, data)
    reference = _outcome(decode_frame_python, data)
    assert compiled == reference
    return compiled


# --- random FeedResponse messages -----------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SMALL_INT = st.integers(min_value=0, max_value=10**9)


@st.composite
def half_paisa_prices(draw: st.DrawFn) -> float:
    """Prices on or next to the half-paisa edge, where the rounding takes its Decimal path."""
    paise = draw(st.integers(min_value=-(10**9), max_value=10**9))
    price = round(paise / 100 + 0.005, 3)
    step = draw(st.sampled_from([0, 0, 1, -1]))
    if step:
        price = math.nextafter(price, math.copysign(math.inf, step))
    return price


FINITE_PRICES = st.one_of(
    st.just(0.0),
    st.just(-0.0),
    half_paisa_prices(),
    st.integers(min_value=1, max_value=10**7).map(lambda p: p / 100),  # on the paisa grid
    st.floats(min_value=-1e7, max_value=1e7, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),  # up to 1.8e308: the slow exact path
)


@st.composite
def prices(draw: st.DrawFn) -> float:
    """Mostly finite prices; now and then a NaN or an infinity, which no path may accept."""
    if draw(st.integers(min_value=0, max_value=60)) == 0:
        special: float = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return special
    finite: float = draw(FINITE_PRICES)
    return finite


PRICES = prices()
# Doubles that need not be prices (greeks, iv, oi): anything, NaN included.
ANY_DOUBLE = st.one_of(st.just(0.0), st.floats(allow_nan=False, allow_infinity=False), st.floats())
KEYS = st.one_of(
    st.sampled_from(["NSE_EQ|INE002A01018", "NSE_FO|52910", "NSE_INDEX|Nifty 50", ""]),
    st.text(max_size=24),  # any Unicode, NUL included
)


def _unknown_fields() -> st.SearchStrategy[bytes]:
    """Serialised fields with numbers no message here knows, of every wire type."""
    field_numbers = st.integers(min_value=17, max_value=2**29 - 1)

    def encode(number: int, kind: int, payload: bytes, value: int) -> bytes:
        tag = number << 3 | kind
        if kind == 0:
            return _varint(tag) + _varint(value)
        if kind == 1:
            return _varint(tag) + payload.ljust(8, b"\0")[:8]
        if kind == 2:
            return _varint(tag) + _varint(len(payload)) + payload
        if kind == 3:  # a group holding one varint field
            return _varint(tag) + _varint(1 << 3) + _varint(value) + _varint(number << 3 | 4)
        return _varint(tag) + payload.ljust(4, b"\0")[:4]

    one = st.builds(
        encode,
        field_numbers,
        st.sampled_from([0, 1, 2, 3, 5]),
        st.binary(max_size=12),
        st.integers(min_value=0, max_value=2**64 - 1),
    )
    return st.lists(one, max_size=3).map(b"".join)


UNKNOWN = _unknown_fields()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _maybe_unknown(draw: st.DrawFn, message: Any) -> None:
    """Sometimes give the message unknown fields (they survive serialisation)."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        message.MergeFromString(draw(UNKNOWN))


def _fill_ltpc(draw: st.DrawFn, ltpc: Any) -> None:
    if draw(st.integers(min_value=0, max_value=4)):
        ltpc.ltp = draw(PRICES)
    if draw(st.booleans()):
        ltpc.ltt = draw(st.one_of(st.just(0), INT64))
    if draw(st.booleans()):
        ltpc.ltq = draw(st.one_of(SMALL_INT, INT64))
    if draw(st.booleans()):
        ltpc.cp = draw(PRICES)
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        ltpc.iep.value = draw(PRICES)
    _maybe_unknown(draw, ltpc)


def _fill_quote(draw: st.DrawFn, quote: Any) -> None:
    if draw(st.booleans()):
        quote.bidQ = draw(st.one_of(SMALL_INT, INT64))
    if draw(st.booleans()):
        quote.bidP = draw(PRICES)
    if draw(st.booleans()):
        quote.askQ = draw(st.one_of(SMALL_INT, INT64))
    if draw(st.booleans()):
        quote.askP = draw(PRICES)
    _maybe_unknown(draw, quote)


def _fill_greeks(draw: st.DrawFn, greeks: Any) -> None:
    greeks.SetInParent()  # present even when every value is 0
    for name in ("delta", "theta", "gamma", "vega", "rho"):
        if draw(st.booleans()):
            setattr(greeks, name, draw(ANY_DOUBLE))
    _maybe_unknown(draw, greeks)


def _fill_ohlc(draw: st.DrawFn, ohlcs: Any) -> None:
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        c = ohlcs.add()
        c.interval = draw(st.sampled_from(["1d", "I1", "I30", "I5", ""]))
        c.open, c.high, c.low, c.close = (draw(PRICES) for _ in range(4))
        c.vol, c.ts = draw(SMALL_INT), draw(INT64)
        _maybe_unknown(draw, c)


def _fill_market_ff(draw: st.DrawFn, m: Any) -> None:
    m.SetInParent()
    if draw(st.integers(min_value=0, max_value=5)):
        _fill_ltpc(draw, m.ltpc)
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        _fill_quote(draw, m.marketLevel.bidAskQuote.add())
    if draw(st.booleans()):
        _fill_greeks(draw, m.optionGreeks)
    if draw(st.booleans()):
        _fill_ohlc(draw, m.marketOHLC.ohlc)
    for name in ("atp", "tbq", "tsq", "iep", "rp"):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            setattr(m, name, draw(PRICES))
    for name in ("ieq", "iiqTotal", "iiqM"):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            setattr(m, name, draw(INT64))
    if draw(st.booleans()):
        m.vtt = draw(st.one_of(SMALL_INT, INT64))
    if draw(st.booleans()):
        m.oi = draw(st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e9), ANY_DOUBLE))
    if draw(st.booleans()):
        m.iv = draw(ANY_DOUBLE)
    m.casEligible = draw(st.booleans())
    _maybe_unknown(draw, m)


def _fill_first_level(draw: st.DrawFn, f: Any) -> None:
    f.SetInParent()
    if draw(st.integers(min_value=0, max_value=5)):
        _fill_ltpc(draw, f.ltpc)
    if draw(st.booleans()):
        f.firstDepth.SetInParent()
        _fill_quote(draw, f.firstDepth)
    if draw(st.booleans()):
        _fill_greeks(draw, f.optionGreeks)
    if draw(st.booleans()):
        f.vtt = draw(st.one_of(SMALL_INT, INT64))
    if draw(st.booleans()):
        f.oi = draw(st.one_of(st.floats(min_value=0, max_value=1e9), ANY_DOUBLE))
    if draw(st.booleans()):
        f.iv = draw(ANY_DOUBLE)
    _maybe_unknown(draw, f)


def _fill_feed(draw: st.DrawFn, feed: Any) -> None:
    kind = draw(st.sampled_from(["ltpc", "market", "index", "full_empty", "greeks", "none"]))
    if kind == "ltpc":
        feed.ltpc.SetInParent()
        _fill_ltpc(draw, feed.ltpc)
    elif kind == "market":
        _fill_market_ff(draw, feed.fullFeed.marketFF)
    elif kind == "index":
        feed.fullFeed.indexFF.SetInParent()
        if draw(st.integers(min_value=0, max_value=5)):
            _fill_ltpc(draw, feed.fullFeed.indexFF.ltpc)
        if draw(st.booleans()):
            _fill_ohlc(draw, feed.fullFeed.indexFF.marketOHLC.ohlc)
    elif kind == "full_empty":
        feed.fullFeed.SetInParent()
    elif kind == "greeks":
        _fill_first_level(draw, feed.firstLevelWithGreeks)
    if draw(st.booleans()):
        feed.requestMode = draw(st.integers(min_value=-5, max_value=8))
    _maybe_unknown(draw, feed)


@st.composite
def feed_responses(draw: st.DrawFn, max_feeds: int = 8) -> bytes:
    """One serialised FeedResponse, of any type, with any mix of feed kinds."""
    msg: Any = pb.FeedResponse()  # Any: the type is also set to numbers the enum lacks
    msg.type = draw(st.sampled_from([0, 1, 1, 1, 1, 1, 2, 3, -1, 2**31 - 1]))
    if draw(st.booleans()):
        msg.currentTs = draw(st.one_of(st.just(1767000000000), INT64))
    for key in draw(st.lists(KEYS, min_size=1, max_size=max_feeds)):
        _fill_feed(draw, msg.feeds[key])
    if draw(st.integers(min_value=0, max_value=7)) == 0:
        msg.marketInfo.segmentStatus["NSE_EQ"] = draw(st.integers(min_value=0, max_value=7))
        msg.marketInfo.casMarketStatus["NSE_FO"].status = draw(st.text(max_size=5))
    _maybe_unknown(draw, msg)
    data: bytes = msg.SerializeToString()
    return data


@st.composite
def wire_frames(draw: st.DrawFn) -> bytes:
    """A FeedResponse, or two concatenated: the second merges into the first, its map entries
    replace the first's with the same key and its oneof members replace the first's."""
    data = draw(feed_responses())
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        data += draw(feed_responses(max_feeds=3))
    return data


FUZZ = settings(max_examples=400)


@FUZZ
@given(wire_frames())
def test_random_frames_decode_the_same_through_both_paths(data: bytes) -> None:
    _assert_same(data)


@settings(max_examples=25)
@given(feed_responses(max_feeds=300))
def test_large_maps_decode_the_same_through_both_paths(data: bytes) -> None:
    _assert_same(data)


def test_a_snapshot_of_five_thousand_instruments_decodes_the_same() -> None:
    msg = pb.FeedResponse(type=pb.initial_feed, currentTs=1767000000000)
    for i in range(5000):
        ltpc = msg.feeds[f"NSE_FO|{i}"].fullFeed.marketFF.ltpc
        ltpc.ltp, ltpc.cp = 100 + i * 0.05, 99.5 + i * 0.005
    data = msg.SerializeToString()

    outcome = _assert_same(data)

    assert len(decode_frame(data).ticks) == 5000
    assert outcome != "malformed"


@given(st.lists(st.sampled_from(["A", "B", "C"]), min_size=2, max_size=6), st.data())
def test_repeated_keys_keep_the_last_entry_in_both_paths(
    keys: list[str], data: st.DataObject
) -> None:
    parts = []
    for key in keys:
        msg = pb.FeedResponse(type=pb.live_feed)
        msg.feeds[key].ltpc.ltp = data.draw(st.sampled_from([0.0, 1.5, math.nan]))
        parts.append(msg.SerializeToString())

    _assert_same(b"".join(parts))


# --- garbled bytes -------------------------------------------------------------------------------


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    """A valid frame, cut short, with bytes flipped, dropped or inserted."""
    data = bytearray(draw(feed_responses(max_feeds=3)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["cut", "flip", "set", "drop", "insert"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "cut":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x04, 0x0B, 0x0E, 0xC0]))
        elif op == "drop" and data:
            del data[at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


@FUZZ
@given(garbled())
def test_garbled_frames_fail_or_decode_alike_in_both_paths(data: bytes) -> None:
    _assert_same(data)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_fail_or_decode_alike_in_both_paths(data: bytes) -> None:
    _assert_same(data)


@given(feed_responses(max_feeds=3), st.data())
def test_truncated_frames_fail_or_decode_alike_in_both_paths(
    whole: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=max(len(whole) - 1, 0)))

    _assert_same(whole[:cut])


def _ld(field: int, body: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(body)) + body


def _entry(key: bytes, feed: bytes = b"") -> bytes:
    return _ld(2, _ld(1, key) + _ld(2, feed))


def _in_quote(inner: bytes) -> bytes:
    """`inner` as the body of the first depth level of a full market feed with LTP 2.0."""
    ltpc = b"\x09" + struct.pack("<d", 2.0)
    market = _ld(1, ltpc) + _ld(2, _ld(1, inner))  # ltpc, marketLevel { bidAskQuote }
    return _entry(b"NSE_EQ|X", _ld(2, _ld(1, market)))  # fullFeed { marketFF }


GROUP_OPEN, GROUP_CLOSE = b"\xab\x06", b"\xac\x06"  # field 101, start and end group


@pytest.mark.parametrize(
    ("data", "malformed"),
    [
        (b"\x00\x01", True),  # field number 0
        (b"\x0e", True),  # wire type 6
        (b"\x0f", True),  # wire type 7
        (b"\xac\x06", True),  # end of a group never opened
        (GROUP_OPEN + b"\x08\x01", True),  # group never closed
        (GROUP_OPEN + b"\x08\x01\xb4\x06", True),  # closed by another field number
        (GROUP_OPEN + b"\x00\x00" + GROUP_CLOSE, False),  # field 0 inside a group is skipped
        (GROUP_OPEN * 100 + GROUP_CLOSE * 100, False),  # upb's depth limit: 100 levels
        (GROUP_OPEN * 101 + GROUP_CLOSE * 101, True),
        (_in_quote(GROUP_OPEN * 94 + GROUP_CLOSE * 94), False),  # 6 levels down: 94 left
        (_in_quote(GROUP_OPEN * 95 + GROUP_CLOSE * 95), True),
        (b"\xf8\xff\xff\xff\x0f\x01", False),  # the largest field number
        (b"\xf8\xff\xff\xff\x7f\x01", True),  # a tag wider than 32 bits
        (b"\xf8\xff\xff\xff\xff\x01\x01", True),  # a tag of 6 bytes
        (b"\x88\x80\x80\x80\x00\x01", False),  # a tag padded to 5 bytes
        (b"\x18" + b"\xff" * 9 + b"\x7f", False),  # a 10-byte varint
        (b"\x18" + b"\xff" * 10 + b"\x01", True),  # an 11-byte varint
        (b"\x22" + b"\xff" * 9 + b"\x01", True),  # a length of 2**64 - 1
        (b"\x22\x80\x80\x80\x80\x08", True),  # a length of 2**31
        (_entry(b"\xed\xa0\x80"), True),  # a UTF-16 surrogate in a key
        (_entry(b"\xc0\x80"), True),  # an overlong NUL in a key
        (_entry("NSE_EQ|\u20b9\U0001f600".encode()), False),
        (_entry(b"K", _ld(2, _ld(1, _ld(4, _ld(1, _ld(1, b"\xff")))))), True),  # candle interval
        (_entry(b"K", _ld(1, _ld(5, b"\x09\x00"))), True),  # a cut inside the iep wrapper
        (_entry(b"K", _ld(1, b"\x09\x00\x00\x00\x00\x00\x00\xf0\x3f\x0c")), True),  # end group
        (b"\x10\x05", False),  # feeds with the wrong wire type: an unknown field
        (b"\x13\x14", False),  # feeds as a group
        (b"\x20\x01", False),  # marketInfo as a varint
        (b"\x08\x82\x80\x80\x80\x10", False),  # type 2 + 2**32 is market_info (an int32 enum)
    ],
)
def test_wire_edge_cases_are_judged_as_upb_judges_them(data: bytes, malformed: bool) -> None:
    outcome = _assert_same(data)

    assert (outcome == "malformed") is malformed


def test_non_finite_prices_raise_malformed_frame_in_both_paths() -> None:
    for value in (math.nan, math.inf, -math.inf):
        msg = pb.FeedResponse(type=pb.live_feed)
        m = msg.feeds["K"].fullFeed.marketFF
        m.ltpc.ltp = 10.0
        m.marketLevel.bidAskQuote.add(bidP=value, bidQ=1)
        assert _assert_same(msg.SerializeToString()) == "malformed"


# --- the compiled path is the one in use ---------------------------------------------------------


def test_compiled_decoder_is_built_and_in_use() -> None:
    spec = importlib.util.find_spec("upstox_bot.upstox._v3_decoder")

    assert spec is not None, "the C extension was not built by the install"
    assert spec.origin is not None
    assert not spec.origin.endswith(".py")
    assert feed_protocol.COMPILED_DECODER
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    msg.feeds["K"].ltpc.ltp = 1.0
    assert feed_protocol._compiled_decode is not None
    assert feed_protocol._compiled_decode(msg.SerializeToString()) is not None


def test_compiled_frames_parse_their_quotes_lazily() -> None:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    msg.feeds["K"].fullFeed.marketFF.ltpc.ltp = 1.0
    msg.feeds["K"].fullFeed.marketFF.atp = 2.5

    frame = decode_frame(msg.SerializeToString())

    assert frame._feeds is None  # nothing parsed by upb yet
    quote = frame.quote("K")
    assert quote is not None
    assert quote.atp_paise == 250
    assert frame.instrument_keys == ["K"]


def test_decode_falls_back_to_python_without_the_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    msg.feeds["K"].ltpc.ltp = 1.0
    monkeypatch.setattr(feed_protocol, "_compiled_decode", None)

    frame = decode_frame(msg.SerializeToString())

    assert [t.ltp_paise for t in frame.ticks] == [100]
    assert frame._feeds is not None  # parsed by upb


def test_ticks_built_through_the_factory_equal_those_written_directly() -> None:
    from upstox_bot.upstox import _v3_decoder

    msg = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    f = msg.feeds["NSE_FO|1"].firstLevelWithGreeks
    f.ltpc.ltp, f.iv, f.oi = 55.5, 0.2, 1000.0
    f.optionGreeks.delta = 0.5
    data = msg.SerializeToString()
    direct = decode_frame(data).ticks
    _v3_decoder.configure(Tick, None, feed_protocol._make_tick, feed_protocol.to_paise)
    try:
        built = decode_frame(data).ticks
    finally:
        feed_protocol._load_compiled_decoder()  # back to how this build makes ticks

    assert built == direct
    assert direct[0].delta == 0.5


def test_both_paths_fill_each_tick_field_by_its_name() -> None:
    """The decoders hand a Tick its values by position, in the order of its fields
    (`domain.TICK_FIELDS`); the C decoder has that order written in. A value distinct in every
    field, checked by name, shows both follow the domain's declaration."""
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=7)
    m = msg.feeds["NSE_FO|9"].fullFeed.marketFF
    m.ltpc.ltp, m.ltpc.ltt, m.ltpc.ltq, m.ltpc.cp = 101.0, 1_000, 3, 102.0
    m.marketLevel.bidAskQuote.add(bidQ=4, bidP=103.0, askQ=5, askP=104.0)
    g = m.optionGreeks
    g.delta, g.theta, g.gamma, g.vega, g.rho = 0.25, -0.5, 0.125, 1.5, 2.5
    m.vtt, m.oi, m.iv = 6, 7.0, 0.375
    expected = {
        "instrument_key": "NSE_FO|9",
        "ts_ms": 1_000,
        "ltp_paise": 10_100,
        "ltq": 3,
        "volume": 6,
        "close_paise": 10_200,
        "bid_paise": 10_300,
        "ask_paise": 10_400,
        "bid_qty": 4,
        "ask_qty": 5,
        "oi": 7,
        "iv": 0.375,
        "delta": 0.25,
        "gamma": 0.125,
        "theta": -0.5,
        "vega": 1.5,
        "rho": 2.5,
    }
    assert set(expected) == set(TICK_FIELDS)
    assert len(set(expected.values())) == len(expected)  # a swap of two fields would show
    assert feed_protocol._compiled_decode is not None
    data = msg.SerializeToString()
    for decode in (decode_frame, decode_frame_python):
        (tick,) = decode(data).ticks
        assert {name: getattr(tick, name) for name in TICK_FIELDS} == expected
