"""/api/v1/ws: authentication, subscriptions, symbol filters, and dropping a slow client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.waiting import wait_until
from tests.unit.api.conftest import Keys
from tests.unit.api.served import serve
from upstox_bot.api.app import create_app
from upstox_bot.config import Settings
from upstox_bot.domain import Tick
from upstox_bot.live_events import EventHub, tick_payload


def _tick(key: str, ltp_paise: int) -> dict[str, Any]:
    return tick_payload(Tick(instrument_key=key, ts_ms=1_764_000_000_000, ltp_paise=ltp_paise))


def _auth(ws: Any, key: str) -> dict[str, Any]:
    ws.send_json({"action": "auth", "key": key})
    reply: dict[str, Any] = ws.receive_json()
    return reply


def test_a_key_in_the_header_or_the_first_message_opens_the_stream(
    settings: Settings, keys: Keys
) -> None:
    client = TestClient(create_app(settings))
    with client.websocket_connect("/api/v1/ws", headers={"X-API-Key": keys.read}) as ws:
        ws.send_json({"action": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    with client.websocket_connect("/api/v1/ws") as ws:
        assert _auth(ws, keys.trade) == {
            "type": "authenticated",
            "key": {"name": "trader", "scope": "trade"},
        }
        ws.send_json({"action": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_connecting_without_a_valid_key_is_refused(settings: Settings, keys: Keys) -> None:
    client = TestClient(create_app(settings))
    for bad in ("nope", keys.revoked):
        with (
            pytest.raises(WebSocketDisconnect) as info,
            client.websocket_connect("/api/v1/ws", headers={"X-API-Key": bad}),
        ):
            pass
        assert info.value.code == 1008
        with client.websocket_connect("/api/v1/ws") as ws:
            ws.send_json({"action": "auth", "key": bad})
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_json()
            assert info.value.code == 1008
    for first in ({"action": "subscribe", "channels": ["orders"]}, {"action": "auth"}):
        with client.websocket_connect("/api/v1/ws") as ws:
            ws.send_json(first)  # anything but the key first: refused
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_json()
            assert (info.value.code, info.value.reason) == (
                1008,
                'send {"action": "auth", "key": "<API key>"} first',
            )


def test_a_key_in_the_url_is_refused_even_when_valid(settings: Settings, keys: Keys) -> None:
    client = TestClient(create_app(settings))
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect(f"/api/v1/ws?api_key={keys.trade}"),
    ):
        pass
    assert info.value.code == 1008
    assert "never put the API key in the URL" in info.value.reason


def test_positions_and_account_snapshots_stream_to_a_subscriber(
    client: TestClient, keys: Keys
) -> None:
    stored = client.get("/api/v1/positions").json()
    with client.websocket_connect("/api/v1/ws", headers={"X-API-Key": keys.read}) as ws:
        ws.send_json({"action": "subscribe", "channels": ["positions", "account"]})
        assert ws.receive_json() == {
            "type": "subscribed",
            "channels": ["account", "positions"],
            "symbols": [],
        }
        got: dict[str, Any] = {}
        while len(got) < 2:
            message = ws.receive_json()
            got[message["channel"]] = message["data"]
    assert got["positions"]["positions"] == stored
    assert got["account"]["open_positions"] == len(stored)


def test_ticks_reach_only_the_chosen_symbols_and_errors_are_answered(
    client: TestClient, keys: Keys
) -> None:
    hub: EventHub = client.app.state.hub  # type: ignore[attr-defined]
    url = "/api/v1/ws?channels=ticks&symbols=NSE_EQ|A"
    with client.websocket_connect(url, headers={"X-API-Key": keys.read}) as ws:
        assert ws.receive_json()["symbols"] == ["NSE_EQ|A"]
        ws.send_json({"action": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        hub.publish_threadsafe("ticks", _tick("NSE_EQ|B", 100))
        hub.publish_threadsafe("ticks", _tick("NSE_EQ|A", 12345))
        message = ws.receive_json()
        assert message["channel"] == "ticks"
        assert message["data"]["instrument_key"] == "NSE_EQ|A"
        assert message["data"]["ltp"] == "123.45"
        ws.send_json({"action": "subscribe", "channels": ["nope"]})
        assert ws.receive_json()["type"] == "error"
        ws.send_text("not json")
        assert ws.receive_json() == {"type": "error", "detail": "send a JSON object"}
        ws.send_json({"action": "unsubscribe", "channels": ["ticks"]})
        assert ws.receive_json()["channels"] == []
        assert not hub.has_subscribers("ticks")


def test_hub_drops_a_full_subscriber_and_keeps_serving_the_others() -> None:
    import asyncio

    async def scenario() -> tuple[int, int, bool, int]:
        hub = EventHub(queue_size=4)
        slow, fast = hub.subscribe(), hub.subscribe()
        slow.channels.add("orders")
        fast.channels.add("orders")
        received = 0
        for n in range(10):
            hub.publish("orders", {"n": n})
            while not fast.queue.empty():
                fast.queue.get_nowait()
                received += 1
        return received, hub.dropped, slow.dropped.is_set(), hub.subscriber_count

    received, dropped, slow_dropped, left = asyncio.run(scenario())
    assert received == 10
    assert (dropped, slow_dropped, left) == (1, True, 1)


# --- a real server: a client that stops reading is dropped, the other keeps receiving --------


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, EventHub]]:
    hub = EventHub(queue_size=8)
    with serve(settings, create_app(settings, hub=hub)) as base_url:
        yield base_url.replace("http://", "ws://") + "/api/v1/ws", hub


def test_a_slow_client_is_dropped_while_a_fast_one_keeps_receiving(
    served: tuple[str, EventHub], keys: Keys
) -> None:
    url, hub = served
    count, payload = 300, "x" * 65_536
    # A small receive buffer stands for a client on a slow link (loopback buffers are large).
    slow_socket = socket.socket()
    slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)
    slow_socket.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
    with (
        connect(
            f"{url}?channels=orders",
            additional_headers={"X-API-Key": keys.read},
            sock=slow_socket,
            max_queue=4,
            compression=None,
        ) as slow,
        connect(
            f"{url}?channels=orders",
            additional_headers={"X-API-Key": keys.read},
            max_size=None,
            compression=None,
        ) as fast,
    ):
        assert json.loads(slow.recv(timeout=5))["type"] == "subscribed"
        assert json.loads(fast.recv(timeout=5))["type"] == "subscribed"
        got: list[int] = []

        def read_fast() -> None:
            while len(got) < count:
                got.append(json.loads(fast.recv(timeout=10))["data"]["n"])

        published = 0

        def fast_keeps_up() -> bool:
            # A few events ahead at most, inside the fast client's queue of 8: however busy the
            # machine, the slow client falls behind and the fast one never does.
            return len(got) >= published - 4

        reader = threading.Thread(target=read_fast)
        reader.start()
        for n in range(count):  # about 20 MB for each client
            wait_until(fast_keeps_up, what="the fast client to keep up", every_s=0.002)
            hub.publish_threadsafe("orders", {"n": n, "pad": payload})
            published += 1
        reader.join(timeout=30)

        assert got == list(range(count))
        assert hub.dropped == 1

        def drain_slow() -> None:
            while True:
                slow.recv(timeout=10)

        with pytest.raises(ConnectionClosed) as info:
            drain_slow()
        assert info.value.rcvd is None or info.value.rcvd.code == 1013


junk_messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=10,
    ).map(lambda value: json.dumps(value)),
    st.fixed_dictionaries(
        {"action": st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "nope", None])},
        optional={
            "key": st.one_of(st.text(max_size=60), st.integers(), st.none()),
            "channels": st.one_of(st.lists(st.text(max_size=10), max_size=3), st.text()),
            "symbols": st.one_of(st.lists(st.text(max_size=10), max_size=3), st.integers()),
        },
    ).map(json.dumps),
)


def test_junk_on_the_stream_is_answered_or_refused_never_a_crash(
    settings: Settings, keys: Keys
) -> None:
    client = TestClient(create_app(settings))

    @hyp_settings(max_examples=150, derandomize=True, database=None)
    @given(first=junk_messages, later=st.lists(junk_messages, max_size=4))
    def exchange(first: str | bytes, later: list[str | bytes]) -> None:
        with client.websocket_connect("/api/v1/ws") as ws:  # no key yet: junk first
            if isinstance(first, bytes):
                ws.send_bytes(first)
            else:
                ws.send_text(first)
            with pytest.raises(WebSocketDisconnect) as closed:  # junk holds no valid key
                ws.receive_json()
            assert closed.value.code == 1008
        with client.websocket_connect("/api/v1/ws", headers={"X-API-Key": keys.read}) as ws:
            for message in later:
                if isinstance(message, bytes):
                    ws.send_bytes(message)
                else:
                    ws.send_text(message)
                reply = ws.receive_json()
                assert reply["type"] in ("error", "pong", "subscribed"), reply
            ws.send_json({"action": "ping"})
            assert ws.receive_json() == {"type": "pong"}

    exchange()
