"""The daily Upstox login: redirect to Upstox's dialog, take the callback, store the token.

``GET /api/v1/auth/upstox/login`` sends the browser to Upstox's authorization dialog with a fresh
``state`` kept in this process for :data:`STATE_TTL`; Upstox sends the browser back to
``UPSTOX_REDIRECT_URI`` (``/api/v1/auth/upstox/callback``), which checks and spends the state,
exchanges the code once, and stores the token encrypted (TOKEN_ENCRYPTION_KEY) with its expiry.

Both routes are reached by a browser, which sends no API key: they are mounted outside the
keyed ``/api/v1`` router. The callback is protected by the single-use, unguessable state that
only this process handed out; a login must start and end on the same API process. Keep the API
on localhost or behind your own authenticating proxy (docs/upstox.md). The token status route
needs an API key like every other ``/api/v1`` route.
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import SecretStr

from upstox_bot.api.auth import ReadKey
from upstox_bot.api.deps import SessionDep, SettingsDep
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.upstox_auth import UpstoxLoginRead, UpstoxTokenStatusRead
from upstox_bot.config import Settings
from upstox_bot.errors import ConfigError, UpstoxBotError
from upstox_bot.upstox.auth import UpstoxOAuth, new_state
from upstox_bot.upstox.token_store import (
    require_cipher,
    store_grant,
    token_store_from_settings,
)

STATE_TTL = timedelta(minutes=10)
MAX_PENDING_STATES = 64
LOGIN_PATH = "/api/v1/auth/upstox/login"

router = APIRouter(prefix="/auth/upstox", tags=["auth"])


class LoginStateInvalid(UpstoxBotError):
    """The callback's state is unknown, spent or expired: start the login again (400)."""

    code = "invalid_login_state"


class LoginStates:
    """Pending login states of this process: issued with an expiry, spent once."""

    def __init__(self, ttl: timedelta = STATE_TTL) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._pending: dict[str, datetime] = {}

    def issue(self, now: datetime) -> str:
        """A new state, valid until ``now + ttl``."""
        state = new_state()
        with self._lock:
            self._drop_expired(now)
            while len(self._pending) >= MAX_PENDING_STATES:
                self._pending.pop(next(iter(self._pending)))
            self._pending[state] = now + self._ttl
        return state

    def consume(self, state: str | None, now: datetime) -> bool:
        """Spend ``state``: True once for a state issued here and not yet expired."""
        if not state:
            return False
        with self._lock:
            self._drop_expired(now)
            match = next((s for s in self._pending if secrets.compare_digest(s, state)), None)
            if match is None:
                return False
            del self._pending[match]
            return True

    def _drop_expired(self, now: datetime) -> None:
        for state, expires_at in list(self._pending.items()):
            if expires_at <= now:
                del self._pending[state]


def _states(request: Request) -> LoginStates:
    states: LoginStates | None = getattr(request.app.state, "upstox_login_states", None)
    if states is None:
        states = LoginStates()
        request.app.state.upstox_login_states = states
    return states


def oauth_from_settings(settings: Settings) -> UpstoxOAuth:
    """The OAuth client of the configured Upstox app.

    Raises:
        ConfigError: UPSTOX_API_KEY or UPSTOX_API_SECRET is not set.
    """
    if not settings.UPSTOX_API_KEY or settings.UPSTOX_API_SECRET is None:
        raise ConfigError(
            "UPSTOX_API_KEY and UPSTOX_API_SECRET must be set to log in (see docs/upstox.md)"
        )
    return UpstoxOAuth(
        client_id=settings.UPSTOX_API_KEY,
        client_secret=SecretStr(settings.UPSTOX_API_SECRET.get_secret_value()),
        redirect_uri=settings.UPSTOX_REDIRECT_URI,
        api_base_url=settings.UPSTOX_API_BASE_URL,
    )


@router.get(
    "/login",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To Upstox's login dialog."}, 422: {"model": ErrorBody}},
)
def login(request: Request, settings: SettingsDep) -> RedirectResponse:
    """Start the daily Upstox login: redirect to Upstox's authorization dialog.

    Open it in the browser; 422 when the Upstox app or TOKEN_ENCRYPTION_KEY is not configured
    (checked before sending you to Upstox, so a login never ends with nowhere to keep the token).
    """
    oauth = oauth_from_settings(settings)
    require_cipher(settings.TOKEN_ENCRYPTION_KEY)
    state = _states(request).issue(datetime.now(UTC))
    return RedirectResponse(oauth.authorization_url(state), status_code=302)


@router.get(
    "/callback",
    response_model=UpstoxLoginRead,
    responses={
        400: {"model": ErrorBody, "description": "Bad state or code, or Upstox refused it."},
        422: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "Upstox did not answer; log in again."},
    },
)
async def callback(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    code: str | None = Query(None, max_length=512),
    state: str | None = Query(None, max_length=512),
) -> UpstoxLoginRead:
    """Where Upstox sends the browser back: check the state, exchange the code, store the token
    encrypted. The code is exchanged once; on any failure start again at the login route."""
    now = datetime.now(UTC)
    if not _states(request).consume(state, now):
        raise LoginStateInvalid(
            f"unknown or expired login state: start the login again at {LOGIN_PATH}"
        )
    if not code:
        raise LoginStateInvalid(f"Upstox sent no code: start the login again at {LOGIN_PATH}")
    cipher = require_cipher(settings.TOKEN_ENCRYPTION_KEY)
    grant = await oauth_from_settings(settings).exchange_code(code, now=now)
    store_grant(session, cipher, grant)
    return UpstoxLoginRead(
        user_id=grant.user_id,
        user_name=grant.user_name,
        expires_at=grant.expires_at,
        detail="logged in to Upstox; the bot uses this token from now on",
    )


@router.get("/status", response_model=UpstoxTokenStatusRead, responses=ERRORS)
def token_status(request: Request, settings: SettingsDep, _key: ReadKey) -> UpstoxTokenStatusRead:
    """The Upstox token the bot trades with: state, source and expiry (never the token)."""
    status = token_store_from_settings(settings, request.app.state.sessions).status(
        datetime.now(UTC)
    )
    return UpstoxTokenStatusRead(
        state=status.state.value,
        entries_allowed=status.entries_allowed,
        source=status.source.value if status.source else None,
        expires_at=status.expires_at,
        user_id=status.user_id,
        reason=status.reason,
        login_url=LOGIN_PATH,
    )
