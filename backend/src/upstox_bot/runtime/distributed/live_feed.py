"""The live feed: one Upstox Market Data Feed V3 connection per shard, held under a lease."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time as walltime
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from upstox_bot import live_events
from upstox_bot.config import Settings
from upstox_bot.domain import Tick, datetime_to_ms
from upstox_bot.errors import ConfigError
from upstox_bot.live_events import tick_payload
from upstox_bot.monitoring.alerts.dispatcher import AlertDispatcher
from upstox_bot.monitoring.alerts.model import AlertKind
from upstox_bot.monitoring.notifiers import dispatcher_from_settings
from upstox_bot.runtime.distributed.resources import Resources, calendar_of
from upstox_bot.runtime.distributed.shards import (
    BATCH_TTL_S,
    FEED_FINAL_WAIT_S,
    FEED_LEASE_MS,
    FEED_STALL_S,
    Enqueue,
    FeedSpec,
    announce,
    ensure_holder,
    feed_progress,
    ingested_seqs,
    previous_ticks,
)
from upstox_bot.upstox.feed_protocol import DecodedFrame, FeedMode, FrameType
from upstox_bot.upstox.market_feed import MarketDataFeedV3Client
from upstox_bot.upstox.token_store import TokenGuard, token_store_from_settings
from upstox_bot.upstox.websocket import FeedUnauthorized
from upstox_bot.worker import events
from upstox_bot.worker.locks import Lease
from upstox_bot.worker.state import Keys, encode_ticks

log = logging.getLogger(__name__)

LIVE_BATCH_S = 0.05  # a live shard cuts a batch of what arrived this often
LIVE_TIMER_S = 1.0  # ...and at least this often without ticks, carrying the engine's timer
LIVE_RETRY_S = 5.0  # a feed refused for its token (or given up) is tried again this often
LIVE_MODE = FeedMode.FULL  # the embedded harness's mode: LTPC, depth, OHLC, OI

# Store a batch and the shard's state only while the caller's lease value is the current one:
# a holder that lost the lease (paused past its ttl, then woke up) can never write a batch that
# its successor numbers too. ARGV: lease value, batch, ttl (s), then field/value pairs.
_FENCED_STORE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
return 1
"""


def _wall_ms() -> int:
    return int(walltime.time() * 1000)


class FeedAlerts:
    """Where a live feed's alerts go: the configured channels and the API's live stream."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.dispatcher: AlertDispatcher | None = None
        try:
            self.dispatcher = dispatcher_from_settings(settings)
            self.dispatcher.start()
        except ConfigError:
            log.exception("alerts.unavailable")

    def notify(self, kind: AlertKind, message: str, *, key: str | None = None) -> None:
        """Send an alert; never raises."""
        events.publish(
            self.client, [(live_events.ACCOUNT, {"alert": kind.value, "message": message})]
        )
        if self.dispatcher is not None:
            self.dispatcher.notify(kind, message, key=key)

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close()


class LiveFeedShard:
    """Holds one shard's Upstox V3 websocket under the shard's lease for the session.

    What arrives is cut into the same numbered batches the simulated shards make (every
    LIVE_BATCH_S while ticks come, every LIVE_TIMER_S without), each stored under the lease's
    fencing check and followed by an apply and an ingest task. Each batch also tells the engine
    whether entries are paused (the Upstox token is unusable) and, once a second, runs its timer.

    A live feed cannot replay: on a takeover the new holder connects and subscribes at once and
    numbers its batches on from the shard's state; the ticks Upstox sent while nobody held the
    shard are lost (the gap is recorded as `last_gap_ms`). A refused or expired token pauses
    entries and alerts; the shard stays held and connects again once a usable token exists.
    """

    def __init__(
        self,
        resources: Resources,
        spec: FeedSpec,
        enqueue: Enqueue,
        *,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        """Args:
        resources: this process's settings and clients.
        spec: the live shard (market "upstox").
        enqueue: sends a task by name with its arguments (the Celery app's send_task).
        wall_ms: the wall clock (epoch ms).
        """
        self.resources = resources
        self.spec = spec
        self.enqueue = enqueue
        self.wall_ms = wall_ms
        self.redis = resources.redis
        self.outstanding: dict[int, bytes] = {}
        self.pending: list[Tick] = []
        self.seq = 1
        self.ticks_done = 0
        self.last_tick_ms = 0
        self.last_ts: dict[str, int] = {}  # each instrument's last tick so far (epoch ms)
        self._applied = -1
        self._applied_moved = walltime.monotonic()

    def run(self) -> str:
        """Hold the shard until the session ends; returns "done", "held" (another task has the
        lease), "lost" (the lease was taken over) or "stalled" (the engine stopped applying)."""
        from upstox_bot.worker.locks import Lease

        owner = f"{socket.gethostname()}:{os.getpid()}"
        lease = Lease(
            self.redis, Keys.feed_lease(self.spec.shard), ttl_ms=FEED_LEASE_MS, owner=owner
        )
        if not lease.acquire():
            log.info("feed.lease_held", extra={"shard": self.spec.shard})
            return "held"
        lease.start_renewing()
        try:
            ensure_holder(self.redis, self.enqueue, self.spec.account)
            return asyncio.run(self._hold(lease))
        finally:
            lease.release()

    async def _hold(self, lease: Lease) -> str:
        spec, settings = self.spec, self.resources.settings
        progress = feed_progress(self.redis, spec.account, spec.shard)
        if progress.last_seq is not None:
            return await self._wait_applied(lease)
        calendar = calendar_of(settings)
        end_ms = spec.end_ms or datetime_to_ms(calendar.session_close(spec.trading_date))
        state = progress.extra
        self.seq, self.ticks_done = progress.next_seq, progress.ticks_done
        self.last_tick_ms = int(state.get("last_tick_ms") or 0)
        first: dict[str, str | int] = {"holder": lease.value or ""}
        if self.seq == 1:
            first["open_ms"] = self.wall_ms()
        else:
            gap_ms = self.wall_ms() - int(state.get("last_cut_ms") or self.wall_ms())
            first["takeovers"] = int(state.get("takeovers") or 0) + 1
            first["last_gap_ms"] = gap_ms
            log.warning(
                "feed.takeover",
                extra={"shard": spec.shard, "next_seq": self.seq, "gap_ms": gap_ms},
            )
        store = token_store_from_settings(settings, self.resources.sessions)
        alerts = FeedAlerts(self.redis, settings)
        guard = TokenGuard(store, alerts=alerts)

        def token() -> str:
            secret = store.access_token(datetime.now(UTC))
            return secret.get_secret_value() if secret is not None else ""

        def connect() -> MarketDataFeedV3Client:
            return MarketDataFeedV3Client(
                api_base_url=settings.UPSTOX_API_BASE_URL,
                access_token=token,
                clock=lambda: datetime.now(UTC),
                is_market_open=calendar.is_open,
                on_frame=self._on_frame,
            )

        client: MarketDataFeedV3Client | None = None
        retry_at = 0.0
        last_timer = 0.0
        try:
            while True:
                await asyncio.sleep(LIVE_BATCH_S)
                if lease.lost.is_set():
                    log.error("feed.lease_lost", extra={"shard": spec.shard})
                    return "lost"
                now = datetime.now(UTC)
                if client is not None and client.error is not None:
                    error = client.error
                    await client.close()
                    client = None
                    retry_at = walltime.monotonic() + LIVE_RETRY_S
                    if isinstance(error, FeedUnauthorized):
                        guard.report_rejected(now, str(error))
                    else:
                        log.error("feed.live.stopped", extra={"shard": spec.shard})
                allowed = guard.entries_allowed(now)
                if client is None and allowed and walltime.monotonic() >= retry_at:
                    client = connect()
                    await client.start()
                    # Sent as soon as the connection opens, and again on every reconnect.
                    await client.subscribe(list(spec.instrument_keys), LIVE_MODE)
                    log.info("feed.live.connecting", extra={"shard": spec.shard})
                now_ms = self.wall_ms()
                finished = now_ms >= end_ms or self._stop_requested()
                due_timer = walltime.monotonic() - last_timer >= LIVE_TIMER_S
                if not (self.pending or due_timer or finished):
                    continue
                paused = None if allowed else guard.token_state(now).value
                outcome = self._cut(
                    lease, now_ms, paused, timer=due_timer, finished=finished, extra=first
                )
                if outcome == "lost":
                    return "lost"
                if outcome == "ok":
                    first = {}
                    if due_timer:
                        last_timer = walltime.monotonic()
                    if finished:
                        break
                self._check_engine(lease)
        finally:
            if client is not None:
                await client.close()
            alerts.close()
        return await self._wait_applied(lease)

    def _on_frame(self, frame: DecodedFrame) -> None:
        for tick in frame.ticks:
            # The snapshot sent on (re)subscription repeats the last trade: after a takeover
            # it may be a tick the previous holder already batched.
            if frame.type is FrameType.INITIAL_FEED and tick.ts_ms <= self.last_tick_ms:
                continue
            self.pending.append(tick)

    def _stop_requested(self) -> bool:
        try:
            return bool(self.redis.hget(Keys.feed_state(self.spec.shard), "stop_requested"))
        except redis.RedisError:
            return False

    def _cut(
        self,
        lease: Lease,
        now_ms: int,
        paused: str | None,
        *,
        timer: bool,
        finished: bool,
        extra: Mapping[str, str | int],
    ) -> str:
        """Store the ticks that arrived as the next batch; "ok", "lost" or "retry" (Redis)."""
        spec = self.spec
        chunk = self.pending
        seq = self.seq
        batch: dict[str, Any] = {
            "seq": seq,
            "shard": spec.shard,
            "open_ms": extra.get("open_ms"),
            "close_ms": now_ms if finished else None,
            "cut_at": walltime.time(),
            "timer_ms": now_ms if timer else None,
            "entries_paused": paused,
            "prev": previous_ticks(self.last_ts, chunk),
            "ticks": encode_ticks(chunk),
        }
        raw = json.dumps(batch, separators=(",", ":")).encode()
        last_tick_ms = max([self.last_tick_ms, *(t.ts_ms for t in chunk)])
        state: dict[str, str | int] = {
            **extra,
            "next_seq": seq + 1,
            "ticks_done": self.ticks_done + len(chunk),
            "last_tick_ms": last_tick_ms,
            "last_cut_ms": now_ms,
            "entries_paused": paused or "",
        }
        if finished:
            state["last_seq"] = seq
        value = lease.value
        if value is None:
            return "lost"
        pairs = [str(x) for kv in state.items() for x in kv]
        try:
            stored = int(
                self.redis.eval(
                    _FENCED_STORE,
                    3,
                    Keys.feed_lease(spec.shard),
                    Keys.batch(spec.account, spec.shard, seq),
                    Keys.feed_state(spec.shard),
                    value,
                    raw,
                    BATCH_TTL_S,
                    *pairs,
                )
            )
        except redis.RedisError:
            log.warning("feed.store_failed", extra={"shard": spec.shard, "seq": seq})
            return "retry"  # the ticks stay pending for the next cut
        if not stored:
            log.error("feed.fenced_out", extra={"shard": spec.shard, "seq": seq})
            lease.lost.set()
            return "lost"
        self.pending = []
        self.seq, self.ticks_done, self.last_tick_ms = (
            seq + 1,
            self.ticks_done + len(chunk),
            last_tick_ms,
        )
        self.outstanding[seq] = raw
        announce(self.redis, self.enqueue, spec, seq)
        if chunk:
            latest = {t.instrument_key: t for t in chunk}
            events.publish(
                self.redis, ((live_events.TICKS, tick_payload(t)) for t in latest.values())
            )
        return "ok"

    def _check_engine(self, lease: Lease) -> bool:
        """Forget applied batches; re-store and kick the engine when it stalls. True when the
        shard is finished and applied."""
        spec = self.spec
        try:
            progress = feed_progress(self.redis, spec.account, spec.shard)
        except redis.RedisError:
            return False
        ingested = ingested_seqs(self.redis, spec.shard)
        for seq in [s for s in self.outstanding if s <= progress.applied_seq and s in ingested]:
            del self.outstanding[seq]
        now = walltime.monotonic()
        if progress.applied_seq != self._applied:
            self._applied, self._applied_moved = progress.applied_seq, now
        elif self.outstanding and now - self._applied_moved > FEED_STALL_S:
            # Batches, notes or ingest tasks may have been lost (a Redis restart): store the
            # outstanding batches again and announce them; duplicates change nothing.
            if lease.held():
                self.redis.hset(Keys.shards, spec.shard, json.dumps(spec.to_json()))
                for seq, raw in self.outstanding.items():
                    self.redis.set(Keys.batch(spec.account, spec.shard, seq), raw, ex=BATCH_TTL_S)
                    if seq > progress.applied_seq:
                        self.redis.xadd(Keys.wake(spec.account), {"shard": spec.shard, "seq": seq})
                    if seq not in ingested:
                        self.enqueue("ingest.ticks", (spec.account, spec.shard, seq))
            ensure_holder(self.redis, self.enqueue, spec.account)
            log.warning(
                "feed.engine_stalled",
                extra={"shard": spec.shard, "applied_seq": progress.applied_seq},
            )
            self._applied_moved = now
        return progress.finished

    async def _wait_applied(self, lease: Lease) -> str:
        started = walltime.monotonic()
        while not self._check_engine(lease):
            if lease.lost.is_set():
                return "lost"
            if walltime.monotonic() - started > FEED_FINAL_WAIT_S:
                return "stalled"
            await asyncio.sleep(0.05)
        return "done"
