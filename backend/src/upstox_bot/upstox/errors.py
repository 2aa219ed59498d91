"""Typed errors of the Upstox adapter, and the mapping from Upstox error answers to them.

Upstox answers errors as ``{"status": "error", "errors": [Problem, ...]}`` where each problem has
``error_code`` (``UDAPI...``), ``message``, ``property_path`` and ``invalid_value`` (camelCase
copies are deprecated). :func:`error_from_response` turns an HTTP status plus those problems into
one exception of the tree below; every exception keeps the status and all the codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from upstox_bot.errors import BrokerError, BrokerUnavailable, NotFound, OrderRejected


class ErrorCategory(StrEnum):
    """What an Upstox error code means for the caller."""

    AUTH = "auth"  # token invalid/expired/revoked, bad app credentials
    RATE_LIMIT = "rate_limit"  # too many requests: wait, then retry
    SERVER = "server"  # Upstox failed: retry reads, look orders up before re-placing
    SERVICE_CLOSED = "service_closed"  # the service is outside its hours: retry later
    FORBIDDEN = "forbidden"  # not allowed for this token, app, plan or account
    NOT_FOUND = "not_found"  # unknown order id or similar
    ORDER_REFUSED = "order_refused"  # an order write refused by rule (IP, algo, protection, ...)
    VALIDATION = "validation"  # a request field is missing or wrong: a bug on our side


def _codes(category: ErrorCategory, *codes: str) -> dict[str, ErrorCategory]:
    return dict.fromkeys(codes, category)


def _code_range(prefix: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in range(first, last + 1))


# Every code of API.md sections 1.1, 6, 7 and 8.4. Codes not listed fall back to the HTTP status.
ERROR_CODE_CATEGORIES: Mapping[str, ErrorCategory] = {
    **_codes(
        ErrorCategory.AUTH,
        "UDAPI100050",  # invalid token used to access API (expired, revoked, logged out)
        "UDAPI100016",  # invalid credentials
        "UDAPI100057",  # invalid auth code (reused or expired code at token exchange)
        "UDAPI100068",  # wrong client_id / redirect_uri at the login dialog
        "UDAPI100073",  # client_id inactive
    ),
    **_codes(ErrorCategory.RATE_LIMIT, "UDAPI10005"),
    **_codes(ErrorCategory.SERVER, "UDAPI100500"),
    **_codes(ErrorCategory.SERVICE_CLOSED, "UDAPI100072"),  # funds service closed 00:00-05:30
    **_codes(
        ErrorCategory.FORBIDDEN,
        "UDAPI100067",  # API not allowed with the extended token
        "UDAPI100049",  # API access restricted for this account
    ),
    **_codes(ErrorCategory.NOT_FOUND, "UDAPI100010"),  # unknown order id / order request rejected
    **_codes(
        ErrorCategory.ORDER_REFUSED,
        "UDAPI100040",  # cannot cancel a finished order
        "UDAPI100041",  # cannot modify a finished order
        "UDAPI100074",  # order API only 05:30-24:00 IST
        "UDAPI1118",  # too many orders after slicing
        "UDAPI1154",  # static IP not whitelisted
        "UDAPI1156",  # invalid algo name in X-Algo-Name
        "UDAPI1158",  # market orders not allowed without market protection
        "UDAPI1159",  # market protection above 25%
        "UDAPI1160",  # invalid market protection
        "UDAPI1161",  # MCX orders via API disabled
        "UDAPI1179",  # static-IP configuration not permitted
        "UDAPI1180",  # OAuth client inactive
        "UDAPI1181",  # segment or app type issue
    ),
    **_codes(
        ErrorCategory.VALIDATION,
        "UDAPI10000",  # request not supported (bad URL)
        "UDAPI100015",  # API version header missing/unknown
        "UDAPI100036",
        "UDAPI100038",  # invalid input
        "UDAPI100011",  # invalid instrument key
        "UDAPI100042",
        "UDAPI100043",  # too many instrument keys
        "UDAPI1003",
        "UDAPI1023",  # order id required (also: grant type required at token exchange)
        "UDAPI1004",  # valid order type required
        "UDAPI1007",  # validity required
        "UDAPI1010",  # order id must be alphanumeric or '-'
        "UDAPI1026",  # instrument key required
        "UDAPI1029",
        "UDAPI1030",
        "UDAPI1031",
        "UDAPI1032",
        "UDAPI1036",  # price / trigger rules of the order type
        "UDAPI1039",  # disclosed quantity below 10%
        "UDAPI1052",  # quantity cannot be zero
        "UDAPI1055",
        "UDAPI1056",  # invalid validity / order type
        "UDAPI1009",
        "UDAPI1011",
        "UDAPI1087",  # quote key missing / bad format / invalid
        "UDAPI1015",
        "UDAPI1020",
        "UDAPI1021",
        "UDAPI1022",
        "UDAPI1076",
        "UDAPI1146",
        "UDAPI1147",
        "UDAPI1148",  # candle parameters
        "UDAPI1027",
        "UDAPI1028",  # OHLC interval
        "UDAPI1088",
        "UDAPI1089",  # market info date / exchange
        "UDAPI1105",
        "UDAPI1108",
        "UDAPI1109",  # cancel-all / exit-all
        "UDAPI1017",
        "UDAPI1018",
        "UDAPI1024",  # token exchange fields
        "UDAPI1019",  # invalid funds segment
        *_code_range("UDAPI", 1095, 1104),  # margin calculator
        *_code_range("UDAPI", 1059, 1065),  # brokerage calculator
        *_code_range("UDAPI", 1184, 1188),  # kill switch
    ),
}

ORDER_CALL_REFUSALS = frozenset(
    {ErrorCategory.ORDER_REFUSED, ErrorCategory.VALIDATION, ErrorCategory.FORBIDDEN}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstoxProblem:
    """One entry of an Upstox error body."""

    error_code: str
    message: str
    property_path: str | None = None
    invalid_value: Any = None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> UpstoxProblem:
        """Read a problem, preferring the snake_case fields over the deprecated camelCase ones."""
        code = raw.get("error_code") or raw.get("errorCode") or ""
        path = raw.get("property_path") or raw.get("propertyPath")
        value = raw.get("invalid_value", raw.get("invalidValue"))
        return cls(
            error_code=str(code),
            message=str(raw.get("message") or ""),
            property_path=str(path) if path is not None else None,
            invalid_value=value,
        )


class UpstoxApiError(BrokerError):
    """An Upstox call failed. Subclasses say what to do; this base is a validation-type error.

    Attributes:
        status_code: the HTTP status, None when no answer arrived (timeout, connection error).
        problems: the entries of the error body, in order.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        problems: Sequence[UpstoxProblem] = (),
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.problems = tuple(problems)

    @property
    def error_codes(self) -> tuple[str, ...]:
        """The ``UDAPI...`` codes of the answer, in order (may be empty)."""
        return tuple(p.error_code for p in self.problems if p.error_code)

    @property
    def error_code(self) -> str | None:
        """The first error code, or None."""
        codes = self.error_codes
        return codes[0] if codes else None


class UpstoxRequestError(UpstoxApiError):
    """Upstox refused the request as invalid (400-type): a bug or bad input; do not retry."""


class UpstoxAuthError(UpstoxApiError):
    """The access token is missing, expired or revoked (401, UDAPI100050) or the app credentials
    or auth code are wrong: stop calling and ask the user to log in again; never retry."""


class UpstoxForbidden(UpstoxApiError):
    """The token, app, plan or account may not use this API (403): fix the setup; do not retry."""


class UpstoxNotFound(UpstoxApiError, NotFound):
    """Upstox does not know the entity (e.g. UDAPI100010 unknown order id): do not retry."""


class UpstoxOrderRejected(UpstoxApiError, OrderRejected):
    """Upstox refused an order write (validation, static IP, algo name, market protection,
    finished order, hours): record the refusal with its codes; never retry it blindly."""


class UpstoxUnavailable(UpstoxApiError, BrokerUnavailable):
    """Upstox did not answer usefully (timeout, connection error, 5xx) even after the client's
    bounded retries: retry reads later; look an order up by its tag before placing it again."""


class UpstoxTimeout(UpstoxUnavailable):
    """No answer within the timeout (or the connection failed): the outcome is unknown."""


class UpstoxServerError(UpstoxUnavailable):
    """Upstox answered 5xx (UDAPI100500, maintenance 503): the outcome of a write is unknown."""


class UpstoxRateLimited(UpstoxUnavailable):
    """Upstox answered 429 (UDAPI10005) more often than the client's retry budget: slow down.

    ``retry_after_s`` holds a ``Retry-After`` header's seconds if the answer had one (Upstox
    documents none).
    """

    retry_after_s: float | None = None


class UpstoxServiceClosed(UpstoxUnavailable):
    """The service is outside its hours (UDAPI100072, funds 00:00-05:30 IST): retry later."""


class UpstoxOrderStateUnknown(UpstoxUnavailable):
    """An order placement failed ambiguously and the order book could not be searched for its
    tag: the order may or may not exist. Look it up by tag before any new placement."""


def categorize(status_code: int, error_codes: Sequence[str]) -> ErrorCategory:
    """The category of an error answer: the first known code decides, else the HTTP status."""
    for code in error_codes:
        category = ERROR_CODE_CATEGORIES.get(code)
        if category is not None:
            return category
    if status_code == 401:
        return ErrorCategory.AUTH
    if status_code == 429:
        return ErrorCategory.RATE_LIMIT
    if status_code >= 500:
        return ErrorCategory.SERVER
    if status_code == 403:
        return ErrorCategory.FORBIDDEN
    if status_code in (404, 410):
        return ErrorCategory.NOT_FOUND
    return ErrorCategory.VALIDATION


def parse_problems(body: Any) -> tuple[UpstoxProblem, ...]:
    """The problems of an error body; empty for bodies that are not Upstox's shape."""
    if not isinstance(body, Mapping):
        return ()
    raw = body.get("errors")
    if not isinstance(raw, list):
        return ()
    return tuple(UpstoxProblem.from_api(p) for p in raw if isinstance(p, Mapping))


_CLASS_BY_CATEGORY: Mapping[ErrorCategory, type[UpstoxApiError]] = {
    ErrorCategory.AUTH: UpstoxAuthError,
    ErrorCategory.RATE_LIMIT: UpstoxRateLimited,
    ErrorCategory.SERVER: UpstoxServerError,
    ErrorCategory.SERVICE_CLOSED: UpstoxServiceClosed,
    ErrorCategory.FORBIDDEN: UpstoxForbidden,
    ErrorCategory.NOT_FOUND: UpstoxNotFound,
    ErrorCategory.ORDER_REFUSED: UpstoxOrderRejected,
    ErrorCategory.VALIDATION: UpstoxRequestError,
}


def error_from_response(
    status_code: int, body: Any, *, order_write: bool = False, context: str = ""
) -> UpstoxApiError:
    """Build the exception for an Upstox error answer.

    Args:
        status_code: the HTTP status of the answer.
        body: the decoded JSON body (anything; non-Upstox bodies give no problems).
        order_write: the call placed, modified or cancelled an order; then every refusal that is
            not about auth, rate or availability becomes :class:`UpstoxOrderRejected`.
        context: a short name of the call for the message, e.g. ``"POST /v3/order/place"``.
    """
    problems = parse_problems(body)
    category = categorize(status_code, [p.error_code for p in problems])
    cls = _CLASS_BY_CATEGORY[category]
    if order_write and (category in ORDER_CALL_REFUSALS or category is ErrorCategory.NOT_FOUND):
        cls = UpstoxOrderRejected
    detail = "; ".join(f"{p.error_code}: {p.message}" for p in problems) or f"HTTP {status_code}"
    prefix = f"{context}: " if context else ""
    return cls(f"{prefix}{detail}", status_code=status_code, problems=problems)
