"""Upstox Market Data Feed V3 connection: subscribe, receive and decode, on the shared lifecycle.

`MarketDataFeedV3Client` keeps one websocket connection alive (`upstox.websocket`: authorize,
connect, reconnect with bounded, jittered backoff), sends its subscriptions on every connection,
decodes each frame (`upstox.feed_protocol`), and replaces a connection that falls silent during
market hours.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Final, TextIO

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from upstox_bot.domain import Tick
from upstox_bot.errors import ConfigError, MalformedFrame
from upstox_bot.upstox.feed_protocol import (
    NORMAL_PLAN_LIMITS,
    DecodedFrame,
    FeedLimits,
    FeedMode,
    FrameType,
    MarketStatus,
    decode_frame,
    tick_to_json,
)
from upstox_bot.upstox.websocket import Backoff, TokenSource, UpstoxWebSocket

log = logging.getLogger(__name__)

AUTHORIZE_PATH: Final = "/v3/feed/market-data-feed/authorize"

FrameHandler = Callable[[DecodedFrame], Awaitable[None] | None]
_END: Final = object()
_SUBSCRIBE_GUID_PREFIX: Final = "upstox-bot-"


class MarketDataFeedV3Client(UpstoxWebSocket):
    """One Upstox Market Data Feed V3 connection, kept alive with its subscriptions.

    Decoded frames go to `on_frame` (sync or async) when given, otherwise to the `frames()` /
    `ticks()` async iterators (one consumer). Counters are plain attributes for metrics.
    Use `async with` or `start()` / `close()`.
    """

    _event = "feed"
    _label = "feed"
    _task_name = "upstox-feed-v3"
    _authorize_path = AUTHORIZE_PATH

    def __init__(
        self,
        *,
        api_base_url: str,
        access_token: TokenSource,
        clock: Callable[[], datetime],
        is_market_open: Callable[[datetime], bool],
        on_frame: FrameHandler | None = None,
        http_client: httpx.AsyncClient | None = None,
        limits: FeedLimits = NORMAL_PLAN_LIMITS,
        silence_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
        max_reconnect_attempts: int | None = None,
        queue_size: int = 10_000,
        rng: random.Random | None = None,
        resume_on_new_token: bool = False,
        on_unauthorized: Callable[[str], None] | None = None,
        token_check_s: float = 2.0,
    ) -> None:
        """Configure the client; nothing connects until `start()`.

        Args:
            api_base_url: Upstox REST base URL (setting UPSTOX_API_BASE_URL); the authorize call
                goes to `<api_base_url>/v3/feed/market-data-feed/authorize`.
            access_token: the token, or a callable returning the current one (read on every
                authorize, so a refreshed token is picked up on reconnect).
            clock: returns the current aware datetime (injected; never the system clock here).
            is_market_open: whether data is expected at that time; silence outside it is normal.
            on_frame: called with every decoded frame that carries ticks or market status.
            http_client: client for the authorize call; one is created (and closed) if None.
            limits: plan limits; a subscription beyond one connection's cap is refused.
            silence_timeout_s: during market hours, a connection with subscriptions that sends no
                frame for this long is treated as dead and replaced.
            backoff: reconnect delays.
            open_timeout_s: timeout of the authorize call and of the websocket handshake.
            max_reconnect_attempts: give up (FeedError) after this many failed attempts in a row;
                None retries forever.
            queue_size: frames held for the iterators; older frames are kept and new ones dropped
                (and counted) when the consumer falls this far behind.
            rng: random source for the jitter.
            resume_on_new_token: when Upstox refuses the token (401), wait until `access_token`
                returns another one (the next login) and connect with it, instead of stopping;
                the client then never stops on its own.
            on_unauthorized: called with the refused token when Upstox refuses it (report it:
                the authorize call is a read, so its 401 is conclusive).
            token_check_s: how often a refused client reads `access_token` for a new token.
        """
        super().__init__(
            api_base_url=api_base_url,
            access_token=access_token,
            on_unauthorized=on_unauthorized,
            http_client=http_client,
            backoff=backoff,
            open_timeout_s=open_timeout_s,
            max_reconnect_attempts=max_reconnect_attempts,
            rng=rng,
            resume_on_new_token=resume_on_new_token,
            token_check_s=token_check_s,
        )
        self._clock = clock
        self._is_market_open = is_market_open
        self._on_frame = on_frame
        self._limits = limits
        self.silence_timeout_s = silence_timeout_s
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._subscriptions: dict[str, FeedMode] = {}
        self._send_lock = asyncio.Lock()
        self.market_status: dict[str, MarketStatus] = {}
        # counters (connects, reconnects, unauthorized and resumed are the lifecycle's)
        self.frames_received = 0  # frames decoded (any type)
        self.ticks_received = 0
        self.malformed_frames = 0  # undecodable frames, skipped
        self.unknown_frames = 0  # frames of an unknown type, skipped
        self.dropped_frames = 0  # frames dropped because the iterator consumer fell behind
        self.handler_errors = 0
        self.silence_reconnects = 0  # reconnects because the connection fell silent

    @property
    def subscriptions(self) -> Mapping[str, FeedMode]:
        """Subscribed instrument keys and their modes (resent on every reconnect)."""
        return MappingProxyType(self._subscriptions)

    # subscriptions
    async def subscribe(self, instrument_keys: Sequence[str], mode: FeedMode) -> None:
        """Subscribe instruments in a mode (also re-modes keys already subscribed).

        Raises:
            ConfigError: the connection's cap for the mode would be exceeded.
        """
        keys = list(dict.fromkeys(instrument_keys))
        self._check_caps({**self._subscriptions, **dict.fromkeys(keys, mode)})
        for key in keys:
            self._subscriptions[key] = mode
        await self._send_request("sub", keys, mode)

    async def unsubscribe(self, instrument_keys: Sequence[str]) -> None:
        """Stop receiving instruments."""
        keys = [k for k in dict.fromkeys(instrument_keys) if k in self._subscriptions]
        for key in keys:
            del self._subscriptions[key]
        if keys:
            await self._send_request("unsub", keys, None)

    async def change_mode(self, instrument_keys: Sequence[str], mode: FeedMode) -> None:
        """Switch subscribed instruments to another mode.

        Raises:
            ValueError: a key is not subscribed.
            ConfigError: the connection's cap for the mode would be exceeded.
        """
        keys = list(dict.fromkeys(instrument_keys))
        missing = [k for k in keys if k not in self._subscriptions]
        if missing:
            raise ValueError(f"not subscribed: {', '.join(missing)}")
        self._check_caps({**self._subscriptions, **dict.fromkeys(keys, mode)})
        for key in keys:
            self._subscriptions[key] = mode
        await self._send_request("change_mode", keys, mode)

    def _check_caps(self, wanted: Mapping[str, FeedMode]) -> None:
        counts: dict[FeedMode, int] = {}
        for mode in wanted.values():
            counts[mode] = counts.get(mode, 0) + 1
        combined = len(counts) > 1
        for mode, count in counts.items():
            cap = self._limits.cap(mode, combined=combined)
            if count > cap:
                kind = "combined" if combined else "single-mode"
                raise ConfigError(
                    f"{count} instruments in mode {mode.value!r} exceed the {kind} cap of {cap} "
                    "per connection; shard them with plan_shards()"
                )

    async def _send_request(self, method: str, keys: list[str], mode: FeedMode | None) -> None:
        ws = self._ws
        if ws is None or not keys:
            return  # sent on (re)connect from self._subscriptions
        try:
            async with self._send_lock:
                await ws.send(_request_bytes(method, keys, mode))
        except ConnectionClosed:
            log.info("feed.request.unsent", extra={"method": method, "keys": len(keys)})

    async def _resubscribe(self, ws: ClientConnection) -> None:
        by_mode: dict[FeedMode, list[str]] = {}
        for key, mode in self._subscriptions.items():
            by_mode.setdefault(mode, []).append(key)
        async with self._send_lock:
            for mode, keys in by_mode.items():
                await ws.send(_request_bytes("sub", keys, mode))

    # iteration

    async def frames(self) -> AsyncIterator[DecodedFrame]:
        """Yield decoded frames until the client is closed.

        Raises:
            FeedError: the client stopped on a fatal error (e.g. FeedUnauthorized).
        """
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # let another waiting iterator end too
                if self.error is not None:
                    raise self.error
                return
            if isinstance(item, DecodedFrame):
                yield item

    async def ticks(self) -> AsyncIterator[Tick]:
        """Yield decoded ticks until the client is closed (see `frames`)."""
        async for frame in self.frames():
            for tick in frame.ticks:
                yield tick

    # the connection

    async def _session(self, uri: str) -> bool:
        """Connect, subscribe and receive until the connection ends.

        Returns whether any frame arrived (a healthy connection resets the backoff).
        """
        ws = await self._connect(uri, compression=None, max_size=2**24)
        alive = True
        try:
            await self._resubscribe(ws)
            self._connected.set()
            log.info("feed.connected", extra={"subscriptions": len(self._subscriptions)})
            delivered, alive = await self._receive(ws)
            return delivered
        finally:
            if alive:
                await ws.close()
            else:
                ws.transport.abort()  # a dead peer would not answer a closing handshake

    def _stopped(self) -> None:
        self._put(_END, force=True)  # ends the iterators

    async def _receive(self, ws: ClientConnection) -> tuple[bool, bool]:
        """Receive until the connection ends; returns (any frame arrived, connection alive)."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        delivered = False
        while True:
            timeout = max(0.01, quiet_since + self.silence_timeout_s - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    message = await ws.recv()
            except TimeoutError:
                if self._closing.is_set():
                    return delivered, True
                now = loop.time()
                if now - quiet_since < self.silence_timeout_s:
                    continue
                if self._subscriptions and self._is_market_open(self._clock()):
                    self.silence_reconnects += 1
                    log.warning(
                        "feed.connection.silent",
                        extra={"silent_s": round(now - quiet_since, 3)},
                    )
                    return delivered, False
                quiet_since = now  # silence outside market hours (or unsubscribed) is normal
                continue
            except ConnectionClosed as e:
                if self._closing.is_set() or (e.rcvd is not None and e.rcvd.code == 1000):
                    log.info("feed.connection.closed", extra={"code": ws.close_code})
                    return delivered, True
                raise
            quiet_since = loop.time()
            delivered = True
            await self._on_message(message)

    async def _on_message(self, message: bytes | str) -> None:
        if isinstance(message, str):
            self.malformed_frames += 1
            log.warning(
                "feed.frame.malformed", extra={"reason": "text frame", "size": len(message)}
            )
            return
        try:
            frame = decode_frame(message)
        except MalformedFrame as e:
            self.malformed_frames += 1
            log.warning("feed.frame.malformed", extra={"reason": str(e), "size": len(message)})
            return
        self.frames_received += 1
        if frame.type is FrameType.UNKNOWN:
            self.unknown_frames += 1
            log.warning("feed.frame.unknown_type", extra={"size": len(message)})
            return
        if frame.market_info is not None:
            self.market_status.update(frame.market_info.segment_status)
        self.ticks_received += len(frame.ticks)
        if self._on_frame is None:
            self._put(frame)
            return
        try:
            result = self._on_frame(frame)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.handler_errors += 1
            log.exception("feed.handler.failed")

    def _put(self, item: object, *, force: bool = False) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if not force:
                self.dropped_frames += 1
                log.warning("feed.frame.dropped", extra={"dropped": self.dropped_frames})
                return
            self._queue.get_nowait()  # make room for the end marker
            self._queue.put_nowait(item)


def _request_bytes(method: str, keys: list[str], mode: FeedMode | None) -> bytes:
    data: dict[str, object] = {"instrumentKeys": keys}
    if mode is not None:
        data = {"mode": mode.value, "instrumentKeys": keys}
    body = {"guid": _SUBSCRIBE_GUID_PREFIX + uuid.uuid4().hex, "method": method, "data": data}
    return json.dumps(body, separators=(",", ":")).encode()


async def stream_jsonl(
    client: MarketDataFeedV3Client, out: TextIO, max_messages: int | None
) -> int:
    """Write one JSON line per decoded tick from a started client, flushing after each line.

    Args:
        client: a started client with its subscriptions made; it is not closed here.
        out: text stream to write to.
        max_messages: stop after this many lines; None runs until the client closes.

    Returns:
        The number of lines written.
    """
    written = 0
    if max_messages is not None and max_messages <= 0:
        return 0
    async for frame in client.frames():
        for tick in frame.ticks:
            record = tick_to_json(tick, frame.quote(tick.instrument_key))
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            out.flush()
            written += 1
            if max_messages is not None and written >= max_messages:
                return written
    return written
