"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from upstox_bot import __version__
from upstox_bot.api.deps import BotDep
from upstox_bot.api.schemas.trading import HealthRead

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthRead)
def health(request: Request, bot: BotDep) -> HealthRead:
    """Is the process up, can it reach its database, and is the market loop moving?"""
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # a health check reports, it does not raise
        database = f"error: {type(exc).__name__}"
    return HealthRead(
        status="ok" if database == "ok" else "degraded",
        version=__version__,
        database=database,
        market=None if bot is None else ("finished" if bot.stats.finished else "running"),
        market_time=None if bot is None else bot.stats.market_now,
        ticks=None if bot is None else bot.stats.ticks,
        ticks_per_second=None if bot is None else round(bot.stats.ticks_per_second(), 1),
    )
