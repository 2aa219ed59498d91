"""One worker process's resources (settings, database sessions, Redis) and what it trades."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.clock import NseCalendar
from upstox_bot.config import MarketSource, Settings
from upstox_bot.db.session import make_engine, make_session_factory
from upstox_bot.domain import Instrument
from upstox_bot.errors import ConfigError
from upstox_bot.feed.sim import load_universe
from upstox_bot.runtime import components
from upstox_bot.worker.state import redis_client


class Resources:
    """The settings, database sessions and Redis client of one worker process (built lazily)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.REDIS_URL:
            raise ConfigError("the distributed harness needs REDIS_URL")
        self.settings = settings
        self.redis_url = settings.REDIS_URL
        self._sessions: sessionmaker[Session] | None = None
        self._redis: redis.Redis | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            url = self.settings.database_url
            options: dict[str, Any] = {}
            if url.startswith("postgresql"):
                # No server-side prepared statements: the partial-index upsert of positions
                # (ON CONFLICT ... WHERE status = $n) cannot infer its index under a generic
                # plan, which psycopg switches to after five executions on a connection.
                options["connect_args"] = {"prepare_threshold": None}
            self._sessions = make_session_factory(make_engine(url, **options))
        return self._sessions

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_client(self.redis_url)
        return self._redis

    def close(self) -> None:
        """Dispose of the database engine and the Redis client (a worker process ending)."""
        if self._sessions is not None:
            bind = self._sessions.kw.get("bind")
            if bind is not None:
                bind.dispose()
            self._sessions = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def sim_universe(settings: Settings) -> tuple[dict[str, Instrument], dict[str, int]]:
    """The simulated market's instruments (traded by the share: lot 1) and previous closes."""
    universe = load_universe(limit=settings.SIM_SYMBOLS)
    instruments = {i.instrument_key: replace(i, lot_size=1) for i, _ in universe}
    return instruments, {i.instrument_key: p for i, p in universe}


def account_instruments(resources: Resources) -> dict[str, Instrument]:
    """What the account's engine trades: the simulated universe, or (MARKET=upstox) the ranked
    F&O stocks of the stored universe, as the embedded harness picks them.

    Raises:
        ConfigError: MARKET=upstox and the universe was never refreshed.
    """
    settings = resources.settings
    if settings.MARKET is not MarketSource.UPSTOX:
        return sim_universe(settings)[0]
    from upstox_bot.runtime.live_market import universe_instruments

    ranked = universe_instruments(resources.sessions, settings.SIM_SYMBOLS)
    return {i.instrument_key: i for i in ranked}


def calendar_of(settings: Settings, sessions: sessionmaker[Session] | None = None) -> NseCalendar:
    return components.trading_calendar(settings, sessions)
