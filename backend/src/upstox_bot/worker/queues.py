"""The Celery queues and which task goes to which: one place for app.py, the CLI and the docs.

feed      one long task per market-data shard (a worker slot per shard, plus spares)
ingest    storing sampled ticks in PostgreSQL, off the trading path
signals   strategy scans over stored candles (what a strategy says about a symbol now)
orders    everything that moves an account: ticks into its engine, exits, kill switch,
          square-off, reconciliation; serialised per account by the account lock
default   beat's housekeeping: feed supervision, universe, token watch, reset, summary
"""

from __future__ import annotations

from kombu.entity import Queue

FEED = "feed"
INGEST = "ingest"
SIGNALS = "signals"
ORDERS = "orders"
DEFAULT = "default"
QUEUES: tuple[str, ...] = (FEED, INGEST, SIGNALS, ORDERS, DEFAULT)


def task_queues() -> tuple[Queue, ...]:
    # kombu is untyped: its Queue constructor has no annotations.
    return tuple(Queue(name, routing_key=name) for name in QUEUES)  # type: ignore[no-untyped-call]


def route(name: str) -> str:
    """The queue of a task: the part of its dotted name before the first dot."""
    queue = name.split(".", 1)[0]
    return queue if queue in QUEUES else DEFAULT


# Task names are "<queue>.<verb>": the route is the prefix.
TASK_ROUTES = {f"{queue}.*": {"queue": queue} for queue in QUEUES}


def parse_queues(text: str) -> list[str]:
    """Queue names from a comma-separated list ("all" = every queue).

    Raises:
        ValueError: an unknown queue name.
    """
    names = [q.strip() for q in text.split(",") if q.strip()]
    if names == ["all"]:
        return list(QUEUES)
    unknown = [q for q in names if q not in QUEUES]
    if unknown or not names:
        raise ValueError(f"unknown queues {unknown}; choose from {', '.join(QUEUES)} or all")
    return names
