"""Portfolio stream half of the local Upstox simulator (API.md section 4).

``GET /v2/feed/portfolio-stream-feed/authorize`` hands a single-use websocket URI to a caller with
a valid bearer token (the REST half's tokens); the websocket then sends one JSON text frame per
update: every status change of every order in the simulated order book (``update_type``
``"order"``, the payload of API.md 4.2) and, when requested with ``update_types=...position``, a
``"position"`` update for an instrument whenever one of its trades happens. Updates start on
connect: changes made before the connection are not replayed. Nothing is read from the client.

The stream watches the :class:`RestSimulator` order book (each ``SimOrder.history`` entry is one
status change), so every order placed, matched, modified or cancelled through the REST half
shows up here without the REST half knowing about the stream. Faults:
:meth:`PortfolioSimulator.drop_connections`, :meth:`PortfolioSimulator.pause` (connections stay
open, updates are held back and then lost, as in a gap), refusing tokens (revoke them in the
REST half), and :meth:`PortfolioSimulator.send_raw` for malformed frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from .rest import RestSimulator, error_body

AUTHORIZE_PATH = "/v2/feed/portfolio-stream-feed/authorize"
WS_PATH = "/upstox-developer-api/order-updates/feed"
POLL_S = 0.02  # how often a connection sends what the order book queued: the server's pace
VALID_TYPES = frozenset({"order", "position", "holding", "gtt_order"})


@dataclass(eq=False)
class _Connection:
    connection_id: int
    update_types: frozenset[str]
    seen: dict[str, int]  # order id -> history entries already sent
    trades_seen: int
    outbox: list[str] = field(default_factory=list)  # raw frames queued by tests
    drop: bool = False
    close_code: int = 1011


class PortfolioSimulator:
    """State of the simulated portfolio stream over a :class:`RestSimulator`."""

    def __init__(self, rest: RestSimulator) -> None:
        self.rest = rest
        self._lock = threading.Lock()
        self._codes: dict[str, frozenset[str]] = {}
        self._connections: dict[int, _Connection] = {}
        self._next_id = 1
        self.paused = False
        # records
        self.authorize_calls = 0
        self.authorize_refusals = 0
        self.connections_opened = 0
        self.frames_sent = 0
        self.updates_lost = 0  # status changes skipped while paused

    # --- tests ------------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def drop_connections(self) -> int:
        """Close every open stream connection (code 1011); returns how many."""
        with self._lock:
            for conn in self._connections.values():
                conn.drop = True
            return len(self._connections)

    def close_for_revocation(self) -> int:
        """The token was revoked: close every connection (API.md 1.2, 13; the close code Upstox
        uses is not documented: assumed 1008, policy violation). Returns how many."""
        with self._lock:
            for conn in self._connections.values():
                conn.drop = True
                conn.close_code = 1008
            return len(self._connections)

    def pause(self, paused: bool = True) -> None:
        """While paused, order changes are not sent (and not sent later either)."""
        self.paused = paused

    def send_raw(self, frame: str) -> int:
        """Queue a raw text frame (e.g. malformed JSON) on every open connection."""
        with self._lock:
            for conn in self._connections.values():
                conn.outbox.append(frame)
            return len(self._connections)

    # --- server side ------------------------------------------------------------------------

    def issue_code(self, update_types: frozenset[str]) -> str:
        code = str(uuid.uuid4())
        with self._lock:
            self._codes[code] = update_types
        return code

    def open(self, code: str | None) -> _Connection | None:
        with self._lock:
            types = self._codes.pop(code or "", None)
            if types is None:
                return None
            conn = _Connection(
                connection_id=self._next_id,
                update_types=types,
                seen={},
                trades_seen=0,
            )
            self._next_id += 1
            self._connections[conn.connection_id] = conn
            self.connections_opened += 1
        with self.rest.lock:
            conn.seen = {oid: len(o.history) for oid, o in self.rest.orders.items()}
            conn.trades_seen = len(self.rest.trades)
        return conn

    def close(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.pop(conn.connection_id, None)

    def pending_frames(self, conn: _Connection) -> list[str]:
        """The frames due on ``conn`` since the last call: order changes, then positions."""
        with self._lock:
            frames, conn.outbox = conn.outbox, []
        with self.rest.lock:
            changes: list[dict[str, Any]] = []
            for order_id, order in self.rest.orders.items():
                done = conn.seen.get(order_id, 0)
                if len(order.history) > done:
                    for entry in order.history[done:]:
                        changes.append(_order_update(entry, order.quantity))
                    conn.seen[order_id] = len(order.history)
            new_trades = self.rest.trades[conn.trades_seen :]
            conn.trades_seen = len(self.rest.trades)
            keys = list(dict.fromkeys(t.order.instrument_key for t in new_trades))
            positions = [
                p | {"update_type": "position", "instrument_key": p["instrument_token"]}
                for p in self.rest.positions()
                if p["instrument_token"] in keys
            ]
        if self.paused:
            self.updates_lost += len(changes)
            return frames
        if "order" in conn.update_types:
            frames.extend(json.dumps(change) for change in changes)
        if "position" in conn.update_types:
            frames.extend(json.dumps(position) for position in positions)
        return frames


def _order_update(entry: dict[str, Any], quantity: int) -> dict[str, Any]:
    """The stream payload of one order-history entry (API.md 4.2 field names)."""
    terminal = entry["status"] in ("complete", "rejected", "cancelled")
    filled = int(entry.get("filled_quantity") or 0)
    return {
        "update_type": "order",
        "user_id": entry.get("placed_by"),
        "userId": entry.get("placed_by"),
        "exchange": entry.get("exchange"),
        "instrument_key": entry.get("instrument_token"),
        "instrument_token": entry.get("instrument_token"),
        "trading_symbol": entry.get("trading_symbol"),
        "tradingsymbol": entry.get("trading_symbol"),
        "product": entry.get("product"),
        "order_type": entry.get("order_type"),
        "average_price": entry.get("average_price"),
        "price": entry.get("price"),
        "trigger_price": entry.get("trigger_price"),
        "quantity": entry.get("quantity", quantity),
        "disclosed_quantity": entry.get("disclosed_quantity"),
        "pending_quantity": 0 if terminal else int(entry.get("quantity", quantity)) - filled,
        "filled_quantity": filled,
        "transaction_type": entry.get("transaction_type"),
        "order_ref_id": "",
        "exchange_order_id": entry.get("exchange_order_id") or "",
        "parent_order_id": entry.get("parent_order_id"),
        "validity": entry.get("validity"),
        "status": entry.get("status"),
        "status_message": entry.get("status_message"),
        "status_message_raw": entry.get("status_message"),
        "is_amo": entry.get("is_amo"),
        "variety": entry.get("variety"),
        "tag": entry.get("tag"),
        "order_id": entry.get("order_id"),
        "order_request_id": entry.get("order_request_id"),
        "order_timestamp": entry.get("order_timestamp"),
        "exchange_timestamp": entry.get("exchange_timestamp"),
        "guid": None,
        "placed_by": entry.get("placed_by"),
    }


def get_portfolio_sim(app: FastAPI) -> PortfolioSimulator:
    sim = app.state.portfolio_sim
    assert isinstance(sim, PortfolioSimulator)
    return sim


router = APIRouter()


@router.get(AUTHORIZE_PATH)
async def authorize_portfolio_stream(
    request: Request, update_types: str | None = None
) -> JSONResponse:
    """A single-use websocket URI for a caller with a valid bearer token."""
    sim = get_portfolio_sim(request.app)
    sim.authorize_calls += 1
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not sim.rest.token_is_valid(token.strip()):
        sim.authorize_refusals += 1
        body = error_body("UDAPI100050", "Invalid token used to access API")
        return JSONResponse(body, status_code=401)
    types = frozenset((update_types or "order").split(","))
    if not types <= VALID_TYPES:
        body = error_body("UDAPI100038", "Invalid update_types", "update_types")
        return JSONResponse(body, status_code=400)
    code = sim.issue_code(types)
    base = str(request.base_url).rstrip("/")
    ws_base = "ws" + base.removeprefix("http")
    uri = f"{ws_base}{WS_PATH}?requestId={uuid.uuid4()}&code={code}"
    data = {"authorized_redirect_uri": uri, "authorizedRedirectUri": uri}
    return JSONResponse({"status": "success", "data": data})


@router.websocket(WS_PATH)
async def portfolio_stream(websocket: WebSocket) -> None:
    """Send order (and position) updates as JSON text frames until the client leaves."""
    sim = get_portfolio_sim(websocket.app)
    conn = sim.open(websocket.query_params.get("code"))
    if conn is None:
        await websocket.close(code=1008)  # before accept: the handshake is refused
        return
    await websocket.accept()
    receiver = asyncio.create_task(_drain_client(websocket))
    try:
        while not receiver.done():
            if conn.drop:
                await websocket.close(code=conn.close_code)
                break
            for frame in sim.pending_frames(conn):
                await websocket.send_text(frame)
                sim.frames_sent += 1
            await asyncio.sleep(POLL_S)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sim.close(conn)
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await receiver


async def _drain_client(websocket: WebSocket) -> None:
    # The client sends nothing; reading notices its disconnect.
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def install(app: FastAPI, rest: RestSimulator) -> PortfolioSimulator:
    """Add the portfolio stream routes to ``app``; its state is ``app.state.portfolio_sim``."""
    sim = PortfolioSimulator(rest)
    app.state.portfolio_sim = sim
    app.include_router(router)
    return sim
