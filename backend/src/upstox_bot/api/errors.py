"""One place that maps errors to HTTP status codes and the {"error", "detail"} body.

Domain errors (errors.py) and the API's own (below) carry a machine-readable code; FastAPI's
request validation keeps its own 422 body, which names the offending field.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from upstox_bot.errors import (
    BrokerUnavailable,
    ConfigError,
    Conflict,
    NotFound,
    OrderRejected,
    UpstoxBotError,
)
from upstox_bot.runtime.control import NoAnswer

log = logging.getLogger(__name__)


class Unauthenticated(UpstoxBotError):
    """No API key, an unknown one or a revoked one: send a valid X-API-Key header."""

    code = "unauthenticated"


class Forbidden(UpstoxBotError):
    """The key is valid but its scope does not allow this: use a trade-scope key."""

    code = "forbidden"


class BotNotRunning(Conflict):
    """The command needs the trading engine, which does not run in this process."""

    code = "bot_not_running"


class PaperHistoryTooShort(Conflict):
    """Live trading was asked for before the required days of paper trading: wait, or force it
    with a reason (audited)."""

    code = "paper_history_too_short"


class RiskRefused(Conflict):
    """The risk manager refused a manual entry; the detail names the rule."""

    code = "risk_refused"


class NotAvailable(UpstoxBotError):
    """The feature is not part of this installation yet (answer 501)."""

    code = "not_available"


STATUS: list[tuple[type[UpstoxBotError], int, str]] = [
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (ConfigError, 422, "invalid_setting"),
    (OrderRejected, 422, "order_rejected"),
    (NotAvailable, 501, "not_available"),
    (NoAnswer, 503, "bot_not_answering"),
    (BrokerUnavailable, 503, "broker_unavailable"),
    (UpstoxBotError, 400, "bad_request"),
]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """The one error body: {"error": code, "detail": detail}."""
    headers = {"WWW-Authenticate": "X-API-Key"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render the error tree, Starlette's HTTP errors and anything unexpected as ErrorBody."""

    async def domain(_request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in STATUS:
            if isinstance(exc, cls):
                return error_response(status, getattr(exc, "code", code), str(exc))
        return error_response(500, "internal", "internal error")  # pragma: no cover

    async def http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if not isinstance(exc.detail, str):
            # A structured detail (e.g. a route's own 422 naming fields) keeps FastAPI's shape.
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unhandled", exc_info=exc)
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(UpstoxBotError, domain)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, unexpected)
