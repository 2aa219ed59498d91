"""The simulated feed: one shard of a seeded market played into numbered batches under a lease."""

from __future__ import annotations

import json
import logging
import time as walltime
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import redis

from upstox_bot import live_events
from upstox_bot.domain import Tick, datetime_to_ms
from upstox_bot.feed.sim import SimulatedMarket
from upstox_bot.live_events import tick_payload
from upstox_bot.runtime.distributed.resources import Resources, calendar_of, sim_universe
from upstox_bot.runtime.distributed.shards import (
    BATCH_TTL_S,
    FEED_FINAL_WAIT_S,
    FEED_LEASE_MS,
    FEED_STALL_S,
    FEED_WINDOW,
    SESSION_MINUTES,
    Enqueue,
    FeedSpec,
    announce,
    ensure_holder,
    feed_progress,
    ingested_seqs,
    previous_ticks,
)
from upstox_bot.worker import events
from upstox_bot.worker.locks import Lease
from upstox_bot.worker.state import Keys, encode_ticks

log = logging.getLogger(__name__)

PACED_CUT_S = 0.02  # a paced feed cuts a batch of what is due at least this often
PAUSE_READ_S = 0.05  # how often a feed looks whether the session is paused


class FeedShard:
    """Plays one simulated shard under its lease: numbered tick batches to Redis (at the
    spec's speed, or flat out), a note to the account's holder per batch, at most FEED_WINDOW
    batches ahead of it; batches not yet applied or not yet ingested are kept to be stored
    and announced again if Redis loses them."""

    def __init__(self, resources: Resources, spec: FeedSpec, enqueue: Enqueue) -> None:
        """Args:
        resources: this process's settings and clients.
        spec: the shard to play.
        enqueue: sends a task by name with its arguments (the Celery app's send_task).
        """
        self.resources = resources
        self.spec = spec
        self.enqueue = enqueue
        self.redis = resources.redis
        self.outstanding: dict[int, bytes] = {}
        self._pause_at: int | None = None
        self._pause_read = 0.0
        self._lost: Callable[[], bool] = lambda: False
        self._stop = False  # the session was asked to end now
        self.last_seq: int | None = None  # the last batch's number, once it is cut
        self.seq = 1  # the next batch's number
        self.done = 0  # ticks stored so far
        self.open_ms: int | None = None
        self.last_ts: dict[str, int] = {}  # each instrument's last tick so far (epoch ms)

    def run(self) -> str:
        """Play the shard to its end; returns "done", "held" (another task has the lease),
        "lost" (the lease was taken over) or "stalled" (the holder stopped applying)."""
        spec = self.spec

        lease = Lease(self.redis, Keys.feed_lease(spec.shard), ttl_ms=FEED_LEASE_MS)
        if not lease.acquire():
            log.info("feed.lease_held", extra={"shard": spec.shard})
            return "held"
        lease.start_renewing()
        try:
            ensure_holder(self.redis, self.enqueue, spec.account)
            return self._play(lease.lost.is_set)
        finally:
            lease.release()

    def _ticks(self) -> tuple[Iterator[Tick], int, int]:
        settings = self.resources.settings
        spec = self.spec
        calendar = calendar_of(settings)
        instruments, prices = sim_universe(settings)
        chosen = (
            [instruments[k] for k in spec.instrument_keys]
            if spec.instrument_keys
            else list(instruments.values())
        )
        market = SimulatedMarket(
            chosen,
            prices,
            seed=spec.seed,
            trading_date=spec.trading_date,
            calendar=calendar,
            mean_tick_interval_ms=settings.SIM_TICK_INTERVAL_MS,
        )
        open_ms = datetime_to_ms(calendar.session_open(spec.trading_date))
        end_ms = open_ms + int(spec.minutes * 60_000)
        close_ms = min(end_ms, datetime_to_ms(calendar.session_close(spec.trading_date)))
        return market.iter_ticks(), open_ms, close_ms

    def _pause(self) -> int | None:
        """The market time the account's feeds wait at, read from Redis now and then (with
        whether the session was asked to stop)."""
        now = walltime.monotonic()
        if now - self._pause_read >= PAUSE_READ_S:
            self._pause_read = now
            try:
                raw = self.redis.get(Keys.session_pause(self.spec.account))
                self._pause_at = int(raw) if raw is not None else None
                self._stop = bool(
                    self.redis.hget(Keys.feed_state(self.spec.shard), "stop_requested")
                )
            except redis.RedisError:
                pass
        return self._pause_at

    def _play(self, lost: Callable[[], bool]) -> str:
        spec = self.spec
        progress = feed_progress(self.redis, spec.account, spec.shard)
        if progress.last_seq is not None:
            return self._wait(0, lost, final=True)
        ticks, open_ms, close_ms = self._ticks()
        end_ms = open_ms + int(spec.minutes * 60_000)
        for tick in islice(ticks, progress.ticks_done):  # played before a takeover
            self.last_ts[tick.instrument_key] = tick.ts_ms
        stream = ticks
        self.seq, self.done = progress.next_seq, progress.ticks_done
        self.open_ms = open_ms
        self._lost = lost
        speed = spec.speed
        pending: list[Tick] = []
        pace_wall, pace_market = walltime.time(), None
        last_cut = walltime.monotonic()
        finished = False
        last_ms = open_ms
        for tick in stream:
            if tick.ts_ms >= end_ms:
                finished = True
                break
            pause_at = self._pause()
            if self._stop:
                # Asked to end now: the session closes at the last tick played.
                close_ms = last_ms
                finished = True
                break
            last_ms = tick.ts_ms
            if pause_at is not None and tick.ts_ms >= pause_at:
                outcome = self._cut(pending, close_ms=None, pace=None)
                pending = []
                if outcome != "ok":
                    return outcome
                outcome = self._hold_at_pause(lost, tick.ts_ms, pause_at)
                if outcome != "ok":
                    return outcome
                pace_wall, pace_market = walltime.time(), None
                last_cut = walltime.monotonic()
            if speed is not None:
                if pace_market is None:
                    pace_wall, pace_market = walltime.time(), tick.ts_ms
                due = pace_wall + (tick.ts_ms - pace_market) / 1000 / speed
                ahead = due - walltime.time()
                if ahead > 0:
                    if pending:
                        outcome = self._cut(
                            pending, close_ms=None, pace=(pace_wall, pace_market, speed)
                        )
                        pending = []
                        last_cut = walltime.monotonic()
                        if outcome != "ok":
                            return outcome
                    walltime.sleep(ahead)
            pending.append(tick)
            full = len(pending) >= spec.batch_ticks
            if full or (speed is not None and walltime.monotonic() - last_cut >= PACED_CUT_S):
                pace = (pace_wall, pace_market, speed) if speed is not None else None
                outcome = self._cut(pending, close_ms=None, pace=pace)
                pending = []
                last_cut = walltime.monotonic()
                if outcome != "ok":
                    return outcome
        else:
            finished = True
        if not finished:  # pragma: no cover - the loop only leaves by the end of the stream
            return "done"
        pace = (pace_wall, pace_market, speed) if speed is not None and pace_market else None
        outcome = self._cut(pending, close_ms=close_ms, pace=pace)
        if outcome != "ok":
            return outcome
        return self._wait(0, lost, final=True)

    def _cut(
        self,
        chunk: list[Tick],
        *,
        close_ms: int | None,
        pace: tuple[float, int | None, float] | None,
    ) -> str:
        """Store `chunk` as the next batch and announce it; then wait while the holder is more
        than FEED_WINDOW batches behind. "ok", or how the wait ended."""
        if not chunk and close_ms is None:
            return "ok"
        spec = self.spec
        seq = self.seq
        batch = {
            "seq": seq,
            "shard": spec.shard,
            "open_ms": self.open_ms if seq == 1 else None,
            "close_ms": close_ms,
            "full_day": spec.minutes >= SESSION_MINUTES and not self._stop,
            "cut_at": walltime.time(),
            "pace": list(pace) if pace is not None and pace[1] is not None else None,
            "prev": previous_ticks(self.last_ts, chunk),
            "ticks": encode_ticks(chunk),
        }
        raw = json.dumps(batch, separators=(",", ":")).encode()
        self.done += len(chunk)
        self._store(seq, raw)
        state: dict[str, str | int] = {"next_seq": seq + 1, "ticks_done": self.done}
        if self.open_ms is not None:
            state["open_ms"] = self.open_ms
        if close_ms is not None:
            state["last_seq"] = self.last_seq = seq
        self.redis.hset(Keys.feed_state(spec.shard), mapping=state)  # type: ignore[arg-type]
        announce(self.redis, self.enqueue, spec, seq)
        self._publish_ticks(chunk)
        self.outstanding[seq] = raw
        self.seq = seq + 1
        if self._lost():
            log.error("feed.lease_lost", extra={"shard": spec.shard})
            return "lost"
        return self._wait(FEED_WINDOW, self._lost)

    def _hold_at_pause(self, lost: Callable[[], bool], tick_ms: int, pause_at: int) -> str:
        """Wait at the pause until it is lifted or moved past the next tick (`tick_ms`).

        The feed state says which pause it holds at ("paused_for"), so that a holder never
        takes a resume not yet seen here for the next pause reached."""
        key = Keys.feed_state(self.spec.shard)
        self.redis.hset(key, mapping={"paused": "1", "paused_for": str(pause_at)})
        try:
            while True:
                if lost():
                    return "lost"
                outcome = self._wait(len(self.outstanding), lost)  # keep batches safe
                if outcome != "ok":
                    return outcome
                self._pause_read = 0.0
                held_at = self._pause()
                if held_at is None or tick_ms < held_at or self._stop:
                    return "ok"
                walltime.sleep(PAUSE_READ_S)
        finally:
            self.redis.hset(key, "paused", "0")

    def _store(self, seq: int, raw: bytes) -> None:
        self.redis.set(Keys.batch(self.spec.account, self.spec.shard, seq), raw, ex=BATCH_TTL_S)

    def _publish_ticks(self, chunk: Sequence[Tick]) -> None:
        latest: dict[str, Tick] = {}
        for tick in chunk:
            latest[tick.instrument_key] = tick
        events.publish(self.redis, ((live_events.TICKS, tick_payload(t)) for t in latest.values()))

    def _wait(self, window: int, lost: Callable[[], bool], *, final: bool = False) -> str:
        """Wait until at most `window` batches are unapplied or uningested; store and announce
        them again (and start a holder) when nothing moves for FEED_STALL_S."""
        spec = self.spec
        started = last_move = walltime.monotonic()
        last_applied = -1
        while True:
            try:
                progress = feed_progress(self.redis, spec.account, spec.shard)
                ingested = ingested_seqs(self.redis, spec.shard)
            except redis.RedisError:
                walltime.sleep(0.1)
                continue
            for seq in [s for s in self.outstanding if s <= progress.applied_seq and s in ingested]:
                del self.outstanding[seq]
            if final and progress.finished and not self.outstanding:
                return "done"
            if not final and len(self.outstanding) <= window:
                return "ok"
            now = walltime.monotonic()
            if progress.applied_seq != last_applied:
                last_applied, last_move = progress.applied_seq, now
            elif now - last_move > FEED_STALL_S:
                # Redis may have lost batches, notes or ingest tasks (a restart, a flush):
                # store and announce what is outstanding again; duplicates change nothing.
                self._resend(progress.applied_seq, ingested)
                log.warning(
                    "feed.engine_stalled",
                    extra={"shard": spec.shard, "applied_seq": progress.applied_seq},
                )
                last_move = now
            if lost():
                return "lost"
            if final and now - started > FEED_FINAL_WAIT_S:
                return "stalled"
            walltime.sleep(0.01)

    def _resend(self, applied_seq: int, ingested: set[int]) -> None:
        spec = self.spec
        try:
            self.redis.hset(Keys.shards, spec.shard, json.dumps(spec.to_json()))
            for seq, raw in self.outstanding.items():
                self._store(seq, raw)
            state: dict[str, str | int] = {"next_seq": self.seq, "ticks_done": self.done}
            if self.open_ms is not None:
                state["open_ms"] = self.open_ms
            if self.last_seq is not None:
                state["last_seq"] = self.last_seq
            self.redis.hset(Keys.feed_state(spec.shard), mapping=state)  # type: ignore[arg-type]
            for seq in self.outstanding:
                if seq > applied_seq:
                    self.redis.xadd(Keys.wake(spec.account), {"shard": spec.shard, "seq": seq})
                if seq not in ingested:
                    self.enqueue("ingest.ticks", (spec.account, spec.shard, seq))
            ensure_holder(self.redis, self.enqueue, spec.account)
        except redis.RedisError:
            log.warning("feed.resend_failed", extra={"shard": spec.shard})
