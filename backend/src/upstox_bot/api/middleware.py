"""The API's ASGI middleware: security headers, body size and read-time limits, authentication.

Outermost first (api/app.py stacks them): `SecurityHeadersMiddleware` on every response,
CORS (when configured), `BodyLimitMiddleware`, then `AuthenticationMiddleware`. So a body
larger than API_MAX_BODY_BYTES is refused (413) before anything reads it, and a protected
route is never routed, nor its body read, for a caller without a valid key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import MutableMapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders, State
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upstox_bot.api.auth import HEADER, STATE_KEY, FailedAuthLimiter, key_in_own_session
from upstox_bot.api.errors import TooManyFailures, Unauthenticated, error_response

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
# Reached by a browser that holds no API key: the Upstox login and its callback.
PUBLIC_API_PATHS = frozenset(
    {f"{API_PREFIX}/auth/upstox/login", f"{API_PREFIX}/auth/upstox/callback"}
)
KEYED_PATHS = frozenset({"/metrics"})


def needs_key(path: str) -> bool:
    """Whether an HTTP request to `path` needs an API key (every /api/v1 route but the Upstox
    login and callback, and /metrics)."""
    if path in KEYED_PATHS:
        return True
    under_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
    return under_api and path not in PUBLIC_API_PATHS


def client_of(scope: Scope) -> str:
    """The client's address as the server saw it (behind a proxy: the proxy's, unless uvicorn
    is told to trust its forwarded headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthenticationMiddleware:
    """Authenticate every request that needs a key before it is routed.

    The key record is left in the request state for the routes (`auth.authenticated_key`).
    Unknown and revoked keys count against the client in the failed-authentication limiter;
    a client over its limit gets 429 with Retry-After, its key not even looked up.
    """

    def __init__(self, app: ASGIApp, *, state: State, limiter: FailedAuthLimiter) -> None:
        self.app = app
        self.state = state
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get(HEADER)
        client = client_of(scope)
        try:
            if key:
                self.limiter.check(client)
            record = await run_in_threadpool(key_in_own_session, self.state.sessions, key)
        except TooManyFailures as exc:
            retry = {"Retry-After": str(exc.retry_after_s)}
            response = error_response(429, exc.code, str(exc), headers=retry)
        except Unauthenticated as exc:
            if key:
                self.limiter.failed(client)
                log.info("api.auth_failed", extra={"client": client, "reason": str(exc)})
            response = error_response(401, exc.code, str(exc))
        except SQLAlchemyError:
            log.warning("api.auth_unavailable", exc_info=True)
            response = error_response(
                503, "unavailable", "the key store could not be read; try again", headers=None
            )
        else:
            scope.setdefault("state", {})[STATE_KEY] = record
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


class BodyTooLarge(HTTPException):
    """The request body exceeds API_MAX_BODY_BYTES (413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {max_bytes} bytes (API_MAX_BODY_BYTES)",
            headers={"Connection": "close"},
        )


class BodyTimeout(HTTPException):
    """The request body did not arrive within API_BODY_TIMEOUT_SECONDS (408)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            f"the request body did not arrive within {timeout_s:g} s (API_BODY_TIMEOUT_SECONDS)",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` (413) and bodies slower than `timeout_s` (408).

    A declared Content-Length over the limit is refused before a byte of the body is read; a
    body without one (chunked) is counted as it arrives and refused as soon as it passes the
    limit. Both close the connection, so the rest is never read.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(BodyTooLarge(self.max_bytes), scope, receive, send)
            return
        received = 0
        finished = False
        deadline: float | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, finished, deadline
            if finished:
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                finished = not message.get("more_body", False)
            else:
                finished = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except (BodyTooLarge, BodyTimeout) as exc:
            if started:
                raise
            await self._refuse(exc, scope, receive, send)

    @staticmethod
    async def _refuse(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
        code = "too_large" if exc.status_code == 413 else "request_timeout"
        log.info("api.body_refused", extra={"status": exc.status_code, "path": scope["path"]})
        await error_response(exc.status_code, code, exc.detail, headers=exc.headers)(
            scope, receive, send
        )


# --- security headers --------------------------------------------------------------------------

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The dashboard and every other response: nothing but the bot's own origin; no inline script
# (styles may be inline: the chart library sets them).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc as FastAPI serves them: their scripts and styles from the jsDelivr CDN,
# one inline script each (allowed by its hash), ReDoc's fonts and its blob: worker.
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
DOCS_CSP = (
    "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net {hashes}; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def inline_script_hashes(html: bytes) -> str:
    """CSP source expressions allowing exactly the inline scripts of `html`."""
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )


class SecurityHeadersMiddleware:
    """Add nosniff, X-Frame-Options, Referrer-Policy and a Content-Security-Policy to every
    HTTP response (a route's own headers win)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in DOCS_PATHS:
            await self._docs(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add(message, PAGE_CSP)
            await send(message)

        await self.app(scope, receive, with_headers)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The page is small: hold it whole, hash its inline scripts, then send it.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                body = b"".join(m.get("body", b"") for m in held[1:])
                _add(held[0], DOCS_CSP.format(hashes=inline_script_hashes(body)))
                for out in held:
                    await send(out)

        await self.app(scope, receive, hold)


def _add(start: MutableMapping[str, Any], csp: str) -> None:
    headers = MutableHeaders(scope=start)
    for name, value in COMMON_HEADERS.items():
        headers.setdefault(name, value)
    headers.setdefault("Content-Security-Policy", csp)
