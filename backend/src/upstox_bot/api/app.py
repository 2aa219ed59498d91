"""The FastAPI application: /health, /ready, /metrics, the /api/v1 routers and the live stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from upstox_bot import __version__
from upstox_bot.api import ws
from upstox_bot.api.auth import HEADER, FailedAuthLimiter, current_key
from upstox_bot.api.errors import install_error_handlers
from upstox_bot.api.middleware import (
    AuthenticationMiddleware,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    needs_key,
)
from upstox_bot.api.openapi import install_openapi
from upstox_bot.api.routers import (
    account,
    audit,
    auth,
    backtests,
    health,
    market,
    options,
    orders,
    positions,
    reports,
    risk,
    session,
    signals,
    strategies,
    trades,
    upstox_auth,
)
from upstox_bot.api.routers import (
    settings as settings_router,
)
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS
from upstox_bot.api.schemas.control import RootRead
from upstox_bot.api.telegram_commands import start_commands
from upstox_bot.config import Settings
from upstox_bot.db.repositories.settings_overrides import (
    SettingsOverrideRepository,
    effective_settings,
)
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.live_events import EventHub

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from upstox_bot.runtime.control import ControlPort, LiveStats

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI = "/static/vendor/swagger-ui"

DESCRIPTION = f"""
REST API of upstox-bot: positions, trades, signals, orders, the account, risk, settings and
strategies of the running bot, and a live WebSocket stream at /api/v1/ws.

Every /api/v1 route and /metrics need an API key in the `{HEADER}` header (create one with
`upstox-bot apikey create`); a read key may call every GET and the stream, a trade key may
also change state. The stream takes the key in its first message, never in the URL. Money is
in rupees as exact decimals (strings in JSON); times are ISO-8601 with a time zone. Every
error is {{"error": code, "detail": text}}; an invalid request (422) adds "errors", naming
each field at fault. Bodies are strict JSON (no NaN or Infinity) of at most
API_MAX_BODY_BYTES (1 MB by default; 413 beyond).
"""


def _with_overrides(app: FastAPI, settings: Settings) -> Settings:
    try:
        with session_scope(app.state.sessions) as session:
            overrides = SettingsOverrideRepository(session).get_all()
    except SQLAlchemyError:
        log.warning("settings.overrides_unreadable", exc_info=True)
        return settings
    return effective_settings(settings, overrides) if overrides else settings


async def _relay_events(app: FastAPI, redis_url: str) -> None:
    """The distributed harness: what the workers publish in Redis goes to this API's stream."""
    from upstox_bot.worker.events import subscribe_events

    while True:
        try:
            async for channel, data in subscribe_events(redis_url):
                app.state.hub.publish(channel, data)
        except Exception:  # a lost connection: reconnect (events meanwhile are gone)
            log.warning("events.relay_lost", exc_info=True)
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(ws.publish_snapshots(app)),
        asyncio.create_task(ws.close_revoked(app)),
    ]
    if app.state.relay_url:
        tasks.append(asyncio.create_task(_relay_events(app, app.state.relay_url)))
    commands = start_commands(app)
    if commands is not None:
        tasks.append(asyncio.create_task(commands.run()))
    app.state.telegram_commands = commands
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if commands is not None:
            await commands.close()
        if app.state.own_db_engine is not None:  # the bot disposes of its own engine
            app.state.own_db_engine.dispose()


def create_app(
    settings: Settings,
    *,
    control: ControlPort | None = None,
    sessions: sessionmaker[Session] | None = None,
    hub: EventHub | None = None,
    stats: LiveStats | None = None,
) -> FastAPI:
    """Build the app over a database (the running bot's, or settings.database_url).

    Args:
        control: where controls go and the running kernel's view comes from (the embedded
            bot's own port, or the distributed harness's through Redis); None: no kernel.
        sessions: the bot's session factory (embedded); None builds one from the settings.
        hub: the event hub the bot publishes to (a new one if not given), served at /api/v1/ws.
        stats: the embedded market loop's figures (ticks, pace), for /health and /metrics.
    """
    app = FastAPI(
        title="upstox-bot",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,  # served below from the package's own copy of Swagger UI
        redoc_url=None,  # ReDoc would load from a CDN: blank offline
    )
    app.state.control = control
    app.state.stats = stats
    # Without a kernel in this process, the distributed workers' events come through Redis.
    app.state.relay_url = settings.REDIS_URL if sessions is None and settings.REDIS_URL else None
    app.state.hub = hub or EventHub()
    app.state.latest_snapshots = {}
    app.state.ws_streams = {}  # open live streams and their key ids (api/ws.py)
    app.state.own_db_engine = None
    if sessions is not None:
        app.state.sessions = sessions
    else:
        app.state.own_db_engine = make_engine(settings.database_url)
        app.state.sessions = make_session_factory(app.state.own_db_engine)
    app.state.settings = _with_overrides(app, settings)
    # Middleware, innermost first: authentication, then the body limits, CORS, and the
    # security headers on every response (api/middleware.py).
    app.state.auth_limiter = FailedAuthLimiter(
        settings.API_AUTH_FAILURE_LIMIT, settings.API_AUTH_FAILURE_WINDOW_SECONDS
    )
    app.add_middleware(AuthenticationMiddleware, state=app.state, limiter=app.state.auth_limiter)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.API_MAX_BODY_BYTES,
        timeout_s=settings.API_BODY_TIMEOUT_SECONDS,
    )
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[HEADER, "Content-Type"],
            expose_headers=["X-Total-Count", "Retry-After"],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    install_error_handlers(app)
    install_openapi(app, needs_key)
    app.include_router(health.router)
    v1 = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(current_key)],
        responses=ERRORS,
        route_class=GuardedRoute,
    )
    for module in (
        positions,
        trades,
        signals,
        orders,
        account,
        reports,
        market,
        strategies,
        settings_router,
        risk,
        session,
        audit,
        auth,
        options,
    ):
        v1.include_router(module.router)
    v1.include_router(backtests.router)
    v1.include_router(backtests.data_router)

    @v1.get("", response_model=RootRead, tags=["health"])
    def api_root() -> RootRead:
        """Where to start."""
        return RootRead(
            name="upstox-bot",
            version=__version__,
            docs="/docs",
            health="/health",
            stream="/api/v1/ws",
        )

    app.include_router(v1)
    app.include_router(ws.router, prefix="/api/v1")
    app.include_router(upstox_auth.router, prefix="/api/v1")  # browser login: no API key

    # The dashboard: a static page that asks for the key itself, so it needs none to load.
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def root() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        # Swagger UI from static/vendor/swagger-ui (vendor/README.md): it works offline.
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="upstox-bot API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        )

    return app
