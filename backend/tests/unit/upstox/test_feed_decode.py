"""Upstox Market Data Feed V3 decoding: documented example frames, every field, faults, sharding."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from upstox_bot.domain import Candle, Tick, rupees_to_paise
from upstox_bot.errors import ConfigError, MalformedFrame
from upstox_bot.upstox.feed_protocol import (
    _TICK_FIELDS,
    NORMAL_PLAN_LIMITS,
    PLUS_PLAN_LIMITS,
    DepthLevel,
    FeedLimits,
    FeedMode,
    FrameType,
    FullQuote,
    MarketDepth,
    MarketStatus,
    StatusInfo,
    decode_frame,
    plan_shards,
    tick_to_json,
    to_paise,
)
from upstox_bot.upstox.market_feed import _request_bytes
from upstox_bot.upstox.proto import MarketDataFeedV3_pb2 as pb
from upstox_bot.upstox.websocket import Backoff

# --- example frames of the Upstox fact sheet (section 3.7), hex as documented -------------------

HEX_MARKET_INFO = "080218808ca1cbb63322180a0a0a064e53455f455110020a0a0a064e53455f464f1000"
HEX_LTPC_LIVE = (
    "080112340a134e53455f45517c494e45303032413031303138121d0a1b090000000000e6954010fb8ca1cbb633"
    "180a210000000000b8954018f48fa1cbb633"
)
HEX_INITIAL = (
    "12240a0c4e53455f464f7c313233343512140a12090000000000505940210000000000c0584018818ca1cbb633"
)
HEX_FULL = (
    "080112e5010a0c4e53455f464f7c313233343512d40112cf010acc010a1b090000000000505940108493a1cbb633"
    "1832210000000000c05840121a0a1808f40311cdcccccccc4c594018fa0121333333333353594022690a330a0231"
    "64110000000000005940190000000000805940210000000000a0584029000000000050594030bac40738c0e8e5b1"
    "b6330a320a024931110000000000405940193333333333535940219a9999999939594029000000000050594030dc"
    "0b38a0b79dcbb63329333333333333594030bac407390000000000d51b4149000000000088c34051000000000070"
    "c740200118e893a1cbb633"
)
# Frames the fact sheet gives only as JSON views.
JSON_INDEX_FULL = {
    "type": "live_feed",
    "feeds": {
        "NSE_INDEX|Nifty 50": {
            "fullFeed": {
                "indexFF": {"ltpc": {"ltp": 24500.5, "ltt": "1767000000900", "cp": 24400.0}}
            }
        }
    },
    "currentTs": "1767000001000",
}
JSON_OPTION_GREEKS = {
    "type": "live_feed",
    "feeds": {
        "NSE_FO|54321": {
            "requestMode": "option_greeks",
            "firstLevelWithGreeks": {
                "ltpc": {"ltp": 55.5},
                "firstDepth": {"bidQ": "75", "bidP": 55.4, "askQ": "150", "askP": 55.6},
                "optionGreeks": {
                    "delta": 0.45,
                    "theta": -12.3,
                    "gamma": 0.0012,
                    "vega": 8.1,
                    "rho": 1.2,
                },
                "vtt": "100000",
                "oi": 250000.0,
                "iv": 0.152,
            },
        }
    },
    "currentTs": "1767000001000",
}


def _from_json(view: dict[str, Any]) -> bytes:
    msg = json_format.ParseDict(view, pb.FeedResponse())
    data: bytes = msg.SerializeToString()
    return data


def _tick(**overrides: Any) -> Tick:
    base: dict[str, Any] = {"instrument_key": "K", "ts_ms": 0, "ltp_paise": 0}
    base.update(overrides)
    return Tick(**base)


def test_example_market_info_frame_gives_segment_status_and_no_ticks() -> None:
    frame = decode_frame(bytes.fromhex(HEX_MARKET_INFO))

    assert frame.type is FrameType.MARKET_INFO
    assert frame.current_ts_ms == 1767000000000
    assert frame.ticks == []
    assert frame.market_info is not None
    assert frame.market_info.segment_status == {
        "NSE_EQ": MarketStatus.NORMAL_OPEN,
        "NSE_FO": MarketStatus.PRE_OPEN_START,
    }


def test_example_ltpc_live_frame_gives_one_tick_in_paise() -> None:
    frame = decode_frame(bytes.fromhex(HEX_LTPC_LIVE))

    assert frame.type is FrameType.LIVE_FEED
    assert frame.current_ts_ms == 1767000000500
    assert frame.ticks == [
        _tick(
            instrument_key="NSE_EQ|INE002A01018",
            ts_ms=1767000000123,
            ltp_paise=140150,
            ltq=10,
            close_paise=139000,
        )
    ]
    assert frame.mode("NSE_EQ|INE002A01018") is FeedMode.LTPC
    assert frame.quote("NSE_EQ|INE002A01018") is None


def test_example_initial_frame_without_type_is_initial_feed_and_uses_frame_time() -> None:
    frame = decode_frame(bytes.fromhex(HEX_INITIAL))

    assert frame.type is FrameType.INITIAL_FEED
    assert frame.ticks == [
        _tick(instrument_key="NSE_FO|12345", ts_ms=1767000000001, ltp_paise=10125, close_paise=9900)
    ]


def test_example_full_market_frame_decodes_tick_depth_candles_and_extras() -> None:
    frame = decode_frame(bytes.fromhex(HEX_FULL))

    assert frame.type is FrameType.LIVE_FEED
    assert frame.current_ts_ms == 1767000001000
    assert frame.ticks == [
        _tick(
            instrument_key="NSE_FO|12345",
            ts_ms=1767000000900,
            ltp_paise=10125,
            ltq=50,
            volume=123450,
            close_paise=9900,
            bid_paise=10120,
            ask_paise=10130,
            bid_qty=500,
            ask_qty=250,
            oi=456000,
        )
    ]
    assert frame.quote("NSE_FO|12345") == FullQuote(
        instrument_key="NSE_FO|12345",
        mode=FeedMode.FULL,
        atp_paise=10080,
        tbq=10000,
        tsq=12000,
        iep_paise=None,
        reference_price_paise=0,
        ieq=0,
        iiq_total=0,
        iiq_market=0,
        cas_eligible=False,
        depth=MarketDepth(
            bids=(DepthLevel(price_paise=10120, quantity=500),),
            asks=(DepthLevel(price_paise=10130, quantity=250),),
        ),
        candles=(
            Candle(
                instrument_key="NSE_FO|12345",
                interval_s=86_400,
                start_ms=1766946600000,
                open_paise=10000,
                high_paise=10200,
                low_paise=9850,
                close_paise=10125,
                volume=123450,
            ),
            Candle(
                instrument_key="NSE_FO|12345",
                interval_s=60,
                start_ms=1766999940000,
                open_paise=10100,
                high_paise=10130,
                low_paise=10090,
                close_paise=10125,
                volume=1500,
            ),
        ),
    )


@pytest.mark.parametrize(
    ("hex_frame", "json_view"),
    [
        (
            HEX_LTPC_LIVE,
            {
                "type": "live_feed",
                "feeds": {
                    "NSE_EQ|INE002A01018": {
                        "ltpc": {"ltp": 1401.5, "ltt": "1767000000123", "ltq": "10", "cp": 1390.0}
                    }
                },
                "currentTs": "1767000000500",
            },
        ),
        (
            HEX_INITIAL,
            {
                "feeds": {"NSE_FO|12345": {"ltpc": {"ltp": 101.25, "cp": 99.0}}},
                "currentTs": "1767000000001",
            },
        ),
    ],
)
def test_schema_names_match_the_documented_json_view(
    hex_frame: str, json_view: dict[str, Any]
) -> None:
    msg = pb.FeedResponse.FromString(bytes.fromhex(hex_frame))

    assert json_format.MessageToDict(msg) == json_view
    assert msg.SerializeToString().hex() == hex_frame


def test_example_index_full_frame_gives_ltpc_tick_without_depth() -> None:
    frame = decode_frame(_from_json(JSON_INDEX_FULL))

    assert frame.ticks == [
        _tick(
            instrument_key="NSE_INDEX|Nifty 50",
            ts_ms=1767000000900,
            ltp_paise=2450050,
            close_paise=2440000,
        )
    ]
    quote = frame.quote("NSE_INDEX|Nifty 50")
    assert quote is not None
    assert quote.depth is None
    assert quote.atp_paise is None
    assert quote.candles == ()


def test_example_option_greeks_frame_gives_best_quote_greeks_oi_and_iv() -> None:
    frame = decode_frame(_from_json(JSON_OPTION_GREEKS))

    assert frame.ticks == [
        _tick(
            instrument_key="NSE_FO|54321",
            ts_ms=1767000001000,
            ltp_paise=5550,
            volume=100000,
            bid_paise=5540,
            ask_paise=5560,
            bid_qty=75,
            ask_qty=150,
            oi=250000,
            iv=0.152,
            delta=0.45,
            theta=-12.3,
            gamma=0.0012,
            vega=8.1,
            rho=1.2,
        )
    ]
    assert frame.mode("NSE_FO|54321") is FeedMode.OPTION_GREEKS
    assert frame.quote("NSE_FO|54321") == FullQuote(
        instrument_key="NSE_FO|54321",
        mode=FeedMode.OPTION_GREEKS,
        depth=MarketDepth(
            bids=(DepthLevel(price_paise=5540, quantity=75),),
            asks=(DepthLevel(price_paise=5560, quantity=150),),
        ),
    )


# --- every field, frames built with the generated classes ---------------------------------------


def _full_market_frame(levels: int, mode: int) -> bytes:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=1767000002000)
    feed = msg.feeds["NSE_FO|777"]
    feed.requestMode = mode
    m = feed.fullFeed.marketFF
    m.ltpc.ltp, m.ltpc.ltt, m.ltpc.ltq, m.ltpc.cp = 250.35, 1767000001900, 75, 245.1
    m.ltpc.iep.value = 250.3
    for i in range(levels):
        # level 3 has no bid (thin book): the bid side must skip it, the ask side keep it
        bid_p, bid_q = (0.0, 0) if i == 3 else (250.3 - 0.05 * i, 100 + i)
        m.marketLevel.bidAskQuote.add(bidQ=bid_q, bidP=bid_p, askQ=200 + i, askP=250.4 + 0.05 * i)
    g = m.optionGreeks
    g.delta, g.theta, g.gamma, g.vega, g.rho = 0.55, -9.75, 0.0021, 11.5, 3.25
    for interval, ts in (("1d", 1766946600000), ("I1", 1767001860000), ("I30", 1767000600000)):
        m.marketOHLC.ohlc.add(
            interval=interval, open=248.0, high=251.0, low=247.5, close=250.35, vol=9000, ts=ts
        )
    m.marketOHLC.ohlc.add(interval="W1", open=1.0, high=1.0, low=1.0, close=1.0, vol=1, ts=1)
    m.atp, m.vtt, m.oi, m.iv, m.tbq, m.tsq = 249.875, 9000, 1234500.0, 0.1685, 45000.0, 38000.0
    m.iep, m.rp, m.ieq, m.iiqTotal, m.iiqM, m.casEligible = 250.25, 249.95, 600, 150, 25, True
    return bytes(msg.SerializeToString())


def test_every_market_full_feed_field_is_decoded() -> None:
    frame = decode_frame(_full_market_frame(levels=5, mode=pb.full_d5))

    assert frame.ticks == [
        _tick(
            instrument_key="NSE_FO|777",
            ts_ms=1767000001900,
            ltp_paise=25035,
            ltq=75,
            volume=9000,
            close_paise=24510,
            bid_paise=25030,
            ask_paise=25040,
            bid_qty=100,
            ask_qty=200,
            oi=1234500,
            iv=0.1685,
            delta=0.55,
            theta=-9.75,
            gamma=0.0021,
            vega=11.5,
            rho=3.25,
        )
    ]
    quote = frame.quote("NSE_FO|777")
    assert quote is not None
    assert quote.mode is FeedMode.FULL
    assert (quote.atp_paise, quote.tbq, quote.tsq) == (24988, 45000, 38000)  # 249.875 half up
    assert quote.iep_paise == 25030  # the LTPC wrapper wins over the plain field
    assert quote.reference_price_paise == 24995
    assert (quote.ieq, quote.iiq_total, quote.iiq_market, quote.cas_eligible) == (
        600,
        150,
        25,
        True,
    )
    assert quote.depth is not None
    assert [lvl.price_paise for lvl in quote.depth.bids] == [25030, 25025, 25020, 25010]
    assert [lvl.quantity for lvl in quote.depth.bids] == [100, 101, 102, 104]
    assert [lvl.price_paise for lvl in quote.depth.asks] == [25040, 25045, 25050, 25055, 25060]
    assert [lvl.quantity for lvl in quote.depth.asks] == [200, 201, 202, 203, 204]
    assert [(c.interval_s, c.start_ms) for c in quote.candles] == [
        (86_400, 1766946600000),
        (60, 1767001860000),
        (1_800, 1767000600000),
    ]  # the unknown "W1" interval is skipped
    first = quote.candles[0]
    assert (first.open_paise, first.high_paise, first.low_paise, first.close_paise) == (
        24800,
        25100,
        24750,
        25035,
    )
    assert first.volume == 9000
    assert first.instrument_key == "NSE_FO|777"


def test_full_d30_frame_keeps_all_thirty_levels_and_mode() -> None:
    frame = decode_frame(_full_market_frame(levels=30, mode=pb.full_d30))

    quote = frame.quote("NSE_FO|777")
    assert quote is not None
    assert quote.mode is FeedMode.FULL_D30
    assert quote.depth is not None
    assert len(quote.depth.asks) == 30
    assert len(quote.depth.bids) == 29
    assert quote.depth.asks[-1] == DepthLevel(price_paise=to_paise(250.4 + 0.05 * 29), quantity=229)
    assert frame.ticks[0].bid_paise == 25030


def test_full_feed_without_greeks_or_iv_leaves_them_none() -> None:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    feed = msg.feeds["NSE_EQ|INE002A01018"]
    feed.requestMode = pb.full_d5
    m = feed.fullFeed.marketFF
    m.ltpc.ltp, m.ltpc.ltt, m.ltpc.cp = 1401.5, 4, 1390.0
    m.vtt = 10

    (tick,) = decode_frame(msg.SerializeToString()).ticks

    assert tick.iv is None
    assert (tick.delta, tick.gamma, tick.theta, tick.vega, tick.rho) == (None,) * 5
    assert (tick.bid_paise, tick.ask_paise, tick.bid_qty, tick.ask_qty) == (None,) * 4
    assert tick.oi == 0
    assert tick.volume == 10


def test_ltpc_iep_wrapper_is_decoded_and_absent_means_none() -> None:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    msg.feeds["A"].ltpc.ltp = 10.0
    msg.feeds["A"].firstLevelWithGreeks.ltpc.ltp = 10.0  # replaces the ltpc member (oneof)
    msg.feeds["A"].firstLevelWithGreeks.ltpc.iep.value = 10.05
    msg.feeds["B"].fullFeed.indexFF.ltpc.ltp = 20.0

    frame = decode_frame(msg.SerializeToString())

    quote_a = frame.quote("A")
    quote_b = frame.quote("B")
    assert quote_a is not None
    assert quote_b is not None
    assert quote_a.iep_paise == 1005
    assert quote_b.iep_paise is None
    assert quote_a.depth is None  # no firstDepth sent


def test_market_info_with_auction_and_pre_open_maps_and_unknown_status() -> None:
    msg = pb.FeedResponse(type=pb.market_info, currentTs=9)
    info = msg.marketInfo
    info.segmentStatus["NSE_EQ"] = pb.CLOSING_START
    info.segmentStatus["NSE_FO"] = pb.NORMAL_CLOSE
    info.segmentStatus["MCX_FO"] = 17  # a status added later
    info.casMarketStatus["NSE_EQ"].status = "CAS_LM_START"
    info.casMarketStatus["NSE_EQ"].updatedTime = 1767000000000
    info.preOpenSessionStatus["NSE_EQ"].status = "PRE_OPEN_END"
    info.preOpenSessionStatus["NSE_EQ"].updatedTime = 1766980000000

    frame = decode_frame(msg.SerializeToString())

    assert frame.market_info is not None
    assert frame.market_info.segment_status == {
        "NSE_EQ": MarketStatus.CLOSING_START,
        "NSE_FO": MarketStatus.NORMAL_CLOSE,
        "MCX_FO": MarketStatus.UNKNOWN,
    }
    assert frame.market_info.cas_status == {
        "NSE_EQ": StatusInfo(status="CAS_LM_START", updated_ms=1767000000000)
    }
    assert frame.market_info.pre_open_status == {
        "NSE_EQ": StatusInfo(status="PRE_OPEN_END", updated_ms=1766980000000)
    }


def test_several_instruments_in_one_frame_each_give_a_tick() -> None:
    msg = pb.FeedResponse(type=pb.live_feed, currentTs=1)
    for i, key in enumerate(("NSE_EQ|A", "NSE_EQ|B", "NSE_FO|C")):
        msg.feeds[key].ltpc.ltp = 10.0 + i
        msg.feeds[key].ltpc.ltt = 100 + i

    frame = decode_frame(msg.SerializeToString())

    assert {t.instrument_key: (t.ltp_paise, t.ts_ms) for t in frame.ticks} == {
        "NSE_EQ|A": (1000, 100),
        "NSE_EQ|B": (1100, 101),
        "NSE_FO|C": (1200, 102),
    }
    assert sorted(frame.instrument_keys) == ["NSE_EQ|A", "NSE_EQ|B", "NSE_FO|C"]


def test_instrument_without_last_price_gives_no_tick_but_is_listed() -> None:
    msg = pb.FeedResponse(type=pb.initial_feed, currentTs=1)
    msg.feeds["NSE_FO|1"].ltpc.cp = 12.5  # not traded yet today: ltp 0
    msg.feeds["NSE_FO|2"].fullFeed.marketFF.ltpc.cp = 3.0
    msg.feeds["NSE_FO|3"].firstLevelWithGreeks.ltpc.cp = 3.0
    msg.feeds["NSE_INDEX|X"].fullFeed.indexFF.ltpc.cp = 3.0

    frame = decode_frame(msg.SerializeToString())

    assert frame.ticks == []
    assert len(frame.instrument_keys) == 4


# --- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x12\xff\xff\xff\x0f\x0a\x01",  # length far beyond the frame
        b"\xff\xff\xff",  # invalid tag
        b"\x0a\x05abc",  # truncated
        bytes.fromhex(HEX_FULL)[:-3],  # cut inside the last varint
    ],
)
def test_malformed_bytes_raise_malformed_frame(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_frame(data)


def test_non_finite_price_raises_malformed_frame() -> None:
    msg = pb.FeedResponse(type=pb.live_feed)
    msg.feeds["K"].ltpc.ltp = math.nan

    with pytest.raises(MalformedFrame):
        decode_frame(msg.SerializeToString())


def test_unknown_type_gives_unknown_frame_without_ticks() -> None:
    msg = pb.FeedResponse(currentTs=3)
    msg.feeds["K"].ltpc.ltp = 1.0
    data = msg.SerializeToString() + b"\x08\x09"  # type 9

    frame = decode_frame(data)

    assert frame.type is FrameType.UNKNOWN
    assert frame.ticks == []


def test_unknown_fields_are_ignored() -> None:
    data = bytes.fromhex(HEX_LTPC_LIVE) + b"\xa8\x06\x2a"  # field 101, varint 42

    frame = decode_frame(data)

    assert [t.ltp_paise for t in frame.ticks] == [140150]


def test_empty_frame_is_an_initial_feed_without_ticks() -> None:
    frame = decode_frame(b"")

    assert frame.type is FrameType.INITIAL_FEED
    assert frame.ticks == []


# --- conversion ---------------------------------------------------------------------------------


@given(st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_infinity=False))
def test_to_paise_equals_the_domain_conversion(rupees: float) -> None:
    assert to_paise(rupees) == rupees_to_paise(rupees)


@pytest.mark.parametrize(
    ("rupees", "paise"),
    [(1.005, 101), (100.805, 10081), (0.285, 29), (2.675, 268), (101.2, 10120), (-1.005, -101)],
)
def test_to_paise_rounds_half_up_on_the_decimal_form(rupees: float, paise: int) -> None:
    assert to_paise(rupees) == paise


def test_to_paise_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not a price"):
        to_paise(math.nan)


def test_tick_field_order_is_what_the_fast_builder_writes() -> None:
    assert tuple(f.name for f in dataclasses.fields(Tick)) == _TICK_FIELDS


# --- JSON lines -----------------------------------------------------------------------------------


def test_tick_to_json_ltpc_has_only_the_ltpc_keys() -> None:
    (tick,) = decode_frame(bytes.fromhex(HEX_LTPC_LIVE)).ticks

    assert tick_to_json(tick) == {
        "instrument_key": "NSE_EQ|INE002A01018",
        "ltp": 1401.5,
        "ltt": 1767000000123,
        "ltq": 10,
        "cp": 1390.0,
    }


def test_tick_to_json_full_adds_volume_depth_and_extras() -> None:
    frame = decode_frame(bytes.fromhex(HEX_FULL))
    (tick,) = frame.ticks

    assert tick_to_json(tick, frame.quote(tick.instrument_key)) == {
        "instrument_key": "NSE_FO|12345",
        "ltp": 101.25,
        "ltt": 1767000000900,
        "ltq": 50,
        "cp": 99.0,
        "volume": 123450,
        "oi": 456000,
        "atp": 100.8,
        "tbq": 10000,
        "tsq": 12000,
        "bid": 101.2,
        "bid_qty": 500,
        "ask": 101.3,
        "ask_qty": 250,
    }


def test_tick_to_json_option_greeks_includes_iv_and_greeks() -> None:
    frame = decode_frame(_from_json(JSON_OPTION_GREEKS))
    (tick,) = frame.ticks

    out = tick_to_json(tick, frame.quote(tick.instrument_key))

    assert {k: out[k] for k in ("iv", "delta", "theta", "gamma", "vega", "rho")} == {
        "iv": 0.152,
        "delta": 0.45,
        "theta": -12.3,
        "gamma": 0.0012,
        "vega": 8.1,
        "rho": 1.2,
    }
    assert "atp" not in out  # option greeks mode carries no ATP


# --- subscription requests and sharding ---------------------------------------------------------


def test_request_bytes_are_the_documented_json() -> None:
    sub = json.loads(_request_bytes("sub", ["NSE_EQ|A", "NSE_INDEX|Nifty 50"], FeedMode.FULL))
    unsub = json.loads(_request_bytes("unsub", ["NSE_EQ|A"], None))

    assert set(sub) == {"guid", "method", "data"}
    assert sub["method"] == "sub"
    assert sub["data"] == {"mode": "full", "instrumentKeys": ["NSE_EQ|A", "NSE_INDEX|Nifty 50"]}
    assert unsub["data"] == {"instrumentKeys": ["NSE_EQ|A"]}
    assert sub["guid"] != unsub["guid"]


def _keys(n: int) -> list[str]:
    return [f"NSE_FO|{i}" for i in range(n)]


def test_plan_shards_at_the_full_mode_limit_uses_one_connection() -> None:
    shards = plan_shards(_keys(2000), FeedMode.FULL)

    assert len(shards) == 1
    assert len(shards[0]) == 2000


def test_plan_shards_one_over_the_user_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="2001 instruments in mode 'full' exceed"):
        plan_shards(_keys(2001), FeedMode.FULL)


def test_plan_shards_per_connection_limits_fill_every_connection_then_refuse() -> None:
    limits = dataclasses.replace(NORMAL_PLAN_LIMITS, per_user=False)

    shards = plan_shards(_keys(4000), FeedMode.FULL, limits)

    assert [len(s) for s in shards] == [2000, 2000]
    assert [k for s in shards for k in s] == _keys(4000)
    with pytest.raises(ConfigError, match="over 2 connections"):
        plan_shards(_keys(4001), FeedMode.FULL, limits)


def test_plan_shards_spreads_over_requested_connections_balanced() -> None:
    shards = plan_shards(_keys(7), FeedMode.LTPC, PLUS_PLAN_LIMITS, connections=3)

    assert [len(s) for s in shards] == [3, 2, 2]
    assert plan_shards(_keys(2), FeedMode.LTPC, PLUS_PLAN_LIMITS, connections=5) == [
        ["NSE_FO|0"],
        ["NSE_FO|1"],
    ]
    assert len(plan_shards(_keys(10), FeedMode.LTPC, NORMAL_PLAN_LIMITS, connections=9)) == 2


def test_plan_shards_drops_duplicates_and_handles_empty() -> None:
    assert plan_shards(["A", "B", "A"], FeedMode.LTPC) == [["A", "B"]]
    assert plan_shards([], FeedMode.LTPC) == []


def test_plan_shards_combined_caps_are_lower() -> None:
    assert len(plan_shards(_keys(1500), FeedMode.FULL, combined=True)[0]) == 1500
    with pytest.raises(ConfigError):
        plan_shards(_keys(1501), FeedMode.FULL, combined=True)


def test_full_d30_needs_the_plus_plan() -> None:
    with pytest.raises(ConfigError, match="not available"):
        plan_shards(_keys(1), FeedMode.FULL_D30)
    assert plan_shards(_keys(50), FeedMode.FULL_D30, PLUS_PLAN_LIMITS) == [_keys(50)]
    with pytest.raises(ConfigError):
        plan_shards(_keys(51), FeedMode.FULL_D30, PLUS_PLAN_LIMITS)


def test_limits_cap_reads_the_right_table() -> None:
    limits = FeedLimits(
        max_connections=1,
        keys_per_mode={FeedMode.LTPC: 3},
        combined_keys_per_mode={FeedMode.LTPC: 2},
    )

    assert limits.cap(FeedMode.LTPC) == 3
    assert limits.cap(FeedMode.LTPC, combined=True) == 2


# --- backoff --------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_within_jitter_and_is_capped() -> None:
    backoff = Backoff(initial_s=0.5, max_s=8.0, jitter=0.2)
    rng = random.Random(1)

    for attempt, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (99, 8.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(50)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len(set(delays)) > 1  # jittered
