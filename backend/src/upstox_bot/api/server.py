"""How uvicorn serves the API: request-header and keep-alive timeouts, WebSocket message size.

uvicorn closes an idle keep-alive connection, but not a connection whose request headers never
finish arriving (a slow or stalled client holds its socket for ever). `header_timeout_protocol`
closes such a connection API_HEADER_TIMEOUT_SECONDS after it opened, or after the first byte
of a later request on it, answering 408. The body's own limits are middleware
(api/middleware.py, BodyLimitMiddleware).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from upstox_bot.config import Settings

log = logging.getLogger(__name__)

WS_MAX_MESSAGE_BYTES = 65_536  # stream commands are small; uvicorn's default is 16 MiB
KEEP_ALIVE_S = 5
_TIMEOUT_BODY = b'{"error":"request_timeout","detail":"the request headers did not arrive in time"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode("ascii") + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline on each request's headers."""

    header_timeout_s = 10.0

    def _arm_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is None:
            self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
                self.header_timeout_s, self._headers_too_slow
            )

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info("api.header_timeout", extra={"client": str(self.client)})
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def header_timeout_protocol(timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """A protocol class whose request headers must arrive within `timeout_s` seconds."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": timeout_s})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.Config / uvicorn.run that apply the API's limits."""
    return {
        "http": header_timeout_protocol(settings.API_HEADER_TIMEOUT_SECONDS),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "ws_max_size": WS_MAX_MESSAGE_BYTES,
        "server_header": False,
    }
