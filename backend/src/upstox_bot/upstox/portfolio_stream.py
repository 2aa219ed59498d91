"""Upstox portfolio stream (API.md 4): order and position updates over a websocket.

Authorize with ``GET /v2/feed/portfolio-stream-feed/authorize?update_types=order,position``,
connect to the single-use ``wss://`` URI it returns, and read one JSON update per message (text
or binary frames: Upstox does not say which, so both are accepted). Nothing is sent to the server.
The connection is kept alive by the lifecycle it shares with the market feed
(:mod:`upstox_bot.upstox.websocket`): on a drop the client authorizes again and reconnects with
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

import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus

from upstox_bot.errors import MalformedFrame
from upstox_bot.upstox.models import OrderRecord, PositionRecord
from upstox_bot.upstox.websocket import (
    Backoff,
    FeedUnauthorized,
    RefusalHook,
    TokenSource,
    UpstoxWebSocket,
    call_hook,
)

log = logging.getLogger(__name__)

AUTHORIZE_PATH: Final = "/v2/feed/portfolio-stream-feed/authorize"
DEFAULT_UPDATE_TYPES: Final = ("order", "position")

PortfolioUpdate = OrderRecord | PositionRecord
UpdateHandler = Callable[[PortfolioUpdate], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None] | None]


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


def _without_token(hook: Hook | None) -> RefusalHook | None:
    # The stream's refusal hook takes no argument; the lifecycle passes the refused token.
    if hook is None:
        return None
    return lambda _refused: hook()


class PortfolioStreamClient(UpstoxWebSocket):
    """One portfolio stream connection, kept alive (see the module doc).

    Args:
        api_base_url: ``UPSTOX_API_BASE_URL``.
        access_token: returns the current token (read on every authorize).
        on_update: called with every order or position update, in order.
        on_connect: called after each successful (re)connection.
        on_unauthorized: called when Upstox refuses the token.
        update_types: the ``update_types`` asked for.
        backoff: reconnect delays; ``max_reconnect_attempts`` failed attempts in a row stop it.
        open_timeout_s: timeout of the authorize call and of the websocket handshake.
        http_client: for the authorize call (one is made and closed when None).
        resume_on_new_token: after a refusal, wait for another token and resume (else stop).
    """

    _event = "portfolio"
    _label = "portfolio stream"
    _task_name = "upstox-portfolio-stream"
    _authorize_path = AUTHORIZE_PATH

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
        self._update_types = ",".join(update_types)
        super().__init__(
            api_base_url=api_base_url,
            access_token=access_token,
            authorize_params={"update_types": self._update_types},
            on_unauthorized=_without_token(on_unauthorized),
            http_client=http_client,
            backoff=backoff,
            open_timeout_s=open_timeout_s,
            max_reconnect_attempts=max_reconnect_attempts,
            rng=rng,
            resume_on_new_token=resume_on_new_token,
            token_check_s=token_check_s,
        )
        self._on_update = on_update
        self._on_connect = on_connect
        # counters (connects, reconnects, unauthorized and resumed are the lifecycle's)
        self.updates = 0
        self.ignored = 0  # holding / GTT / unknown update types
        self.malformed = 0
        self.handler_errors = 0

    async def _session(self, uri: str) -> bool:
        """Connect and receive until the connection ends; True if it was opened."""
        try:
            ws = await self._connect(uri)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise FeedUnauthorized("portfolio stream refused the token") from exc
            raise
        try:
            self._connected.set()
            log.info("portfolio.connected", extra={"update_types": self._update_types})
            try:
                await call_hook(self._on_connect)
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
            await call_hook(self._on_update, update)
        except Exception:  # a handler bug must not kill the stream
            self.handler_errors += 1
            log.exception("portfolio.handler.failed")
