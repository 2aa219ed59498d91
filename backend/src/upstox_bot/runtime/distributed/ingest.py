"""Ingest: a batch's ticks, sampled, into the database for the record (off the trading path)."""

from __future__ import annotations

import json
from typing import cast

from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.session import session_scope
from upstox_bot.feed.sampling import TickSampler
from upstox_bot.runtime.distributed.resources import Resources
from upstox_bot.runtime.distributed.shards import BATCH_TTL_S
from upstox_bot.runtime.store import with_db_retry
from upstox_bot.worker.state import Keys, decode_tick


def ingest_batch(resources: Resources, account: str, shard: str, seq: int) -> int:
    """Store the batch's ticks sampled every TICK_STORE_INTERVAL_SECONDS per instrument.

    Which ticks are kept depends only on the stream (feed/sampling.py): the batch carries each
    instrument's previous tick, so batches are ingested in any order, and one ingested twice
    stores nothing more. Returns how many ticks were stored.
    """
    interval_ms = resources.settings.TICK_STORE_INTERVAL_SECONDS * 1000
    client = resources.redis
    raw = cast(bytes | None, client.get(Keys.batch(account, shard, seq)))
    if raw is None:
        return 0
    batch = json.loads(raw)
    sampler = TickSampler(
        interval_ms, {str(k): int(v) for k, v in (batch.get("prev") or {}).items()}
    )
    keep = [
        tick
        for tick in (decode_tick(row) for row in batch["ticks"])
        if sampler.keep(tick.instrument_key, tick.ts_ms)
    ]

    def store() -> int:
        with session_scope(resources.sessions) as session:
            return TickRepository(session).insert_many(keep)

    stored = with_db_retry(store) if keep else 0
    seqs = f"{Keys.ingest_sampled(shard)}:seqs"
    pipe = client.pipeline(transaction=True)
    pipe.sadd(seqs, seq)
    pipe.expire(seqs, BATCH_TTL_S)
    pipe.execute()
    return stored
