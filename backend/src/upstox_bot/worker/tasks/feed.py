"""Queue "feed": one long task per market-data shard, held under the shard's lease."""

from __future__ import annotations

import logging
from typing import Any

from upstox_bot.runtime.distributed import FeedShard, FeedSpec
from upstox_bot.worker.app import enqueue, resources, task

log = logging.getLogger(__name__)


@task("feed.run_shard", acks_late=True)
def run_shard(spec: dict[str, Any]) -> str:
    """Play one shard for its session; a second delivery finds the lease held and exits.

    Returns "done", "held", "lost" or "stalled" (see FeedShard.run).
    """
    feed = FeedSpec.from_json(spec)
    outcome = FeedShard(resources(), feed, enqueue).run()
    log.info("feed.shard_finished", extra={"shard": feed.shard, "outcome": outcome})
    return outcome
