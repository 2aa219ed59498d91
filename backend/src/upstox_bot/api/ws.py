"""/api/v1/ws: the live stream. Authenticated; clients subscribe to channels; slow ones are dropped.

The key never goes in the URL (servers and proxies log URLs): send it in the X-API-Key header
of the handshake, or, from a browser, which cannot set headers on a WebSocket, as the first
message, within AUTH_TIMEOUT_S of the connection opening. A URL carrying ?api_key= is refused.
A stream whose key is revoked is closed (1008) within REVOCATION_CHECK_S plus a look-up.

Protocol (JSON text frames):
    client: {"action": "auth", "key": "ubk_..."}   (first, unless the header carried the key)
    server: {"type": "authenticated", "key": {"name": ..., "scope": ...}}
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

from upstox_bot.api.auth import HEADER, active_key_ids, key_in_own_session
from upstox_bot.api.errors import TooManyFailures, Unauthenticated
from upstox_bot.api.middleware import client_of
from upstox_bot.api.routers.positions import live_positions, stored_positions
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.api_keys import ApiKeyRecord
from upstox_bot.db.session import session_scope
from upstox_bot.live_events import (
    ACCOUNT,
    CHANNELS,
    POSITIONS,
    EventHub,
    Subscriber,
    account_payload,
    unknown_channels,
)

if TYPE_CHECKING:
    from upstox_bot.runtime.control import KernelView

log = logging.getLogger(__name__)

router = APIRouter()

SNAPSHOT_EVERY_S = 1.0
CLOSE_TIMEOUT_S = 1.0
MAX_SYMBOLS = 500
AUTH_TIMEOUT_S = 10.0  # a connection that has not sent its key by then is closed
REVOCATION_CHECK_S = 1.0  # how often the keys of open streams are checked
URL_KEY = "api_key"  # refused: a key in a URL ends up in logs
REVOKED = (WS_1008_POLICY_VIOLATION, "this API key was revoked")


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
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        _handle(app, hub, sub, message.get("text") or "")


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _key_from_first_message(websocket: WebSocket) -> str:
    try:
        with anyio.fail_after(AUTH_TIMEOUT_S):
            message = await websocket.receive()
    except TimeoutError:
        raise _Refused(
            WS_1008_POLICY_VIOLATION, f"no key within {AUTH_TIMEOUT_S:g} s: send it first"
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        parsed = json.loads(message.get("text") or "")
    except ValueError:
        parsed = None
    key = parsed.get("key") if isinstance(parsed, dict) and parsed.get("action") == "auth" else None
    if not isinstance(key, str) or not key:
        raise _Refused(
            WS_1008_POLICY_VIOLATION, 'send {"action": "auth", "key": "<API key>"} first'
        )
    return key


async def _authenticate(websocket: WebSocket, key: str) -> ApiKeyRecord:
    app: FastAPI = websocket.app
    client = client_of(websocket.scope)
    limiter = app.state.auth_limiter
    try:
        limiter.check(client)
        return await run_in_threadpool(key_in_own_session, app.state.sessions, key)
    except TooManyFailures as exc:
        raise _Refused(WS_1013_TRY_AGAIN_LATER, str(exc)) from None
    except Unauthenticated as exc:
        limiter.failed(client)
        log.info("ws.auth_failed", extra={"client": client, "reason": str(exc)})
        raise _Refused(WS_1008_POLICY_VIOLATION, str(exc)) from None


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception), anyio.move_on_after(CLOSE_TIMEOUT_S):
        await websocket.close(code=code, reason=reason)


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """The live stream (see the module docstring): the API key in X-API-Key or the first
    message, never the URL."""
    app: FastAPI = websocket.app
    if URL_KEY in websocket.query_params:
        await websocket.close(
            code=WS_1008_POLICY_VIOLATION,
            reason="never put the API key in the URL: send it in the first message",
        )
        return
    header_key = websocket.headers.get(HEADER)
    try:
        if header_key:
            record = await _authenticate(websocket, header_key)
            await websocket.accept()
        else:
            await websocket.accept()
            record = await _authenticate(websocket, await _key_from_first_message(websocket))
            await websocket.send_json(
                {
                    "type": "authenticated",
                    "key": {"name": record.name, "scope": record.scope.value},
                }
            )
    except _Refused as refused:
        await _close(websocket, refused.code, refused.reason)
        return
    except WebSocketDisconnect:
        return
    hub: EventHub = app.state.hub
    subscriber = hub.subscribe()
    streams: dict[Subscriber, int] = app.state.ws_streams
    streams[subscriber] = record.id
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
        streams.pop(subscriber, None)
    if subscriber.closing is not None:
        await _close(websocket, *subscriber.closing)
    elif subscriber.dropped.is_set():
        await _close(websocket, WS_1013_TRY_AGAIN_LATER, "too slow: dropped")


async def close_revoked(app: FastAPI, every_s: float = REVOCATION_CHECK_S) -> None:
    """Every `every_s` seconds, end the streams whose key was revoked (or deleted) since."""
    streams: dict[Subscriber, int] = app.state.ws_streams
    while True:
        await asyncio.sleep(every_s)
        if not streams:
            continue
        asked = set(streams.values())
        try:
            active = await run_in_threadpool(active_key_ids, app.state.sessions, asked)
        except Exception:  # the database busy or gone: keep serving, look again next time
            log.warning("ws.revocation_check_failed", exc_info=True)
            continue
        for subscriber, key_id in list(streams.items()):
            # A stream that opened while the database was asked has a key not asked about:
            # it was just authenticated, and is checked next time.
            if key_id in asked and key_id not in active:
                log.info("ws.key_revoked", extra={"key_id": key_id})
                subscriber.end(*REVOKED)


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
