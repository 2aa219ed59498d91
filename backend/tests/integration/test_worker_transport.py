"""The workers' Redis transport (worker/transport.py): a channel whose connection kombu already
let go of fails as a lost connection, which Celery survives, and its message stays in Redis."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu.connection import Connection

from upstox_bot.worker.transport import TRANSPORT


def test_closing_a_channel_after_its_connection_fails_as_a_lost_connection(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with Connection(redis_url, transport=TRANSPORT) as connection:  # type: ignore[no-untyped-call]
        queue = connection.SimpleQueue(f"ub-transport-{uuid.uuid4().hex[:8]}")
        queue.put({"task": "feed.run_shard"})
        message = queue.get(timeout=5)  # delivered, not acknowledged (acks_late)
        channel = message.channel
        # What Celery's reconnect does first on a broken broker connection (kombu
        # Connection._do_close_transport): the transport lets go of its connection.
        channel.connection.client = None

        # kombu then puts the unacknowledged message back, on close and on the task's ack:
        # both fail as a lost connection (kombu and Celery ignore those), never AttributeError.
        with pytest.raises(connection.connection_errors, match="broker connection is closed"):
            channel.close()
        with pytest.raises(connection.connection_errors, match="broker connection is closed"):
            message.ack()

    # The message is still in Redis's unacknowledged set: kombu returns it to its queue after
    # the visibility timeout.
    assert redis_client.hlen("unacked") == 1
