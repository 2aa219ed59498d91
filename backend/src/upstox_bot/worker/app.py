"""The Celery app of the distributed harness: `celery -A upstox_bot.worker.app worker`.

Nothing is read at import: the broker URL and the rest come from Settings when Celery first
needs its configuration, and each worker process builds its database engine and Redis client
after the fork (`resources()`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from celery import Celery
from celery.signals import setup_logging, worker_process_init

from upstox_bot.config import get_settings
from upstox_bot.runtime.distributed.resources import Resources
from upstox_bot.worker import beat, queues, transport

log = logging.getLogger(__name__)

TASK_MODULES = [
    "upstox_bot.worker.tasks.feed",
    "upstox_bot.worker.tasks.ingest",
    "upstox_bot.worker.tasks.signals",
    "upstox_bot.worker.tasks.orders",
    "upstox_bot.worker.tasks.default",
    "upstox_bot.worker.tasks.backtests",
]
VISIBILITY_TIMEOUT_S = 3600  # an unacked message returns to its queue after this (Redis)


def celery_config() -> dict[str, Any]:
    """Celery settings from the bot's Settings (called lazily, once per process)."""
    settings = get_settings()
    if not settings.REDIS_URL:
        from upstox_bot.errors import ConfigError

        raise ConfigError("the Celery workers need REDIS_URL (the broker)")
    return {
        "broker_url": settings.REDIS_URL,
        # kombu's Redis transport, with a closed connection failing as one (worker/transport.py).
        "broker_transport": transport.TRANSPORT,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "task_queues": queues.task_queues(),
        "task_default_queue": queues.DEFAULT,
        "task_routes": queues.TASK_ROUTES,
        "task_acks_late": True,  # every task is idempotent: redelivery after a crash is safe
        "task_reject_on_worker_lost": False,  # the next apply task resumes from the checkpoint
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "timezone": "Asia/Kolkata",
        "enable_utc": True,
        "beat_schedule": beat.schedule(settings),
    }


app = Celery("upstox_bot", include=TASK_MODULES)
app.add_defaults(celery_config)

_resources: Resources | None = None


def resources() -> Resources:
    """This process's settings, database sessions, Redis client and engines (built lazily)."""
    global _resources
    if _resources is None:
        _resources = Resources(get_settings())
    return _resources


def enqueue(name: str, args: Sequence[Any]) -> None:
    """Send a task by name to its queue (no import of the task module needed)."""
    app.send_task(name, args=list(args), queue=queues.route(name))


_F = TypeVar("_F", bound=Callable[..., Any])


def task(name: str, **options: Any) -> Callable[[_F], _F]:
    """Register a Celery task named "<queue>.<verb>" (a typed `app.task`)."""

    def register(fun: _F) -> _F:
        return cast(_F, app.task(name=name, **options)(fun))

    return register


def _after_fork(**_kwargs: Any) -> None:
    # A forked child must not share the parent's sockets or engines.
    global _resources
    _resources = None


def _logging(**_kwargs: Any) -> None:
    from upstox_bot.config import credential_values
    from upstox_bot.monitoring.logging import configure_logging

    settings = get_settings()
    configure_logging(
        settings.LOG_LEVEL, settings.LOG_FORMAT.value, secrets=credential_values(settings)
    )


worker_process_init.connect(_after_fork, weak=False)
setup_logging.connect(_logging, weak=False)
