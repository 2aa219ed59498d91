"""The FastAPI application: /health, /api/v1 routers, error handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse

from upstox_bot import __version__
from upstox_bot.api.errors import install_error_handlers
from upstox_bot.api.routers import health, options, trading
from upstox_bot.config import Settings
from upstox_bot.db.session import make_engine, make_session_factory

if TYPE_CHECKING:
    from upstox_bot.runtime.embedded import EmbeddedBot

DESCRIPTION = """
REST API of upstox-bot: positions, trades, signals, orders and the account of the running bot.
Money is in rupees as exact decimals (strings in JSON); times are ISO-8601 with a time zone.
"""


def create_app(settings: Settings, *, bot: EmbeddedBot | None = None) -> FastAPI:
    """Build the app over the bot's database (embedded) or settings.database_url (alone)."""
    app = FastAPI(title="upstox-bot", version=__version__, description=DESCRIPTION)
    app.state.settings = settings
    app.state.bot = bot
    if bot is not None:
        app.state.sessions = bot.sessions
    else:
        app.state.sessions = make_session_factory(make_engine(settings.database_url))
    install_error_handlers(app)
    app.include_router(health.router)
    v1 = APIRouter(prefix="/api/v1")
    v1.include_router(trading.router)
    v1.include_router(options.router)
    app.include_router(v1)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/api/v1", tags=["health"])
    def api_root() -> dict[str, str]:
        """Where to start."""
        return {"name": "upstox-bot", "version": __version__, "docs": "/docs", "health": "/health"}

    return app
