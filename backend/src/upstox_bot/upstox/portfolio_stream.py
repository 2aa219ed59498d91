"""Upstox portfolio stream (API.md 4): order and position updates over a websocket.

Authorize with ``GET /v2/feed/portfolio-stream-feed/authorize?update_types=order,position``,
connect to the single-use ``wss://`` URI it returns, and read one JSON update per message (text
or binary frames: Upstox does not say which, so both are accepted). Nothing is sent to the server.
The connection is kept alive: on a drop the client authorizes again and reconnects with
exponential backoff and jitter. A refused token (401) calls ``on_unauthorized``; retrying the
same token cannot help, so the client then waits for another token from ``access_token`` (the
next login) and resumes with it (``resume_on_new_token``, what the live harness uses), or stops
(``error`` is set).

Updates are handed to ``on_update`` as typed records: :class:`~upstox_bot.upstox.models.OrderRecord`
(the order-update payload is the order-book record plus ``update_type``) and
:class:`~upstox_bot.upstox.models.PositionRecord`. Holding and GTT updates are ignored; a
malformed message is counted and logged, never fatal. ``on_connect`` runs after every
(re)connection: updates sent while the client was away are lost, so the broker polls the
order book there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import httpx
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from upstox_bot.errors import FeedError, MalformedFrame
from upstox_bot.feed.upstox_v3 import Backoff, FeedUnauthorized
from upstox_bot.upstox.models import OrderRecord, PositionRecord

log = logging.getLogger(__name__)

AUTHORIZE_PATH: Final = "/v2/feed/portfolio-stream-feed/authorize"
DEFAULT_UPDATE_TYPES: Final = ("order", "position")

PortfolioUpdate = OrderRecord | PositionRecord
UpdateHandler = Callable[[PortfolioUpdate], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None] | None]
TokenSource = Callable[[], str | SecretStr | None]


def decode_portfolio_message(message: str | bytes) -> PortfolioUpdate | None:
    """Decode one stream message.

    Returns:
        The order or position update, or None for update types the bot does not use
        (``holding``, ``gtt_order``, anything new).

    Raises:
        MalformedFrame: not a JSON object, or an order/position update missing its identity.
    """
    try:
        raw: Any = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedFrame(f"portfolio message is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedFrame("portfolio message is not a JSON object")
    kind = raw.get("update_type")
    try:
        if kind == "order":
            if not raw.get("order_id"):
                raise MalformedFrame("order update without order_id")
            return OrderRecord.from_api(raw)
        if kind == "position":
            if not (raw.get("instrument_token") or raw.get("instrument_key")):
                raise MalformedFrame("position update without instrument")
            return PositionRecord.from_api(raw)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise MalformedFrame(f"{kind} update: {type(exc).__name__}: {exc}") from exc
    return None


async def _call(hook: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


class PortfolioStreamClient:
    """One portfolio stream connection, kept alive (see the module doc).

    Args:
        api_base_url: ``UPSTOX_API_BASE_URL``.
        access_token: returns the current token (read on every authorize).
        on_update: called with every order or position update, in order.
        on_connect: called after each successful (re)connection.
        on_unauthorized: called once when Upstox refuses the token (the client then stops).
        update_types: the ``update_types`` asked for.
        backoff: reconnect delays; ``max_reconnect_attempts`` failed attempts in a row stop it.
        open_timeout_s: timeout of the authorize call and of the websocket handshake.
        http_client: for the authorize call (one is made and closed when None).
    """

    def __init__(
        self,
        *,
        api_base_url: str,
        access_token: TokenSource,
        on_update: UpdateHandler,
        on_connect: Hook | None = None,
        on_unauthorized: Hook | None = None,
        update_types: Sequence[str] = DEFAULT_UPDATE_TYPES,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
        max_reconnect_attempts: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        resume_on_new_token: bool = False,
        token_check_s: float = 2.0,
    ) -> None:
        self._base_url = api_base_url.rstrip("/")
        self._token = access_token
        self._on_update = on_update
        self._on_connect = on_connect
        self._on_unauthorized = on_unauthorized
        self._update_types = ",".join(update_types)
        self._backoff = backoff or Backoff()
        self._open_timeout_s = open_timeout_s
        self._max_attempts = max_reconnect_attempts
        self._http = http_client
        self._own_http = http_client is None
        self._rng = rng or random.Random()
        self._resume_on_new_token = resume_on_new_token
        self._token_check_s = token_check_s
        self._refused_token = ""
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self.error: FeedError | None = None
        # counters
        self.connects = 0
        self.reconnects = 0
        self.updates = 0
        self.ignored = 0  # holding / GTT / unknown update types
        self.malformed = 0
        self.handler_errors = 0
        self.unauthorized = 0
        self.resumed = 0  # times a new token brought the stream back after a refusal

    async def __aenter__(self) -> PortfolioStreamClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def refused_token(self) -> str:
        """The token of the last authorize call (the refused one, after a refusal)."""
        return self._refused_token

    @property
    def running(self) -> bool:
        """True until the client is closed or stopped on a fatal error."""
        return self._task is not None and not self._task.done()

    async def wait_connected(self) -> None:
        """Wait until a connection is open."""
        await self._connected.wait()

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._task is not None:
            return
        self._closing.clear()
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._open_timeout_s)
        self._task = asyncio.create_task(self._run(), name="upstox-portfolio-stream")

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def _current_token(self) -> str:
        value = self._token()
        return (value.get_secret_value() if isinstance(value, SecretStr) else value) or ""

    async def _refused(self, exc: FeedUnauthorized) -> None:
        """Report the refusal; then wait for another token (or stop: re-raise)."""
        self.unauthorized += 1
        refused = self._refused_token
        log.error("portfolio.unauthorized", extra={"error": str(exc)})
        try:
            await _call(self._on_unauthorized)
        except Exception:
            log.exception("portfolio.unauthorized_hook.failed")
        if not self._resume_on_new_token:
            raise exc
        log.warning("portfolio.waiting_for_login")
        while not self._closing.is_set():
            token = self._current_token()
            if token and token != refused:
                self.resumed += 1
                log.info("portfolio.token.renewed")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self._token_check_s)

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing.is_set():
                delivered = False
                try:
                    delivered = await self._connect_once()
                except FeedUnauthorized as exc:
                    self._ws = None
                    self._connected.clear()
                    await self._refused(exc)
                    attempt = 0
                    continue
                except (
                    ConnectionClosed,
                    InvalidHandshake,
                    InvalidURI,
                    OSError,
                    TimeoutError,
                    httpx.HTTPError,
                    FeedError,
                ) as exc:
                    log.warning(
                        "portfolio.connection.lost", extra={"error": f"{type(exc).__name__}: {exc}"}
                    )
                finally:
                    self._ws = None
                    self._connected.clear()
                if self._closing.is_set():
                    break
                attempt = 0 if delivered else attempt + 1
                if self._max_attempts is not None and attempt > self._max_attempts:
                    raise FeedError(
                        f"portfolio stream: gave up after {self._max_attempts} failed reconnects"
                    )
                self.reconnects += 1
                delay = self._backoff.delay(max(attempt - 1, 0), self._rng)
                log.info("portfolio.reconnect", extra={"attempt": attempt, "delay_s": delay})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=delay)
        except FeedUnauthorized as exc:
            self.error = exc
        except FeedError as exc:
            self.error = exc
            log.error("portfolio.stopped", extra={"error": str(exc)})

    async def _connect_once(self) -> bool:
        """Authorize, connect and receive until the connection ends; True if it was opened."""
        uri = await self._authorize()
        try:
            ws = await connect(uri, open_timeout=self._open_timeout_s, proxy=None)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise FeedUnauthorized("portfolio stream refused the token") from exc
            raise
        self._ws = ws
        self.connects += 1
        try:
            self._connected.set()
            log.info("portfolio.connected", extra={"update_types": self._update_types})
            try:
                await _call(self._on_connect)
            except Exception:
                self.handler_errors += 1
                log.exception("portfolio.on_connect.failed")
            async for message in ws:
                await self._on_message(message)
        except ConnectionClosed as exc:
            if not (self._closing.is_set() or (exc.rcvd is not None and exc.rcvd.code == 1000)):
                raise
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        return True

    async def _authorize(self) -> str:
        token = self._current_token()
        self._refused_token = token
        if not token:
            raise FeedUnauthorized("no Upstox access token: log in first")
        http = self._http
        if http is None:
            raise FeedError("portfolio stream client is not started")
        response = await http.get(
            self._base_url + AUTHORIZE_PATH,
            params={"update_types": self._update_types},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=self._open_timeout_s,
        )
        if response.status_code == 401:
            raise FeedUnauthorized("portfolio stream authorize refused the token (401)")
        if response.status_code != 200:
            raise FeedError(f"portfolio stream authorize HTTP {response.status_code}")
        try:
            data = response.json()["data"]
            uri = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FeedError("portfolio stream authorize: unexpected response body") from exc
        if not isinstance(uri, str) or not uri.startswith(("ws://", "wss://")):
            raise FeedError(f"portfolio stream authorize: no websocket URI ({uri!r})")
        return uri

    async def _on_message(self, message: str | bytes) -> None:
        try:
            update = decode_portfolio_message(message)
        except MalformedFrame as exc:
            self.malformed += 1
            log.warning("portfolio.message.malformed", extra={"reason": str(exc)})
            return
        if update is None:
            self.ignored += 1
            return
        self.updates += 1
        try:
            await _call(self._on_update, update)
        except Exception:  # a handler bug must not kill the stream
            self.handler_errors += 1
            log.exception("portfolio.handler.failed")
