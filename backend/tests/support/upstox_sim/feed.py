"""Websocket half of the local Upstox simulator: Market Data Feed V3 authorize and protobuf stream.

`router` serves `GET /v3/feed/market-data-feed/authorize` (bearer token required, Upstox envelope,
single-use websocket URI built from the request's base URL) and the websocket that URI points to.
The state lives in a `FeedSimulator` at `app.state.feed_sim`. Tests drive it from their own thread
while uvicorn serves the app in another: every public method is thread-safe and hands frames to
the server's event loop.

On connect the simulator sends a `market_info` frame; each subscription request (a binary frame
of UTF-8 JSON) is recorded and answered with an `initial_feed` snapshot of the new keys in their
mode; `push_ticks` / `push_prices` then send `live_feed` frames to every connection subscribed to
the instrument, encoded in that connection's mode. Faults: `drop_connections`, `go_silent`,
`send_malformed`, `send_unknown`, and refusing tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from tests.support.waiting import wait_until
from upstox_bot.upstox.proto import MarketDataFeedV3_pb2 as pb

from .scenario import Scenario

AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"
WS_PATH = "/market-data-feeder/v3/upstox-developer-api/feeds"
DEFAULT_TOKEN = "sim-access-token"

_INDEX_SEGMENTS = ("NSE_INDEX|", "BSE_INDEX|", "MCX_INDEX|")
_REQUEST_MODES = {
    "ltpc": pb.ltpc,
    "full": pb.full_d5,
    "option_greeks": pb.option_greeks,
    "full_d30": pb.full_d30,
}
_DEFAULT_SEGMENT_STATUS: Mapping[str, int] = {
    "NSE_EQ": pb.NORMAL_OPEN,
    "NSE_FO": pb.NORMAL_OPEN,
    "NSE_INDEX": pb.NORMAL_OPEN,
    "BSE_EQ": pb.NORMAL_OPEN,
}


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


def _unauthorized_body() -> dict[str, object]:
    problem = {
        "errorCode": "UDAPI100050",
        "message": "Invalid token used to access API",
        "propertyPath": None,
        "invalidValue": None,
        "error_code": "UDAPI100050",
        "property_path": None,
        "invalid_value": None,
    }
    return {"status": "error", "errors": [problem]}


@dataclass(slots=True)
class SimInstrument:
    """Simulated market state of one instrument (rupee floats, as on the wire)."""

    instrument_key: str
    ltp: float = 100.0
    cp: float = 99.0  # previous close
    ltq: int = 0
    ltt_ms: int = 0
    vtt: int = 0  # volume today
    oi: float = 0.0
    iv: float = 0.0
    tick_size: float = 0.05
    depth_qty: int = 100
    greeks: tuple[float, float, float, float, float] | None = None  # delta theta gamma vega rho
    turnover: float = 0.0  # sum(price * qty), for the ATP

    @property
    def is_index(self) -> bool:
        return self.instrument_key.startswith(_INDEX_SEGMENTS)

    @property
    def atp(self) -> float:
        return round(self.turnover / self.vtt, 2) if self.vtt else self.ltp


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One client request as the server received it."""

    connection_id: int
    binary: bool  # False: a text frame (Upstox documents binary only; ignored)
    raw: bytes
    message: dict[str, Any] | None  # the parsed JSON, None when it is not a JSON object
    accepted: bool  # applied to the connection's subscriptions


@dataclass(eq=False)
class _Connection:
    connection_id: int
    websocket: WebSocket
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | str] = field(default_factory=asyncio.Queue)
    modes: dict[str, str] = field(default_factory=dict)  # key -> request mode string
    silent_until: float = 0.0  # time.monotonic(); frames due before it are swallowed

    def enqueue(self, item: bytes | str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


_ABORT = "abort"
_CLOSE_1011 = "close-1011"
_CLOSE_1008 = "close-1008"


class FeedSimulator:
    """Scripted Upstox Market Data Feed V3 server state, with fault injection."""

    def __init__(
        self,
        *,
        access_tokens: Iterable[str] = (DEFAULT_TOKEN,),
        clock_ms: Callable[[], int] = _wall_clock_ms,
        segment_status: Mapping[str, int] | None = None,
        seed: int = 7,
    ) -> None:
        self.scenario = Scenario.realistic()  # limits (API.md 3.4); shared with the REST half
        self.accepted_tokens: set[str] = set(access_tokens)
        self.segment_status: dict[str, int] = dict(segment_status or _DEFAULT_SEGMENT_STATUS)
        self.auto_tick_interval_s: float | None = None  # random-walk ticks for subscribed keys
        self._clock_ms = clock_ms
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._codes: set[str] = set()
        self._connections: dict[int, _Connection] = {}
        self._next_id = 1
        self.instruments: dict[str, SimInstrument] = {}
        # records
        self.authorize_calls = 0
        self.authorize_refusals = 0
        self.connections_opened = 0
        self.rejected_handshakes = 0
        self.over_limit_handshakes = 0  # refused: the user's connection limit was reached
        self.keys_over_limit = 0  # keys asked for beyond the per-user cap (no data for them)
        self.abrupt_drops = 0  # connections cut at the TCP level by drop_connections()
        self.frames_sent = 0
        self.frames_swallowed = 0  # suppressed by go_silent
        self.requests: list[SubscriptionRecord] = []

    # --- scenario set-up ----------------------------------------------------------------------

    def set_instrument(self, instrument_key: str, **values: Any) -> SimInstrument:
        """Create or update an instrument's state (fields of `SimInstrument`)."""
        with self._lock:
            inst = self._instrument(instrument_key)
            for name, value in values.items():
                setattr(inst, name, value)
            return inst

    def is_token_valid(self, token: str) -> bool:
        """Whether the bearer token is accepted; replace to share the REST half's token store."""
        return token in self.accepted_tokens

    # --- observation --------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def subscribed(self) -> dict[int, dict[str, str]]:
        """Per open connection id, its subscribed keys and their request modes."""
        with self._lock:
            return {cid: dict(c.modes) for cid, c in self._connections.items()}

    # --- pushing frames -----------------------------------------------------------------------

    def push(self, frame: bytes, *, connection_id: int | None = None) -> int:
        """Send raw frame bytes to every open connection (or one); returns frames queued."""
        with self._lock:
            targets = [
                c
                for c in self._connections.values()
                if connection_id is None or c.connection_id == connection_id
            ]
        for conn in targets:
            conn.enqueue(frame)
        return len(targets)

    def push_ticks(self, instrument_key: str, prices: Iterable[float], *, ltq: int = 1) -> int:
        """Trade the instrument at each price in turn, one live frame per trade.

        Returns:
            The number of frames queued (trades times subscribed connections).
        """
        sent = 0
        for price in prices:
            sent += self.push_prices({instrument_key: price}, ltq=ltq)
        return sent

    def push_prices(self, prices: Mapping[str, float], *, ltq: int = 1) -> int:
        """Trade several instruments once each and send them together in one live frame."""
        with self._lock:
            now = self._clock_ms()
            for key, price in prices.items():
                inst = self._instrument(key)
                inst.ltp = float(price)
                inst.ltq = ltq
                inst.ltt_ms = now
                inst.vtt += ltq
                inst.turnover += price * ltq
            frames = []
            for conn in self._connections.values():
                keys = [k for k in prices if k in conn.modes]
                if keys:
                    frames.append((conn, self._feed_frame(conn, keys, pb.live_feed, now)))
        for conn, frame in frames:
            conn.enqueue(frame)
        return len(frames)

    # --- faults -------------------------------------------------------------------------------

    def drop_connections(self, *, abrupt: bool = True) -> int:
        """Cut every open connection: abort the TCP connection (abrupt) or close with 1011."""
        with self._lock:
            targets = list(self._connections.values())
        for conn in targets:
            conn.enqueue(_ABORT if abrupt else _CLOSE_1011)
        return len(targets)

    def close_for_revocation(self) -> int:
        """The token was revoked: close every connection (API.md 1.2, 13; close code assumed
        1008, policy violation). Returns how many."""
        with self._lock:
            targets = list(self._connections.values())
        for conn in targets:
            conn.enqueue(_CLOSE_1008)
        return len(targets)

    def go_silent(self, seconds: float) -> None:
        """Keep the open connections open but send them nothing for `seconds`."""
        until = time.monotonic() + seconds
        with self._lock:
            for conn in self._connections.values():
                conn.silent_until = until

    @property
    def silent(self) -> bool:
        """Whether `go_silent` still holds back an open connection's frames."""
        now = time.monotonic()
        with self._lock:
            return any(conn.silent_until > now for conn in self._connections.values())

    def send_malformed(self) -> int:
        """Send bytes that are not a FeedResponse (a truncated length-delimited field)."""
        return self.push(b"\x12\xff\xff\xff\x0f\x0a\x01")

    def send_unknown(self) -> int:
        """Send a valid FeedResponse of an unknown type that also carries unknown fields."""
        known = pb.FeedResponse(currentTs=self._clock_ms())
        known.feeds["NSE_EQ|UNKNOWN"].ltpc.ltp = 1.0
        data = bytearray(known.SerializeToString())
        data += b"\x08\x09"  # type = 9: not in the schema
        data += b"\xa8\x06\x2a"  # field 101 (varint 42): not in the schema
        return self.push(bytes(data))

    # --- server side (called on the server's loop) ----------------------------------------------

    def _instrument(self, key: str) -> SimInstrument:
        inst = self.instruments.get(key)
        if inst is None:
            inst = SimInstrument(instrument_key=key, ltt_ms=self._clock_ms())
            if key.startswith(("NSE_FO|", "BSE_FO|")):
                inst.oi = 150_000.0
            self.instruments[key] = inst
        return inst

    def _issue_code(self) -> str:
        code = str(uuid.uuid4())
        with self._lock:
            self._codes.add(code)
        return code

    def _consume_code(self, code: str | None) -> bool:
        with self._lock:
            if code is None or code not in self._codes:
                return False
            self._codes.discard(code)
            return True

    def _room_for_connection(self) -> bool:
        # API.md 3.4: connections per user (one user here); what Upstox answers beyond the
        # limit is unconfirmed (3.8): assumed, the handshake is refused.
        with self._lock:
            if len(self._connections) < self.scenario.max_feed_connections:
                return True
            self.over_limit_handshakes += 1
            return False

    def _register(self, websocket: WebSocket) -> _Connection:
        with self._lock:
            conn = _Connection(self._next_id, websocket, asyncio.get_running_loop())
            self._next_id += 1
            self._connections[conn.connection_id] = conn
            self.connections_opened += 1
        return conn

    def _unregister(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.pop(conn.connection_id, None)

    def _market_info_frame(self) -> bytes:
        msg = pb.FeedResponse(type=pb.market_info, currentTs=self._clock_ms())
        for segment, status in self.segment_status.items():
            msg.marketInfo.segmentStatus[segment] = status
        return bytes(msg.SerializeToString())

    def _on_request(self, conn: _Connection, raw: bytes, binary: bool) -> None:
        message: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(raw.decode())
            if isinstance(parsed, dict):
                message = parsed
        accepted = binary and message is not None and self._apply(conn, message)
        with self._lock:
            self.requests.append(
                SubscriptionRecord(conn.connection_id, binary, raw, message, accepted)
            )

    def _apply(self, conn: _Connection, message: dict[str, Any]) -> bool:
        method = message.get("method")
        data = message.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("instrumentKeys"), list):
            return False
        keys = [k for k in data["instrumentKeys"] if isinstance(k, str)]
        mode = data.get("mode", "ltpc")
        with self._lock:
            if method == "unsub":
                for key in keys:
                    conn.modes.pop(key, None)
                return True
            if method not in ("sub", "change_mode") or mode not in _REQUEST_MODES:
                return False
            # Keys beyond the user's cap in a mode get no data (API.md 3.4; the effect of
            # going over is unconfirmed, 3.8 and 12: assumed silently dropped).
            cap = self.scenario.max_feed_keys_per_mode
            taken = {k for c in self._connections.values() for k, m in c.modes.items() if m == mode}
            for key in keys:
                if key not in taken and len(taken) >= cap:
                    self.keys_over_limit += 1
                    continue
                conn.modes[key] = mode
                taken.add(key)
            keys = [k for k in keys if k in conn.modes]
            snapshot = self._feed_frame(conn, keys, pb.initial_feed, self._clock_ms())
        conn.enqueue(snapshot)
        return True

    def _feed_frame(self, conn: _Connection, keys: list[str], frame_type: int, now: int) -> bytes:
        msg = pb.FeedResponse(type=frame_type, currentTs=now)  # type: ignore[arg-type]
        for key in keys:
            self._fill_feed(msg.feeds[key], self._instrument(key), conn.modes[key])
        return bytes(msg.SerializeToString())

    def _fill_feed(self, feed: Any, inst: SimInstrument, mode: str) -> None:
        feed.requestMode = _REQUEST_MODES[mode]
        if mode == "ltpc":
            self._fill_ltpc(feed.ltpc, inst)
            return
        if mode == "option_greeks":
            f = feed.firstLevelWithGreeks
            self._fill_ltpc(f.ltpc, inst)
            q = f.firstDepth
            q.bidP, q.bidQ = inst.ltp - inst.tick_size, inst.depth_qty
            q.askP, q.askQ = inst.ltp + inst.tick_size, inst.depth_qty
            if inst.greeks is not None:
                self._fill_greeks(f.optionGreeks, inst.greeks)
            f.vtt, f.oi, f.iv = inst.vtt, inst.oi, inst.iv
            return
        if inst.is_index:
            index = feed.fullFeed.indexFF
            self._fill_ltpc(index.ltpc, inst)
            self._fill_ohlc(index.marketOHLC, inst)
            return
        m = feed.fullFeed.marketFF
        self._fill_ltpc(m.ltpc, inst)
        for level in range(30 if mode == "full_d30" else 5):
            m.marketLevel.bidAskQuote.add(
                bidQ=inst.depth_qty + level,
                bidP=round(inst.ltp - inst.tick_size * (level + 1), 2),
                askQ=inst.depth_qty + 2 * level,
                askP=round(inst.ltp + inst.tick_size * (level + 1), 2),
            )
        if inst.greeks is not None:
            self._fill_greeks(m.optionGreeks, inst.greeks)
        self._fill_ohlc(m.marketOHLC, inst)
        m.atp, m.vtt, m.oi, m.iv = inst.atp, inst.vtt, inst.oi, inst.iv
        m.tbq, m.tsq = float(inst.depth_qty * 40), float(inst.depth_qty * 45)

    @staticmethod
    def _fill_ltpc(ltpc: Any, inst: SimInstrument) -> None:
        ltpc.ltp, ltpc.ltt, ltpc.ltq, ltpc.cp = inst.ltp, inst.ltt_ms, inst.ltq, inst.cp

    @staticmethod
    def _fill_greeks(g: Any, greeks: tuple[float, float, float, float, float]) -> None:
        g.delta, g.theta, g.gamma, g.vega, g.rho = greeks

    @staticmethod
    def _fill_ohlc(market_ohlc: Any, inst: SimInstrument) -> None:
        minute = inst.ltt_ms - inst.ltt_ms % 60_000
        for interval, start in (("1d", inst.ltt_ms - inst.ltt_ms % 86_400_000), ("I1", minute)):
            market_ohlc.ohlc.add(
                interval=interval,
                open=inst.cp,
                high=max(inst.cp, inst.ltp),
                low=min(inst.cp, inst.ltp),
                close=inst.ltp,
                vol=inst.vtt,
                ts=start,
            )

    def _auto_prices(self, conn: _Connection) -> dict[str, float]:
        with self._lock:
            prices = {}
            for key in conn.modes:
                inst = self._instrument(key)
                step = inst.tick_size * self._rng.choice((-2, -1, 0, 1, 2))
                prices[key] = round(max(inst.tick_size, inst.ltp + step), 2)
            return prices


def get_feed_sim(app: FastAPI) -> FeedSimulator:
    """The app's feed simulator, created on first use."""
    sim = getattr(app.state, "feed_sim", None)
    if sim is None:
        sim = FeedSimulator()
        app.state.feed_sim = sim
    assert isinstance(sim, FeedSimulator)
    return sim


router = APIRouter()


@router.get(AUTHORIZE_PATH)
async def authorize_market_data_feed(request: Request) -> JSONResponse:
    """Hand out a single-use websocket URI to a caller with a valid bearer token."""
    sim = get_feed_sim(request.app)
    sim.authorize_calls += 1
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not sim.is_token_valid(token.strip()):
        sim.authorize_refusals += 1
        return JSONResponse(_unauthorized_body(), status_code=401)
    code = sim._issue_code()
    base = str(request.base_url).rstrip("/")
    ws_base = "ws" + base.removeprefix("http")  # http -> ws, https -> wss
    uri = f"{ws_base}{WS_PATH}?requestId={uuid.uuid4()}&code={code}"
    data = {"authorized_redirect_uri": uri, "authorizedRedirectUri": uri}
    return JSONResponse({"status": "success", "data": data})


@router.websocket(WS_PATH)
async def market_data_feed(websocket: WebSocket) -> None:
    """The feed: market_info first, snapshots on subscription, then pushed live frames."""
    sim = get_feed_sim(websocket.app)
    if not sim._consume_code(websocket.query_params.get("code")):
        sim.rejected_handshakes += 1
        await websocket.close(code=1008)  # before accept: the handshake is refused (403)
        return
    if not sim._room_for_connection():
        await websocket.close(code=1008)  # over the connection limit: refused (403)
        return
    await websocket.accept()
    conn = sim._register(websocket)
    conn.queue.put_nowait(sim._market_info_frame())
    sender = asyncio.create_task(_send_loop(sim, conn))
    ticker = asyncio.create_task(_auto_tick_loop(sim, conn))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                sim._on_request(conn, message["bytes"], binary=True)
            elif message.get("text") is not None:
                sim._on_request(conn, message["text"].encode(), binary=False)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sim._unregister(conn)
        for task in (sender, ticker):
            task.cancel()
        await asyncio.gather(sender, ticker, return_exceptions=True)


async def _send_loop(sim: FeedSimulator, conn: _Connection) -> None:
    websocket = conn.websocket
    while True:
        item = await conn.queue.get()
        if item == _ABORT:
            if await _abort(websocket):
                sim.abrupt_drops += 1
            return
        if item in (_CLOSE_1011, _CLOSE_1008):
            await websocket.close(code=1011 if item == _CLOSE_1011 else 1008)
            return
        if time.monotonic() < conn.silent_until:
            sim.frames_swallowed += 1
            continue
        assert isinstance(item, bytes)
        await websocket.send_bytes(item)
        sim.frames_sent += 1


async def _auto_tick_loop(sim: FeedSimulator, conn: _Connection) -> None:
    while True:
        interval = sim.auto_tick_interval_s
        await asyncio.sleep(interval or 0.05)  # the simulated market's own pace
        if interval is None or not conn.modes:
            continue
        prices = sim._auto_prices(conn)
        sim.push_prices(prices)


async def _abort(websocket: WebSocket) -> bool:
    # Upstox connections can die without a closing handshake (client sees code 1006). The ASGI
    # interface has no "abort", so reach the uvicorn protocol behind the receive callable and
    # drop its TCP transport; fall back to an immediate close frame if that is not available.
    protocol = getattr(getattr(websocket, "_receive", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    if transport is not None:
        transport.abort()
        return True
    await websocket.close(code=1011)
    return False


def serve_app(app: FastAPI) -> tuple[str, Callable[[], None]]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (random port) in a background thread.

    Returns:
        The base URL (``http://127.0.0.1:<port>``) and a function that stops the server.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        ws="websockets-sansio",
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="upstox-sim", daemon=True)
    thread.start()
    wait_until(
        lambda: server.started or not thread.is_alive(),
        what="the simulator server to start",
        within_s=10.0,
        every_s=0.01,
    )
    if not server.started:
        raise RuntimeError("the simulator server did not start (its thread ended)")
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10.0)

    return f"http://127.0.0.1:{port}", stop
