"""The portfolio stream client against the simulator: updates, reconnect, refused token."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from tests.support.waiting import wait_until_async, within
from upstox_bot.domain import OrderType, Side
from upstox_bot.upstox.client import OrderRequest, PlacementPolicy, UpstoxClient
from upstox_bot.upstox.models import OrderRecord, PositionRecord
from upstox_bot.upstox.portfolio_stream import PortfolioStreamClient, PortfolioUpdate
from upstox_bot.upstox.websocket import Backoff

SBIN = "NSE_EQ|INE062A01020"

sim = pytest.fixture(upstox_simulator)


async def test_order_and_position_updates_follow_the_order_book(sim: UpstoxSimulator) -> None:
    token = sim.rest.issue_token()
    updates: list[PortfolioUpdate] = []
    stream = PortfolioStreamClient(
        api_base_url=sim.base_url, access_token=lambda: token, on_update=updates.append
    )
    async with (
        stream,
        UpstoxClient(
            access_token=lambda: token,
            api_base_url=sim.base_url,
            placement=PlacementPolicy(settle_s=0.05),
        ) as client,
    ):
        await within(stream.wait_connected(), what="the stream to connect")
        await client.place_order(
            OrderRequest(
                instrument_token=SBIN,
                quantity=10,
                side=Side.BUY,
                tag="ub-stream-1",
                order_type=OrderType.LIMIT,
                price_paise=79_000,
            )
        )
        await wait_until_async(
            lambda: any(getattr(u, "status", "") == "open" for u in updates),
            what="the open order's update",
        )
        sim.rest.set_price(SBIN, Decimal("789.00"))
        await wait_until_async(
            lambda: any(isinstance(u, PositionRecord) for u in updates),
            what="the position's update",
        )

    orders = [u for u in updates if isinstance(u, OrderRecord)]
    assert [o.status for o in orders] == [
        "put order req received",
        "validation pending",
        "open pending",
        "open",
        "complete",
    ]
    assert {o.tag for o in orders} == {"ub-stream-1"}
    assert (orders[-1].filled_quantity, orders[-1].average_price_paise) == (10, 78_900)
    (position,) = [u for u in updates if isinstance(u, PositionRecord)]
    assert (position.instrument_token, position.quantity) == (SBIN, 10)
    assert stream.malformed == 0


async def test_dropped_stream_reconnects_and_runs_on_connect_again(sim: UpstoxSimulator) -> None:
    token = sim.rest.issue_token()
    connects = 0

    def on_connect() -> None:
        nonlocal connects
        connects += 1

    stream = PortfolioStreamClient(
        api_base_url=sim.base_url,
        access_token=lambda: token,
        on_update=lambda _u: None,
        on_connect=on_connect,
        backoff=Backoff(initial_s=0.05, max_s=0.2),
    )
    async with stream:
        await wait_until_async(lambda: connects == 1, what="the first connection")
        sim.portfolio.send_raw("{not json")
        await wait_until_async(lambda: stream.malformed == 1, what="the malformed message")
        assert sim.portfolio.drop_connections() == 1
        await wait_until_async(lambda: connects == 2, what="the reconnection")
        assert stream.connected
    assert sim.portfolio.authorize_calls == 2  # a fresh single-use URI per connection


async def test_refused_token_stops_the_stream_and_says_so(sim: UpstoxSimulator) -> None:
    refused: list[bool] = []
    stream = PortfolioStreamClient(
        api_base_url=sim.base_url,
        access_token=lambda: "revoked-token",
        on_update=lambda _u: None,
        on_unauthorized=lambda: refused.append(True),
        backoff=Backoff(initial_s=0.05, max_s=0.1),
    )
    async with stream:
        await wait_until_async(lambda: not stream.running, what="the stream to stop")
    assert refused == [True]
    assert stream.error is not None
    assert sim.portfolio.authorize_refusals == 1
