"""Queue "feed": one long task per market-data shard, held under the shard's lease.

A simulated shard is played to its end; a live shard (market "upstox") holds one Upstox Market
Data Feed V3 connection for the session (runtime/distributed/live_feed.py, LiveFeedShard).
"""

from __future__ import annotations

import logging
from typing import Any

from upstox_bot.runtime.distributed.sessions import run_feed_shard
from upstox_bot.runtime.distributed.shards import FeedSpec
from upstox_bot.worker.app import enqueue, resources, task

log = logging.getLogger(__name__)


@task("feed.run_shard", acks_late=True)
def run_shard(spec: dict[str, Any]) -> str:
    """Play (or, live, hold) one shard for its session; a second delivery finds the lease held
    and exits.

    Returns "done", "held", "lost" or "stalled" (see FeedShard.run and LiveFeedShard.run).
    """
    feed = FeedSpec.from_json(spec)
    outcome = run_feed_shard(resources(), feed, enqueue)
    log.info("feed.shard_finished", extra={"shard": feed.shard, "outcome": outcome})
    return outcome
