"""The daily Upstox login: a one-time link, Upstox's dialog, the callback, the stored token.

Starting a login needs authority, and a login is bound to the browser that started it
(upstox/login_states.py):

- ``upstox-bot login`` (or ``POST /api/v1/auth/upstox/login-link`` with a trade key) makes a
  one-time link to ``GET /api/v1/auth/upstox/login?ticket=...``, valid ten minutes, on the
  origin of ``UPSTOX_REDIRECT_URI`` (the browser must send the login cookie back there);
- opening it spends the ticket, sets an HttpOnly cookie holding a random nonce, and sends the
  browser to Upstox's authorization dialog with the state bound to that nonce;
- Upstox sends the browser back to ``UPSTOX_REDIRECT_URI`` (``/api/v1/auth/upstox/callback``),
  which accepts only the browser whose cookie matches the state, spends the state, exchanges the
  code once, and stores the token encrypted (TOKEN_ENCRYPTION_KEY) with its expiry.

The login and callback routes are reached by a browser, which sends no API key: they are not
keyed (api/middleware.py). Tickets and states live in the database, so the callback may land on
any API process of the deployment. The token status and the login link need an API key.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.api.auth import ReadKey, TradeActor
from upstox_bot.api.deps import SessionDep, SettingsDep
from upstox_bot.api.errors import Forbidden
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.upstox_auth import (
    UpstoxLoginLinkRead,
    UpstoxLoginRead,
    UpstoxTokenStatusRead,
)
from upstox_bot.config import Settings
from upstox_bot.db.session import session_scope
from upstox_bot.errors import ConfigError, Conflict, UpstoxBotError
from upstox_bot.upstox.auth import UpstoxOAuth
from upstox_bot.upstox.login_states import STATE_TTL, TICKET, LoginStateStore, bound_state
from upstox_bot.upstox.token_store import (
    require_cipher,
    store_grant,
    token_store_from_settings,
)

LOGIN_PATH = "/api/v1/auth/upstox/login"
COOKIE = "upstox_bot_login"
COOKIE_PATH = "/api/v1/auth/upstox"
START_AGAIN = "run `upstox-bot login` for a new login link"

router = APIRouter(prefix="/auth/upstox", tags=["auth"], route_class=GuardedRoute)


class LoginStateInvalid(UpstoxBotError):
    """The callback's state is unknown, spent or expired: start the login again (400)."""

    code = "invalid_login_state"


class LoginNotStartedHere(Forbidden):
    """The callback came to a browser that did not start this login (no login cookie, or
    another login's): finish it in the browser that opened the link (403)."""

    code = "login_not_started_here"


class LoginLinkInvalid(Forbidden):
    """The login link's ticket is unknown, used or expired: make a new link (403)."""

    code = "invalid_login_link"


class UpstoxNotConfigured(Conflict):
    """The Upstox app (UPSTOX_API_KEY, UPSTOX_API_SECRET) or TOKEN_ENCRYPTION_KEY is not set on
    the server: set them and restart (409)."""

    code = "upstox_not_configured"


def _configured_oauth(settings: Settings) -> UpstoxOAuth:
    try:
        oauth = oauth_from_settings(settings)
        require_cipher(settings.TOKEN_ENCRYPTION_KEY)
    except ConfigError as exc:
        raise UpstoxNotConfigured(str(exc)) from None
    return oauth


def issue_login_link(sessions: sessionmaker[Session], settings: Settings, now: datetime) -> str:
    """A one-time login link (valid STATE_TTL) on the origin of UPSTOX_REDIRECT_URI."""
    with session_scope(sessions) as session:
        ticket = LoginStateStore(session).issue(now, purpose=TICKET)
    parts = urlsplit(settings.UPSTOX_REDIRECT_URI)
    return f"{parts.scheme}://{parts.netloc}{LOGIN_PATH}?{urlencode({'ticket': ticket})}"


def _spend(request: Request, secret: str | None, now: datetime, purpose: str) -> bool:
    # Committed on its own: a failed code exchange must not make a state usable again.
    with session_scope(request.app.state.sessions) as session:
        return LoginStateStore(session).consume(secret, now, purpose=purpose)


def _issue_bound_state(request: Request, nonce: str, now: datetime) -> str:
    # Committed before the redirect leaves: the callback may land on another API process.
    with session_scope(request.app.state.sessions) as session:
        return LoginStateStore(session).issue(now, state=bound_state(nonce))


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


@router.post(
    "/login-link",
    response_model=UpstoxLoginLinkRead,
    status_code=201,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "Upstox is not configured."}},
)
def login_link(request: Request, settings: SettingsDep, actor: TradeActor) -> UpstoxLoginLinkRead:
    """A one-time link that starts the Upstox login in the browser that opens it (trade scope;
    valid ten minutes, once). 409 when the Upstox app or TOKEN_ENCRYPTION_KEY is not set."""
    _configured_oauth(settings)
    now = datetime.now(UTC)
    url = issue_login_link(request.app.state.sessions, settings, now)
    return UpstoxLoginLinkRead(url=url, expires_at=now + STATE_TTL)


@router.get(
    "/login",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        302: {"description": "To Upstox's login dialog, with the login cookie set."},
        403: {"model": ErrorBody, "description": "An unknown, used or expired link."},
        409: {"model": ErrorBody, "description": "The Upstox app is not configured."},
    },
)
def login(
    request: Request,
    settings: SettingsDep,
    ticket: str = Query(max_length=512, description="From the one-time login link."),
) -> RedirectResponse:
    """Start the daily Upstox login from a one-time link (`upstox-bot login`): spend its ticket,
    bind the login to this browser (an HttpOnly cookie) and redirect to Upstox's dialog.

    409 when the Upstox app or TOKEN_ENCRYPTION_KEY is not configured (checked before sending
    you to Upstox, so a login never ends with nowhere to keep the token).
    """
    oauth = _configured_oauth(settings)
    now = datetime.now(UTC)
    if not _spend(request, ticket, now, TICKET):
        raise LoginLinkInvalid(f"this login link is unknown, used or expired: {START_AGAIN}")
    nonce = secrets.token_urlsafe(32)
    state = _issue_bound_state(request, nonce, now)
    response = RedirectResponse(oauth.authorization_url(state), status_code=302)
    response.set_cookie(
        COOKIE,
        nonce,
        max_age=int(STATE_TTL.total_seconds()),
        path=COOKIE_PATH,
        secure=settings.UPSTOX_REDIRECT_URI.startswith("https:"),
        httponly=True,
        samesite="lax",  # sent on Upstox's top-level redirect back, not on cross-site requests
    )
    return response


@router.get(
    "/callback",
    response_model=UpstoxLoginRead,
    responses={
        400: {"model": ErrorBody, "description": "Bad state or code, or Upstox refused it."},
        403: {"model": ErrorBody, "description": "This browser did not start the login."},
        409: {"model": ErrorBody, "description": "The Upstox app is not configured."},
        503: {"model": ErrorBody, "description": "Upstox did not answer; log in again."},
    },
)
async def callback(
    request: Request,
    response: Response,
    settings: SettingsDep,
    session: SessionDep,
    code: str | None = Query(None, max_length=512),
    state: str | None = Query(None, max_length=512),
) -> UpstoxLoginRead:
    """Where Upstox sends the browser back: check that this browser started the login and the
    state, exchange the code, store the token encrypted. The code is exchanged once; on any
    failure make a new login link."""
    now = datetime.now(UTC)
    nonce = request.cookies.get(COOKIE)
    if not nonce or not state or not hmac.compare_digest(bound_state(nonce), state):
        # Not spent: the browser that did start this login can still finish it.
        raise LoginNotStartedHere(
            "this browser did not start this login: finish it in the browser that opened "
            f"the login link, or {START_AGAIN}"
        )
    if not await run_in_threadpool(_spend, request, state, now, "state"):
        raise LoginStateInvalid(f"unknown or expired login state: {START_AGAIN}")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    if not code:
        raise LoginStateInvalid(f"Upstox sent no code: {START_AGAIN}")
    oauth = _configured_oauth(settings)
    cipher = require_cipher(settings.TOKEN_ENCRYPTION_KEY)
    grant = await oauth.exchange_code(code, now=now)
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
