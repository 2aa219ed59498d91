"""The workers' Redis transport: kombu's, except that a closed connection fails as one.

When Redis goes away under a worker that holds an unacknowledged message (every task here is
`acks_late`, and the feed and orders tasks run for the whole session), Celery closes the
broker connection and reconnects. On close, kombu (5.7.0) first lets go of the transport's
connection and then tries to put the unacknowledged messages back through it: building a
client from the connection it just dropped raises `AttributeError: 'NoneType' object has no
attribute 'hostname'` (kombu/transport/redis.py `Channel._connparams`). Celery ignores only
connection errors there, so the worker stops ("Unrecoverable error") and a Redis restart takes
it down for good; acknowledging the task's message when it ends fails the same way.

This channel raises `redis.exceptions.ConnectionError` instead, which kombu and Celery already
treat as a lost connection: the close goes on, the worker reconnects, and the messages stay in
Redis's unacknowledged set, from where kombu returns them to their queue after the visibility
timeout (worker/app.py). Every task is idempotent, so a message that comes back is harmless.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # the transport's connection is closed
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


# Celery's `broker_transport` (worker/app.py).
TRANSPORT = f"{__name__}:Transport"
