"""Live events over Redis pub/sub: the workers publish, the API relays them to its WebSocket.

Channels (Redis names `ub:events:<channel>`), each message a JSON object
`{"channel": <channel>, "data": <payload>}` with the payloads of `upstox_bot.live_events`:

    ticks      sampled ticks (the last of each instrument per feed batch)
    candles    closed candles
    signals    signals and their status changes
    orders     order state changes
    positions  the open positions after a change (a list; empty when flat)
    account    the account's day figures

Publishing is fire-and-forget: an event nobody listens to is dropped, and a publish that fails
(Redis away) is logged and skipped; the database keeps the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis

from upstox_bot.live_events import CHANNELS  # the live stream's channels, declared once
from upstox_bot.worker.state import PREFIX

log = logging.getLogger(__name__)

Event = tuple[str, Any]


def redis_channel(channel: str) -> str:
    """The Redis pub/sub channel of an event channel."""
    return f"{PREFIX}:events:{channel}"


def publish(client: redis.Redis, events: Iterable[Event]) -> int:
    """Publish events in one round trip; returns how many were sent (0 if Redis is away)."""
    pipe = client.pipeline(transaction=False)
    count = 0
    for channel, payload in events:
        pipe.publish(redis_channel(channel), json.dumps({"channel": channel, "data": payload}))
        count += 1
    if not count:
        return 0
    try:
        pipe.execute()
    except redis.RedisError:
        log.warning("events.publish_failed", extra={"events": count})
        return 0
    return count


async def subscribe_events(
    redis_url: str, channels: Collection[str] = CHANNELS
) -> AsyncIterator[tuple[str, Mapping[str, Any] | list[Any]]]:
    """Yield (channel, payload) for every event published on `channels`, until cancelled.

    Feed the API's in-process hub from it: `async for channel, data in subscribe_events(url):
    hub.publish(channel, data)`. A dropped connection raises redis.ConnectionError; the caller
    reconnects (events published meanwhile are gone: pub/sub keeps nothing).

    Raises:
        ValueError: an unknown channel name.
    """
    unknown = sorted(set(channels) - set(CHANNELS))
    if unknown:
        raise ValueError(f"unknown event channels: {', '.join(unknown)}")
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(*(redis_channel(c) for c in channels))
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            try:
                body = json.loads(message["data"])
                yield body["channel"], body["data"]
            except (ValueError, KeyError, TypeError):
                log.warning("events.malformed", extra={"channel": message.get("channel")})
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
