"""Upstox OAuth2 authorization-code login and the access token's expiry rule (API.md 1.1, 1.2).

The flow: send the user's browser to :meth:`UpstoxOAuth.authorization_url` (with a fresh
``state`` from :func:`new_state`); Upstox redirects back to the registered redirect URI with
``code`` and the same ``state``; check the state with :func:`states_match`, then call
:meth:`UpstoxOAuth.exchange_code` once (the code is single use, so it is never retried).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pydantic import SecretStr

from upstox_bot.upstox.client import DEFAULT_API_BASE_URL
from upstox_bot.upstox.errors import (
    UpstoxAuthError,
    UpstoxServerError,
    UpstoxTimeout,
    error_from_response,
    parse_problems,
)
from upstox_bot.upstox.models import IST

AUTHORIZE_PATH = "/v2/login/authorization/dialog"
TOKEN_PATH = "/v2/login/authorization/token"  # noqa: S105 - a URL path, not a secret
TOKEN_EXPIRY_TIME_IST = time(3, 30)
"""Access tokens die at 03:30 IST after they are made (API.md 1.2)."""


def token_expiry(issued_at: datetime) -> datetime:
    """When a token made at ``issued_at`` dies: the next 03:30 IST strictly after it.

    Made 20:00 Tue -> 03:30 Wed; made 02:30 Wed -> 03:30 the same Wed.

    Raises:
        ValueError: ``issued_at`` is naive.
    """
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    local = issued_at.astimezone(IST)
    cutoff = datetime.combine(local.date(), TOKEN_EXPIRY_TIME_IST, tzinfo=IST)
    return cutoff if local < cutoff else cutoff + timedelta(days=1)


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT access token as an aware UTC datetime, or None if unreadable.

    The signature is not checked: the value only schedules re-login; Upstox decides validity.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= 0:
        return None
    return datetime.fromtimestamp(exp, tz=UTC)


def access_token_expiry(token: str, issued_at: datetime) -> datetime:
    """The token's expiry: its JWT ``exp`` when readable (API.md 1.2 says read it), else 03:30
    IST after ``issued_at``."""
    return jwt_expiry(token) or token_expiry(issued_at)


def new_state() -> str:
    """A fresh unguessable ``state`` value for one login attempt."""
    return secrets.token_urlsafe(32)


def states_match(expected: str, received: str | None) -> bool:
    """Constant-time comparison of the state sent with the one that came back."""
    if not received:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8"))


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenGrant:
    """The answer of the token exchange. The tokens are SecretStr: printing shows no secret."""

    access_token: SecretStr
    extended_token: SecretStr | None
    user_id: str
    user_name: str
    email: str
    broker: str
    user_type: str
    exchanges: tuple[str, ...]
    products: tuple[str, ...]
    order_types: tuple[str, ...]
    is_active: bool
    issued_at: datetime
    expires_at: datetime

    @classmethod
    def from_api(cls, raw: Mapping[str, Any], *, issued_at: datetime) -> TokenGrant:
        """Parse the token-exchange JSON (a top-level profile object, not an envelope).

        Raises:
            UpstoxAuthError: the answer carries no access token.
        """
        token = raw.get("access_token")
        if not isinstance(token, str) or not token:
            raise UpstoxAuthError("token exchange answer has no access_token")
        extended = raw.get("extended_token")
        return cls(
            access_token=SecretStr(token),
            extended_token=SecretStr(extended) if isinstance(extended, str) and extended else None,
            user_id=str(raw.get("user_id") or ""),
            user_name=str(raw.get("user_name") or ""),
            email=str(raw.get("email") or ""),
            broker=str(raw.get("broker") or ""),
            user_type=str(raw.get("user_type") or ""),
            exchanges=tuple(str(x) for x in raw.get("exchanges") or ()),
            products=tuple(str(x) for x in raw.get("products") or ()),
            order_types=tuple(str(x) for x in raw.get("order_types") or ()),
            is_active=bool(raw.get("is_active", True)),
            issued_at=issued_at,
            expires_at=access_token_expiry(token, issued_at),
        )


class UpstoxOAuth:
    """The server side of Upstox's authorization-code login.

    Args:
        client_id: the app's API key (``UPSTOX_API_KEY``).
        client_secret: the app's secret (``UPSTOX_API_SECRET``); never logged.
        redirect_uri: exactly the URL registered on the app.
        api_base_url: ``UPSTOX_API_BASE_URL``.
        timeout: seconds for the token exchange.
        transport: an httpx transport (tests).
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: SecretStr,
        redirect_uri: str,
        api_base_url: str = DEFAULT_API_BASE_URL,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not client_id:
            raise ValueError("client_id (UPSTOX_API_KEY) is required")
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._base = api_base_url.rstrip("/")
        self._timeout = timeout
        self._transport = transport

    def __repr__(self) -> str:
        return f"UpstoxOAuth(client_id={self._client_id!r}, redirect_uri={self._redirect_uri!r})"

    def authorization_url(self, state: str) -> str:
        """The login dialog URL to send the user's browser to."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._client_id,
                "redirect_uri": self._redirect_uri,
                "state": state,
            },
            quote_via=quote,
        )
        return f"{self._base}{AUTHORIZE_PATH}?{query}"

    async def exchange_code(self, code: str, *, now: datetime) -> TokenGrant:
        """Trade the redirect's ``code`` for an access token. Called once per code, no retry.

        Args:
            code: the ``code`` query value of the redirect.
            now: the current time (aware), taken as the issue time for the expiry rule.

        Raises:
            UpstoxAuthError: Upstox refused the code or the app credentials (log in again).
            UpstoxTimeout: no answer; the code may be spent: log in again.
            UpstoxServerError: Upstox failed (5xx); log in again.
        """
        form = {
            "code": code,
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "redirect_uri": self._redirect_uri,
            "grant_type": "authorization_code",
        }
        headers = {"Accept": "application/json"}
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as http:
                response = await http.post(f"{self._base}{TOKEN_PATH}", data=form, headers=headers)
        except httpx.TransportError as exc:
            raise UpstoxTimeout(f"token exchange failed: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, Mapping):
            return TokenGrant.from_api(body, issued_at=now)
        if response.status_code >= 500:
            raise error_from_response(response.status_code, body, context="token exchange")
        if response.is_success:
            raise UpstoxServerError(
                "token exchange: answer is not a JSON object", status_code=response.status_code
            )
        problems = parse_problems(body)
        detail = "; ".join(f"{p.error_code}: {p.message}" for p in problems)
        raise UpstoxAuthError(
            f"token exchange refused: {detail or f'HTTP {response.status_code}'}",
            status_code=response.status_code,
            problems=problems,
        )
