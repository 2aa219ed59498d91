"""The beat schedule (Asia/Kolkata, weekdays; holidays are checked by the tasks) and the
scheduler that writes beat's heartbeat to Redis for its health check."""

from __future__ import annotations

import logging
import time as walltime
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery.beat import PersistentScheduler
from celery.schedules import crontab

from upstox_bot.config import Settings
from upstox_bot.worker.state import Keys, redis_client

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
HEARTBEAT_TTL_S = 120
WEEKDAYS = "mon-fri"


def schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat entries: housekeeping around the session, reconciliation during it."""
    square_off = settings.SQUARE_OFF_TIME
    account = settings.ACCOUNT_NAME
    return {
        "universe-refresh": {
            "task": "default.refresh_universe",
            "schedule": crontab(hour=8, minute=30, day_of_week=WEEKDAYS),
        },
        "daily-reset": {
            "task": "default.daily_reset",
            "schedule": crontab(hour=8, minute=45, day_of_week=WEEKDAYS),
        },
        "start-session": {
            "task": "default.start_session",
            "schedule": crontab(hour=9, minute=10, day_of_week=WEEKDAYS),
        },
        "token-watch": {
            "task": "default.watch_token",
            "schedule": crontab(minute="*/15"),
        },
        "feed-supervise": {
            "task": "default.supervise_feeds",
            "schedule": timedelta(seconds=2),
        },
        "square-off": {
            "task": "orders.square_off",
            "schedule": crontab(
                hour=square_off.hour, minute=square_off.minute, day_of_week=WEEKDAYS
            ),
            "args": (account,),
        },
        "end-of-day": {
            "task": "default.end_of_day",
            "schedule": crontab(hour=15, minute=45, day_of_week=WEEKDAYS),
            "args": (account,),
        },
    }


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler that also stamps `ub:beat:heartbeat` every few seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis: redis.Redis | None = None
        self._last_beat = 0.0

    def tick(self, *args: Any, **kwargs: Any) -> float:
        now = walltime.monotonic()
        if now - self._last_beat >= HEARTBEAT_EVERY_S:
            self._last_beat = now
            try:
                if self._redis is None:
                    self._redis = redis_client(str(self.app.conf.broker_url))
                self._redis.set(
                    Keys.beat_heartbeat, datetime.now(UTC).isoformat(), ex=HEARTBEAT_TTL_S
                )
            except redis.RedisError:
                log.warning("beat.heartbeat_failed")
        return min(float(super().tick(*args, **kwargs)), HEARTBEAT_EVERY_S)


def heartbeat_age_s(client: redis.Redis) -> float | None:
    """Seconds since beat's last heartbeat, or None when there is none."""
    raw = client.get(Keys.beat_heartbeat)
    if raw is None:
        return None
    at = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
    return (datetime.now(UTC) - at).total_seconds()
