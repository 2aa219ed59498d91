"""MarketDataFeedV3Client against the feed simulator over a real websocket on 127.0.0.1."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from tests.support.upstox_sim.feed import (
    DEFAULT_TOKEN,
    FeedSimulator,
    get_feed_sim,
    router,
    serve_app,
)
from tests.support.waiting import wait_until_async, within
from upstox_bot.domain import Tick
from upstox_bot.errors import ConfigError
from upstox_bot.upstox.feed_protocol import DecodedFrame, FeedMode, FrameType
from upstox_bot.upstox.market_feed import MarketDataFeedV3Client, stream_jsonl
from upstox_bot.upstox.websocket import Backoff, FeedUnauthorized

RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"
OPTION = "NSE_FO|54321"
# 11:00 IST on a Monday, and 20:00 IST the same day
IN_SESSION = datetime(2026, 1, 5, 5, 30, tzinfo=UTC)
AFTER_HOURS = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, FastAPI]]:
    app = FastAPI()
    app.include_router(router)
    base_url, stop = serve_app(app)
    yield base_url, app
    stop()


@pytest.fixture
def sim(served: tuple[str, FastAPI]) -> FeedSimulator:
    _, app = served
    app.state.feed_sim = FeedSimulator()
    return get_feed_sim(app)


@pytest.fixture
async def make_client(
    served: tuple[str, FastAPI],
) -> AsyncIterator[Callable[..., MarketDataFeedV3Client]]:
    base_url, _ = served
    clients: list[MarketDataFeedV3Client] = []

    def make(**overrides: Any) -> MarketDataFeedV3Client:
        now = overrides.pop("now", IN_SESSION)
        options: dict[str, Any] = {
            "api_base_url": base_url,
            "access_token": DEFAULT_TOKEN,
            "clock": lambda: now,
            "is_market_open": lambda at: 3 <= at.hour < 10,  # 09:15-15:30 IST, roughly, in UTC
            "silence_timeout_s": 5.0,
            "backoff": Backoff(initial_s=0.05, max_s=0.2, jitter=0.1),
            "open_timeout_s": 3.0,
        }
        options.update(overrides)
        client = MarketDataFeedV3Client(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:  # a failing test may leave one running
        await client.close()


async def next_frame(frames: AsyncIterator[DecodedFrame]) -> DecodedFrame:
    return await within(anext(frames), what="the next frame")


async def ticks_until(frames: AsyncIterator[DecodedFrame], count: int) -> list[Tick]:
    """The live ticks of the next frames, until `count` (a client that reconnects over and over
    sends info and snapshot frames without end: the whole wait is bounded, not each frame)."""

    async def collect() -> list[Tick]:
        ticks: list[Tick] = []
        async for frame in frames:
            if frame.type is FrameType.LIVE_FEED:
                ticks.extend(frame.ticks)
            if len(ticks) >= count:
                break
        return ticks

    return await within(collect(), what=f"{count} live ticks")


async def test_subscribe_sends_binary_json_request_and_receives_info_snapshot_and_ticks(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    async with make_client() as client:
        await client.subscribe([RELIANCE, NIFTY], FeedMode.FULL)
        frames = client.frames()

        info = await next_frame(frames)
        snapshot = await next_frame(frames)
        sim.push_ticks(RELIANCE, [101.5, 102.0])
        live = await ticks_until(frames, 2)

    assert info.type is FrameType.MARKET_INFO
    assert client.market_status["NSE_EQ"].value == "normal_open"
    assert snapshot.type is FrameType.INITIAL_FEED
    assert {t.instrument_key for t in snapshot.ticks} == {RELIANCE, NIFTY}
    assert [t.ltp_paise for t in live] == [10150, 10200]
    assert [t.volume for t in live] == [1, 2]
    assert live[0].bid_paise == 10145  # depth came with the full mode
    (request,) = sim.requests
    assert request.binary is True
    assert request.accepted is True
    assert request.message is not None
    assert set(request.message) == {"guid", "method", "data"}
    assert request.message["method"] == "sub"
    assert request.message["data"] == {"mode": "full", "instrumentKeys": [RELIANCE, NIFTY]}
    assert client.ticks_received == 4
    assert client.frames_received == 4
    assert sim.active_connections == 0  # close() closed it


async def test_unsubscribe_and_change_mode_at_runtime(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    async with make_client() as client:
        await client.subscribe([RELIANCE, OPTION], FeedMode.LTPC)
        await client.wait_connected()
        await wait_until_async(lambda: len(sim.requests) == 1, what="the subscription")
        await client.change_mode([OPTION], FeedMode.OPTION_GREEKS)
        await client.unsubscribe([RELIANCE])
        await wait_until_async(lambda: len(sim.requests) == 3, what="the two changes")
        sim.set_instrument(OPTION, greeks=(0.5, -3.0, 0.01, 6.0, 0.7), iv=0.2)
        frames = client.frames()
        sim.push_prices({RELIANCE: 1500.0, OPTION: 55.5})
        live = await ticks_until(frames, 1)

    methods = [(r.message or {}).get("method") for r in sim.requests]
    assert methods == ["sub", "change_mode", "unsub"]
    assert sim.requests[1].message is not None
    assert sim.requests[1].message["data"] == {"mode": "option_greeks", "instrumentKeys": [OPTION]}
    assert sim.requests[2].message is not None
    assert sim.requests[2].message["data"] == {"instrumentKeys": [RELIANCE]}
    assert [t.instrument_key for t in live] == [OPTION]
    assert live[0].delta == 0.5
    assert live[0].iv == 0.2
    assert client.subscriptions == {OPTION: FeedMode.OPTION_GREEKS}


async def test_dropped_connection_is_reauthorized_resubscribed_and_loses_no_later_tick(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    async with make_client() as client:
        await client.subscribe([RELIANCE], FeedMode.LTPC)
        frames = client.frames()
        await next_frame(frames)  # market info
        await next_frame(frames)  # snapshot

        assert sim.drop_connections() == 1
        await wait_until_async(
            lambda: sim.active_connections == 1 and len(sim.requests) == 2,
            what="a new connection and its resubscription",
        )
        await wait_until_async(
            lambda: 1 in {len(m) for m in sim.subscribed().values()},
            what="the resubscription to reach the simulator",
        )
        prices = [100.0 + i * 0.05 for i in range(50)]
        sim.push_ticks(RELIANCE, prices)
        received = await ticks_until(frames, len(prices))

    assert sim.abrupt_drops == 1
    assert client.reconnects == 1
    assert client.connects == 2
    assert sim.authorize_calls == 2  # a fresh single-use URI for the new connection
    resubscription = sim.requests[1]
    assert resubscription.connection_id != sim.requests[0].connection_id
    assert resubscription.message is not None
    assert resubscription.message["method"] == "sub"
    assert resubscription.message["data"] == {"mode": "ltpc", "instrumentKeys": [RELIANCE]}
    assert [t.ltp_paise for t in received] == [round(p * 100) for p in prices]


async def test_silence_during_market_hours_replaces_the_connection(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    async with make_client(silence_timeout_s=0.3) as client:
        await client.subscribe([RELIANCE], FeedMode.LTPC)
        frames = client.frames()
        await next_frame(frames)
        await next_frame(frames)
        sim.go_silent(10.0)

        await wait_until_async(
            lambda: client.silence_reconnects == 1 and client.connects == 2,
            what="the silent connection to be replaced",
        )
        # The new connection's subscription reached the simulator: a tick pushed before would
        # go nowhere.
        await wait_until_async(
            lambda: (
                sim.active_connections == 1 and 1 in {len(m) for m in sim.subscribed().values()}
            ),
            what="the new connection's subscription",
        )
        sim.push_ticks(RELIANCE, [123.45])
        received = await ticks_until(frames, 1)

    assert sim.authorize_calls == 2
    assert [t.ltp_paise for t in received] == [12345]


async def test_silence_outside_market_hours_keeps_the_connection(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    asked: list[datetime] = []  # the client asks at each silence timeout

    def market_open(at: datetime) -> bool:
        asked.append(at)
        return False

    async with make_client(
        silence_timeout_s=0.2, now=AFTER_HOURS, is_market_open=market_open
    ) as client:
        await client.subscribe([RELIANCE], FeedMode.LTPC)
        frames = client.frames()
        await next_frame(frames)
        await next_frame(frames)
        sim.go_silent(1.0)

        await wait_until_async(
            lambda: len(asked) >= 5 and not sim.silent,
            what="five silence timeouts after hours, and the silence over",
        )
        sim.push_ticks(RELIANCE, [99.5])
        received = await ticks_until(frames, 1)

    assert client.silence_reconnects == 0
    assert client.reconnects == 0
    assert client.connects == 1
    assert sim.authorize_calls == 1
    assert [t.ltp_paise for t in received] == [9950]


async def test_malformed_and_unknown_frames_are_counted_and_skipped(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    async with make_client() as client:
        await client.subscribe([RELIANCE], FeedMode.LTPC)
        frames = client.frames()
        await next_frame(frames)
        await next_frame(frames)

        sim.send_malformed()
        sim.send_unknown()
        sim.push_ticks(RELIANCE, [101.0])
        received = await ticks_until(frames, 1)

    assert [t.ltp_paise for t in received] == [10100]
    assert client.malformed_frames == 1
    assert client.unknown_frames == 1
    assert client.connects == 1
    assert client.reconnects == 0


async def test_refused_token_stops_the_client_without_retrying(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    sim.accepted_tokens.clear()
    client = make_client()
    await client.start()
    try:
        with pytest.raises(FeedUnauthorized, match="UDAPI100050"):
            await within(anext(client.frames()), what="the client to stop")
    finally:
        await client.close()

    assert sim.authorize_calls == 1
    assert sim.authorize_refusals == 1
    assert client.connects == 0


async def test_a_refused_token_waits_for_the_next_login_and_resumes_by_itself(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    # The failure: a stale token at start, then a login, gave 0 ticks for good.
    sim.accepted_tokens = {"stale"}
    token = {"value": "stale"}
    refused: list[str] = []
    sim.set_instrument(RELIANCE, ltp=1400.0)
    client = make_client(
        access_token=lambda: token["value"],
        resume_on_new_token=True,
        on_unauthorized=refused.append,
        token_check_s=0.05,
    )
    await client.subscribe([RELIANCE], FeedMode.LTPC)
    await client.start()
    frames = client.frames()
    try:
        await client.wait_connected()
        sim.accepted_tokens.clear()  # revoked mid-day: the connection closes
        sim.close_for_revocation()
        await wait_until_async(lambda: client.unauthorized == 1, what="the refusal")
        assert refused == ["stale"]  # reported with the token it refused
        assert not client.connected

        sim.accepted_tokens.add("fresh")
        token["value"] = "fresh"  # the next login

        await wait_until_async(
            lambda: client.connected and client.resumed == 1, what="the client to resume"
        )
        await wait_until_async(
            lambda: sim.push_ticks(RELIANCE, [1401.0]) > 0, what="a subscribed connection"
        )
        (tick,) = await ticks_until(frames, 1)
        assert tick.ltp_paise == 140_100
    finally:
        await client.close()
    assert client.error is None  # never stopped


async def test_connections_and_keys_beyond_the_plan_limits_get_nothing(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    # API.md 3.4: two connections per user on the normal plan, a cap of keys per mode.
    sim.scenario.max_feed_keys_per_mode = 1
    first, second, third = make_client(), make_client(), make_client()
    await first.subscribe([RELIANCE], FeedMode.LTPC)
    await second.subscribe([NIFTY], FeedMode.LTPC)  # over the key cap: no data
    for client in (first, second, third):
        await client.start()
    await first.wait_connected()
    await second.wait_connected()
    # The simulator counts the refused keys when it reads the subscription, after the client
    # sent it: wait for that too.
    await wait_until_async(
        lambda: (
            sim.over_limit_handshakes >= 1 and third.reconnects >= 1 and sim.keys_over_limit >= 1
        ),
        what="the third connection and the key over the cap to be refused",
    )

    assert not third.connected  # refused: the user's connections are all in use
    assert sim.active_connections == 2
    assert sim.keys_over_limit == 1
    assert [keys for keys in sim.subscribed().values() if keys] == [{RELIANCE: "ltpc"}]


async def test_a_feed_uri_works_once(sim: FeedSimulator, served: tuple[str, FastAPI]) -> None:
    import httpx
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    base_url, _ = served
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            base_url + "/v3/feed/market-data-feed/authorize",
            headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
        )
    uri = answer.json()["data"]["authorized_redirect_uri"]
    async with connect(uri, proxy=None):
        pass
    with pytest.raises(InvalidStatus):  # API.md 3.1: the code in the URI is single-use
        async with connect(uri, proxy=None):
            pass
    assert sim.rejected_handshakes == 1


async def test_callback_receives_frames_and_its_errors_do_not_stop_the_feed(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    seen: list[DecodedFrame] = []

    async def on_frame(frame: DecodedFrame) -> None:
        seen.append(frame)
        if frame.type is FrameType.INITIAL_FEED:
            raise RuntimeError("a handler bug")

    async with make_client(on_frame=on_frame) as client:
        await client.subscribe([RELIANCE], FeedMode.LTPC)
        await wait_until_async(lambda: len(seen) == 2, what="the info and snapshot frames")
        sim.push_ticks(RELIANCE, [105.0])
        await wait_until_async(lambda: len(seen) == 3, what="the live frame")

    assert [f.type for f in seen] == [
        FrameType.MARKET_INFO,
        FrameType.INITIAL_FEED,
        FrameType.LIVE_FEED,
    ]
    assert client.handler_errors == 1


async def test_stream_jsonl_writes_one_flushed_line_per_tick_and_stops(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    out = io.StringIO()
    async with make_client() as client:
        await client.subscribe([RELIANCE], FeedMode.FULL)
        await client.wait_connected()
        await wait_until_async(lambda: len(sim.requests) == 1, what="the subscription")
        sim.push_ticks(RELIANCE, [101.0, 101.05, 101.1])
        written = await within(stream_jsonl(client, out, max_messages=3), what="three lines")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert written == 3
    assert len(lines) == 3
    assert lines[0]["instrument_key"] == RELIANCE
    assert lines[0]["ltp"] == 100.0  # the snapshot comes first
    assert [line["ltp"] for line in lines[1:]] == [101.0, 101.05]
    assert {"volume", "atp", "tbq", "tsq", "bid", "ask", "bid_qty", "ask_qty"} <= set(lines[1])


async def test_too_many_keys_for_one_connection_are_refused_before_sending(
    sim: FeedSimulator, make_client: Callable[..., MarketDataFeedV3Client]
) -> None:
    async with make_client() as client:
        with pytest.raises(ConfigError, match="per connection"):
            await client.subscribe([f"NSE_FO|{i}" for i in range(2001)], FeedMode.FULL)
        await client.wait_connected()

    assert client.subscriptions == {}
    assert sim.requests == []
