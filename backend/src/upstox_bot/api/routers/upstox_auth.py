"""The daily Upstox login: redirect to Upstox's dialog, take the callback, store the token.

``GET /api/v1/auth/upstox/login`` sends the browser to Upstox's authorization dialog with a fresh
``state``, pending in the database for ten minutes (``upstox.login_states``); Upstox sends
the browser back to ``UPSTOX_REDIRECT_URI`` (``/api/v1/auth/upstox/callback``), which spends the
state, exchanges the code once, and stores the token encrypted (TOKEN_ENCRYPTION_KEY) with its
expiry.

Both routes are reached by a browser, which sends no API key: they are mounted outside the
keyed ``/api/v1`` router. The callback is protected by the single-use, unguessable, expiring
state that this bot handed out; since the states live in the database, the callback may land on
any API process of the deployment. Keep the API on localhost or behind your own authenticating
proxy (docs/upstox.md). The token status route needs an API key like every other ``/api/v1``
route.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import SecretStr

from upstox_bot.api.auth import ReadKey
from upstox_bot.api.deps import SessionDep, SettingsDep
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.upstox_auth import UpstoxLoginRead, UpstoxTokenStatusRead
from upstox_bot.config import Settings
from upstox_bot.db.session import session_scope
from upstox_bot.errors import ConfigError, UpstoxBotError
from upstox_bot.upstox.auth import UpstoxOAuth
from upstox_bot.upstox.login_states import LoginStateStore
from upstox_bot.upstox.token_store import (
    require_cipher,
    store_grant,
    token_store_from_settings,
)

LOGIN_PATH = "/api/v1/auth/upstox/login"

router = APIRouter(prefix="/auth/upstox", tags=["auth"], route_class=GuardedRoute)


class LoginStateInvalid(UpstoxBotError):
    """The callback's state is unknown, spent or expired: start the login again (400)."""

    code = "invalid_login_state"


def _issue_state(request: Request, now: datetime) -> str:
    # Committed before the redirect leaves: the callback may land on another API process.
    with session_scope(request.app.state.sessions) as session:
        return LoginStateStore(session).issue(now)


def _consume_state(request: Request, state: str | None, now: datetime) -> bool:
    # Committed on its own: a failed code exchange must not make the state usable again.
    with session_scope(request.app.state.sessions) as session:
        return LoginStateStore(session).consume(state, now)


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
    state = _issue_state(request, datetime.now(UTC))
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
    if not await run_in_threadpool(_consume_state, request, state, now):
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
