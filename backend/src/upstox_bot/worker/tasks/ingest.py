"""Queue "ingest": store the sampled ticks of a feed batch in PostgreSQL."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from upstox_bot.runtime.distributed.ingest import ingest_batch
from upstox_bot.worker.app import resources, task


@task(
    "ingest.ticks",
    acks_late=True,
    autoretry_for=(DBAPIError,),
    retry_backoff=True,
    max_retries=5,
)
def ingest_ticks(account: str, shard: str, seq: int) -> int:
    """Store batch `seq` of the shard's ticks, sampled; a second delivery stores nothing."""
    return ingest_batch(resources(), account, shard, seq)
