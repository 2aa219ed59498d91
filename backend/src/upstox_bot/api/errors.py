"""One place that maps the error tree to HTTP status codes and the {"error", "detail"} body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from upstox_bot.errors import (
    BrokerUnavailable,
    ConfigError,
    Conflict,
    NotFound,
    OrderRejected,
    UpstoxBotError,
)

log = logging.getLogger(__name__)

STATUS: list[tuple[type[UpstoxBotError], int, str]] = [
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (ConfigError, 422, "invalid_setting"),
    (OrderRejected, 422, "order_rejected"),
    (BrokerUnavailable, 503, "broker_unavailable"),
    (UpstoxBotError, 400, "bad_request"),
]


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in STATUS:
            if isinstance(exc, cls):
                return JSONResponse({"error": code, "detail": str(exc)}, status_code=status)
        log.error("api.unhandled", exc_info=exc)  # pragma: no cover - the base always matches
        return JSONResponse({"error": "internal", "detail": "internal error"}, status_code=500)

    app.add_exception_handler(UpstoxBotError, handle)
