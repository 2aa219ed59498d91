"""/api/v1/ws: the live stream. Authenticated; clients subscribe to channels; slow ones are dropped.

Protocol (JSON text frames):
    client: {"action": "subscribe", "channels": ["ticks", "positions"], "symbols": ["SBIN"]}
            {"action": "unsubscribe", "channels": ["ticks"]}
            {"action": "ping"}
    server: {"type": "subscribed", "channels": [...], "symbols": [...]}
            {"type": "event", "channel": "positions", "data": {...}}
            {"type": "pong"} | {"type": "error", "detail": "..."}
Channels and symbols can also be given on the URL: /api/v1/ws?channels=positions,account.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from starlette.status import WS_1008_POLICY_VIOLATION, WS_1013_TRY_AGAIN_LATER

from upstox_bot.api.auth import HEADER, QUERY, websocket_key
from upstox_bot.api.errors import Unauthenticated
from upstox_bot.api.hub import (
    ACCOUNT,
    CHANNELS,
    POSITIONS,
    EventHub,
    Subscriber,
    account_payload,
    unknown_channels,
)
from upstox_bot.api.routers.trading import live_positions, stored_positions
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.session import session_scope

if TYPE_CHECKING:
    from upstox_bot.runtime.control import KernelView

log = logging.getLogger(__name__)

router = APIRouter()

SNAPSHOT_EVERY_S = 1.0
CLOSE_TIMEOUT_S = 1.0
MAX_SYMBOLS = 500


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _apply(
    subscriber: Subscriber, action: str, channels: list[str], symbols: list[str] | None
) -> dict[str, Any]:
    unknown = unknown_channels(channels)
    if unknown:
        return {"type": "error", "detail": f"unknown channel(s) {unknown}; use {list(CHANNELS)}"}
    if action == "subscribe":
        subscriber.channels.update(channels)
        if symbols is not None:
            subscriber.symbols = frozenset(symbols[:MAX_SYMBOLS])
    else:
        subscriber.channels.difference_update(channels)
    return {
        "type": "subscribed",
        "channels": sorted(subscriber.channels),
        "symbols": sorted(subscriber.symbols),
    }


def _welcome(app: FastAPI, subscriber: Subscriber, channels: list[str]) -> None:
    # A new subscriber gets the latest snapshots at once rather than at the next change.
    latest: dict[str, dict[str, Any]] = app.state.latest_snapshots
    for channel in channels:
        if channel in latest:
            subscriber.offer({"type": "event", "channel": channel, "data": latest[channel]})


def _handle(app: FastAPI, hub: EventHub, subscriber: Subscriber, text: str) -> None:
    try:
        message = json.loads(text)
        if not isinstance(message, dict):
            raise ValueError("not an object")
    except ValueError:
        reply: dict[str, Any] = {"type": "error", "detail": "send a JSON object"}
    else:
        action = message.get("action")
        channels = message.get("channels", [])
        symbols = message.get("symbols")
        if action == "ping":
            reply = {"type": "pong"}
        elif action not in ("subscribe", "unsubscribe"):
            reply = {"type": "error", "detail": "action must be subscribe, unsubscribe or ping"}
        elif not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            reply = {"type": "error", "detail": "channels must be a list of names"}
        elif symbols is not None and (
            not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols)
        ):
            reply = {"type": "error", "detail": "symbols must be a list of keys or symbols"}
        else:
            reply = _apply(subscriber, action, channels, symbols)
            if not subscriber.offer(reply):
                hub.drop(subscriber)
                return
            if action == "subscribe" and reply["type"] == "subscribed":
                _welcome(app, subscriber, channels)
            return
    if not subscriber.offer(reply):
        hub.drop(subscriber)


async def _send(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        message = await subscriber.queue.get()
        await websocket.send_text(json.dumps(message, separators=(",", ":")))


async def _receive(websocket: WebSocket, app: FastAPI, hub: EventHub, sub: Subscriber) -> None:
    while True:
        text = await websocket.receive_text()
        _handle(app, hub, sub, text)


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """The live stream (see the module docstring); API key in X-API-Key or ?api_key=."""
    app: FastAPI = websocket.app
    key = websocket.headers.get(HEADER) or websocket.query_params.get(QUERY)
    try:
        await run_in_threadpool(websocket_key, app.state.sessions, key)
    except Unauthenticated as exc:
        await websocket.close(code=WS_1008_POLICY_VIOLATION, reason=str(exc))
        return
    await websocket.accept()
    hub: EventHub = app.state.hub
    subscriber = hub.subscribe()
    channels = _split(websocket.query_params.get("channels"))
    if channels:
        symbols = _split(websocket.query_params.get("symbols")) or None
        reply = _apply(subscriber, "subscribe", channels, symbols)
        subscriber.offer(reply)
        if reply["type"] == "subscribed":
            _welcome(app, subscriber, channels)
    try:
        await _serve(websocket, app, hub, subscriber)
    finally:
        hub.unsubscribe(subscriber)
    if subscriber.dropped.is_set():
        with contextlib.suppress(Exception), anyio.move_on_after(CLOSE_TIMEOUT_S):
            await websocket.close(code=WS_1013_TRY_AGAIN_LATER, reason="too slow: dropped")


async def _serve(websocket: WebSocket, app: FastAPI, hub: EventHub, subscriber: Subscriber) -> None:
    async with anyio.create_task_group() as group:

        async def until_done(part: Callable[[], Awaitable[object]]) -> None:
            # The first part to end (client gone, send failed, dropped) ends the others.
            try:
                await part()
            except WebSocketDisconnect:
                pass
            except Exception:  # a broken connection: log it, end this client only
                log.info("ws.connection_ended", exc_info=True)
            finally:
                group.cancel_scope.cancel()

        group.start_soon(until_done, lambda: _send(websocket, subscriber))
        group.start_soon(until_done, lambda: _receive(websocket, app, hub, subscriber))
        group.start_soon(until_done, subscriber.dropped.wait)


# --- snapshots published every second --------------------------------------------------------


def _stored_snapshots(app: FastAPI) -> dict[str, Any]:
    account: str = app.state.settings.ACCOUNT_NAME
    with session_scope(app.state.sessions) as session:
        positions = [p.model_dump(mode="json") for p in stored_positions(session, account)]
        snap = AccountRepository(session).latest_snapshot(account)
    out: dict[str, Any] = {POSITIONS: {"positions": positions}}
    if snap is not None:
        out[ACCOUNT] = account_payload(snap)
    return out


def _live_snapshots(view: KernelView) -> dict[str, Any]:
    return {
        POSITIONS: {"positions": [p.model_dump(mode="json") for p in live_positions(view)]},
        ACCOUNT: account_payload(view.account, view.at),
    }


async def publish_snapshots(app: FastAPI, every_s: float = SNAPSHOT_EVERY_S) -> None:
    """Publish the positions and the account every `every_s` seconds when they changed and
    somebody listens (from the running bot, else from the database)."""
    hub: EventHub = app.state.hub
    latest: dict[str, dict[str, Any]] = app.state.latest_snapshots
    while True:
        await asyncio.sleep(every_s)
        if not (hub.has_subscribers(POSITIONS) or hub.has_subscribers(ACCOUNT)):
            latest.clear()
            continue
        try:
            control = app.state.control
            view = control.view() if control is not None else None
            snapshots = (
                _live_snapshots(view)
                if view is not None
                else await run_in_threadpool(_stored_snapshots, app)
            )
        except Exception:  # a failed snapshot must not end the stream: log, try next time
            log.exception("ws.snapshot_failed")
            continue
        for channel, payload in snapshots.items():
            if latest.get(channel) != payload:
                latest[channel] = payload
                hub.publish(channel, payload)
