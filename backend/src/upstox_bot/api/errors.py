"""One place that maps errors to HTTP status codes and the one error body.

Every error the API answers is `{"error": code, "detail": text}`; an invalid request (422) adds
`"errors"`, one `{"loc", "msg", "type"}` per field at fault. The input is never echoed: it may
hold what JSON cannot carry (NaN, a lone surrogate), or a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from upstox_bot.api.openapi import allowed_methods
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


class TooManyFailures(UpstoxBotError):
    """Too many failed authentications from this client: wait `retry_after_s` (answer 429)."""

    code = "too_many_failed_authentications"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many failed authentications from this client: retry in "
            f"{retry_after_s} s with a valid key"
        )
        self.retry_after_s = retry_after_s


class NotAvailable(UpstoxBotError):
    """The feature is not part of this installation yet (answer 501)."""

    code = "not_available"


STATUS: list[tuple[type[UpstoxBotError], int, str]] = [
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (TooManyFailures, 429, "too_many_failed_authentications"),
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
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}
INVALID_REQUEST = "invalid_request"
MAX_LISTED_ERRORS = 20  # an invalid request names at most this many fields


def clean_text(text: str) -> str:
    """`text` as valid UTF-8: a lone surrogate (which JSON text cannot carry) becomes "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")


def error_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one error body: {"error": code, "detail": detail} (and "errors" for a 422)."""
    body: dict[str, Any] = {"error": code, "detail": clean_text(detail)}
    if errors is not None:
        body["errors"] = errors
    out = dict(headers or {})
    if status == 401:
        out.setdefault("WWW-Authenticate", "X-API-Key")
    return JSONResponse(body, status_code=status, headers=out or None)


def _loc_part(part: object) -> str | int:
    return part if isinstance(part, int) and not isinstance(part, bool) else clean_text(str(part))


def field_errors(raw: Iterable[Any]) -> list[dict[str, Any]]:
    """Validation errors as {"loc", "msg", "type"}: no input, no context objects."""
    out: list[dict[str, Any]] = []
    for err in raw:
        if not isinstance(err, Mapping):
            out.append({"loc": [], "msg": clean_text(str(err)), "type": "value_error"})
            continue
        msg = str(err.get("msg", "invalid"))
        ctx = err.get("ctx")
        if err.get("type") == "json_invalid" and isinstance(ctx, Mapping) and ctx.get("error"):
            msg = f"{msg}: {ctx['error']}"
        out.append(
            {
                "loc": [_loc_part(p) for p in err.get("loc", ())],
                "msg": clean_text(msg.removeprefix("Value error, ")),
                "type": clean_text(str(err.get("type", "value_error"))),
            }
        )
        if len(out) == MAX_LISTED_ERRORS:
            break
    return out


def invalid_request(errors: list[dict[str, Any]]) -> JSONResponse:
    """422 naming each field at fault."""
    shown = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in errors[:3]
    )
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return error_response(
        422,
        INVALID_REQUEST,
        f"invalid request: {shown}{more}" if shown else "invalid request",
        errors=errors,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render the error tree, validation errors, Starlette's HTTP errors and anything unexpected
    as the one error body."""

    async def domain(_request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in STATUS:
            if isinstance(exc, cls):
                retry = getattr(exc, "retry_after_s", None)
                headers = {"Retry-After": str(retry)} if retry is not None else None
                return error_response(status, getattr(exc, "code", code), str(exc), headers=headers)
        return error_response(500, "internal", "internal error")  # pragma: no cover

    async def validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return invalid_request(field_errors(exc.errors()))

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = allowed_methods(request.app, request.url.path)
            if methods:
                headers["Allow"] = ", ".join(methods)
        if isinstance(exc.detail, list):  # a route's own 422 naming fields
            errors = field_errors(exc.detail)
            if exc.status_code == 422:
                response = invalid_request(errors)
                response.headers.update(headers)
                return response
            detail = "; ".join(e["msg"] for e in errors) or "error"
            return error_response(
                exc.status_code,
                HTTP_CODES.get(exc.status_code, "http_error"),
                detail,
                errors=errors,
                headers=headers,
            )
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unhandled", exc_info=exc)
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(UpstoxBotError, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, unexpected)
