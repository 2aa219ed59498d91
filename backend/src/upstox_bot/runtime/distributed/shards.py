"""A feed shard's bookkeeping in Redis: its spec, its progress, the notes and tasks per batch."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

import redis

from upstox_bot.clock import MINUTE_MS, SESSION_MS
from upstox_bot.domain import Tick
from upstox_bot.worker.state import Keys

log = logging.getLogger(__name__)

BATCH_TICKS = 2000  # ticks per feed batch (at most)
WAKE_MAXLEN = 10_000
HOLDER_LAUNCH_MS = 5_000
SESSION_MINUTES = SESSION_MS // MINUTE_MS  # the regular session, 09:15 to 15:30
BATCH_TTL_S = 6 * 3600
FEED_LEASE_MS = 5000
FEED_WINDOW = 16  # batches the feed may run ahead of the engine
FEED_STALL_S = 3.0  # no engine progress for this long: store and enqueue the batches again
FEED_FINAL_WAIT_S = 600.0
MARKET_SIM = "sim"
MARKET_UPSTOX = "upstox"

Enqueue = Callable[[str, Sequence[Any]], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedSpec:
    """One shard of one session: what the feed task plays (simulated) or holds (live)."""

    account: str
    shard: str
    trading_date: date
    seed: int
    minutes: float  # simulated minutes from the open (375 = the whole session)
    instrument_keys: tuple[str, ...] = ()  # empty: the whole simulated universe
    batch_ticks: int = BATCH_TICKS
    market: str = MARKET_SIM  # "sim": play the simulated market; "upstox": the live V3 feed
    end_ms: int | None = None  # live shards: when the session ends (epoch ms; None = the close)
    speed: float | None = None  # simulated seconds per wall second; None plays flat out

    @property
    def live(self) -> bool:
        return self.market == MARKET_UPSTOX

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "shard": self.shard,
            "trading_date": self.trading_date.isoformat(),
            "seed": self.seed,
            "minutes": self.minutes,
            "instrument_keys": list(self.instrument_keys),
            "batch_ticks": self.batch_ticks,
            "market": self.market,
            "end_ms": self.end_ms,
            "speed": self.speed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeedSpec:
        return cls(
            account=str(data["account"]),
            shard=str(data["shard"]),
            trading_date=date.fromisoformat(str(data["trading_date"])),
            seed=int(data["seed"]),
            minutes=float(data["minutes"]),
            instrument_keys=tuple(data.get("instrument_keys") or ()),
            batch_ticks=int(data.get("batch_ticks") or BATCH_TICKS),
            market=str(data.get("market") or MARKET_SIM),
            end_ms=int(data["end_ms"]) if data.get("end_ms") is not None else None,
            speed=float(data["speed"]) if data.get("speed") is not None else None,
        )


@dataclass(slots=True)
class FeedProgress:
    """How far a shard got: batches made, the last one (when all are made), batches applied."""

    next_seq: int = 1
    ticks_done: int = 0
    last_seq: int | None = None
    applied_seq: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.last_seq is not None and self.applied_seq >= self.last_seq


def feed_progress(client: redis.Redis, account: str, shard: str) -> FeedProgress:
    """The shard's progress as Redis shows it (the feed's state and the engine's cursor)."""
    state = {
        k.decode(): v.decode()
        for k, v in cast(dict[bytes, bytes], client.hgetall(Keys.feed_state(shard))).items()
    }
    cursor = cast(bytes | None, client.hget(Keys.engine(account), f"cursor:{shard}"))
    applied = 0
    if cursor is not None:
        seq, _index = (int(x) for x in cursor.decode().split(":"))
        applied = seq - 1
    return FeedProgress(
        next_seq=int(state.get("next_seq", 1)),
        ticks_done=int(state.get("ticks_done", 0)),
        last_seq=int(state["last_seq"]) if state.get("last_seq") else None,
        applied_seq=applied,
        extra=state,
    )


def announce(client: redis.Redis, enqueue: Enqueue, spec: FeedSpec, seq: int) -> None:
    """Tell the account's holder a batch is stored (a note on its wake stream), and have the
    batch's ticks stored for the record (an ingest task, off the trading path). The shard is
    registered again each time: a Redis that lost its data learns it back."""
    account, shard = spec.account, spec.shard
    try:
        client.hset(Keys.shards, shard, json.dumps(spec.to_json()))
        client.xadd(
            Keys.wake(account), {"shard": shard, "seq": seq}, maxlen=WAKE_MAXLEN, approximate=True
        )
    except redis.RedisError:
        log.warning("feed.wake_failed", extra={"shard": shard, "seq": seq})
    enqueue("ingest.ticks", (account, shard, seq))


def ensure_holder(client: redis.Redis, enqueue: Enqueue, account: str) -> bool:
    """Start the account's holder unless one holds the account (or was just started)."""
    if client.exists(Keys.account_lock(account)):
        return False
    if client.set(Keys.holder_launch(account), "1", nx=True, px=HOLDER_LAUNCH_MS):
        enqueue("orders.hold_account", (account,))
        return True
    return False


def previous_ticks(last_ts: dict[str, int], chunk: Sequence[Tick]) -> dict[str, int]:
    """Each instrument's tick before `chunk` (for the ingest's sampling), and move `last_ts`
    past the chunk."""
    keys = {tick.instrument_key for tick in chunk}
    prev = {k: last_ts[k] for k in keys if k in last_ts}
    for tick in chunk:
        last_ts[tick.instrument_key] = tick.ts_ms
    return prev


def ingested_seqs(client: redis.Redis, shard: str) -> set[int]:
    """The batches of a shard whose ticks are stored."""
    raw = cast(set[bytes], client.smembers(f"{Keys.ingest_sampled(shard)}:seqs"))
    return {int(x) for x in raw}


def request_stop(client: redis.Redis, shard: str) -> None:
    """Ask a live shard to end its session now (it sends its last batch and finishes)."""
    client.hset(Keys.feed_state(shard), "stop_requested", "1")


def shard_open_ms(client: redis.Redis, shard: str) -> int | None:
    """The session open (epoch ms) of the shard's feed, once its feed has started."""
    raw = cast(bytes | None, client.hget(Keys.feed_state(shard), "open_ms"))
    return int(raw) if raw is not None else None
