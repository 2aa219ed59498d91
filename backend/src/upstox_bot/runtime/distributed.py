"""The distributed harness's transport: feed shards, their tick batches in Redis, sessions.

Design (docs/deployment.md tells the whole story):

- A feed task holds one market-data shard under a Redis lease: a simulated market played at a
  chosen speed (or flat out), or one live Upstox V3 connection. It cuts the shard's ticks into
  numbered batches, stores each in Redis (fenced by the lease), puts a note on the account's
  wake stream and enqueues the batch's ingest (sampled ticks into PostgreSQL).
- The account's kernel lives in the one worker holding the account's lease (runtime/holder.py):
  woken by the note, it applies the batch tick by tick exactly as the embedded loop does, and
  commits with its checkpoint (each shard's cursor). Controls reach it on its control stream.
- A batch is kept by its feed until it is applied and ingested: if Redis loses batches, notes
  or tasks (a restart, a flush), the feed stores and announces them again; duplicates change
  nothing.

The result: one seed gives the same orders, trades and positions as the embedded harness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time as walltime
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from itertools import islice
from typing import Any, cast

import redis
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.api.hub import tick_payload
from upstox_bot.clock import NseCalendar
from upstox_bot.config import MarketSource, Settings
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    IST,
    Instrument,
    Tick,
    datetime_to_ms,
    ms_to_datetime,
)
from upstox_bot.errors import ConfigError
from upstox_bot.feed.sampling import TickSampler
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.feed.upstox_v3 import (
    DecodedFrame,
    FeedMode,
    FeedUnauthorized,
    FrameType,
    MarketDataFeedV3Client,
    plan_shards,
)
from upstox_bot.monitoring.alerts import AlertDispatcher, AlertKind, dispatcher_from_settings
from upstox_bot.runtime import components
from upstox_bot.runtime.store import with_db_retry
from upstox_bot.upstox.token_store import TokenGuard, token_store_from_settings
from upstox_bot.worker import events
from upstox_bot.worker.locks import Lease
from upstox_bot.worker.state import (
    Keys,
    decode_tick,
    encode_ticks,
    redis_client,
)

__all__ = ["with_db_retry"]  # the workers' units of work wait out PostgreSQL restarts

log = logging.getLogger(__name__)

BATCH_TICKS = 2000  # ticks per feed batch (at most)
PACED_CUT_S = 0.02  # a paced feed cuts a batch of what is due at least this often
PAUSE_READ_S = 0.05  # how often a feed looks whether the session is paused
WAKE_MAXLEN = 10_000
HOLDER_LAUNCH_MS = 5_000
SESSION_MINUTES = 375
BATCH_TTL_S = 6 * 3600
FEED_LEASE_MS = 5000
FEED_WINDOW = 16  # batches the feed may run ahead of the engine
FEED_STALL_S = 3.0  # no engine progress for this long: store and enqueue the batches again
FEED_FINAL_WAIT_S = 600.0
MARKET_SIM = "sim"
MARKET_UPSTOX = "upstox"

Enqueue = Callable[[str, Sequence[Any]], None]


# --- per-process resources ------------------------------------------------------------------


class Resources:
    """The settings, database sessions and Redis client of one worker process (built lazily)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.REDIS_URL:
            raise ConfigError("the distributed harness needs REDIS_URL")
        self.settings = settings
        self.redis_url = settings.REDIS_URL
        self._sessions: sessionmaker[Session] | None = None
        self._redis: redis.Redis | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            url = self.settings.database_url
            options: dict[str, Any] = {}
            if url.startswith("postgresql"):
                # No server-side prepared statements: the partial-index upsert of positions
                # (ON CONFLICT ... WHERE status = $n) cannot infer its index under a generic
                # plan, which psycopg switches to after five executions on a connection.
                options["connect_args"] = {"prepare_threshold": None}
            self._sessions = make_session_factory(make_engine(url, **options))
        return self._sessions

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_client(self.redis_url)
        return self._redis

    def close(self) -> None:
        """Dispose of the database engine and the Redis client (a worker process ending)."""
        if self._sessions is not None:
            bind = self._sessions.kw.get("bind")
            if bind is not None:
                bind.dispose()
            self._sessions = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def sim_universe(settings: Settings) -> tuple[dict[str, Instrument], dict[str, int]]:
    """The simulated market's instruments (traded by the share: lot 1) and previous closes."""
    universe = load_universe(limit=settings.SIM_SYMBOLS)
    instruments = {i.instrument_key: replace(i, lot_size=1) for i, _ in universe}
    return instruments, {i.instrument_key: p for i, p in universe}


def account_instruments(resources: Resources) -> dict[str, Instrument]:
    """What the account's engine trades: the simulated universe, or (MARKET=upstox) the ranked
    F&O stocks of the stored universe, as the embedded harness picks them.

    Raises:
        ConfigError: MARKET=upstox and the universe was never refreshed.
    """
    settings = resources.settings
    if settings.MARKET is not MarketSource.UPSTOX:
        return sim_universe(settings)[0]
    from upstox_bot.runtime.live_market import universe_instruments

    ranked = universe_instruments(resources.sessions, settings.SIM_SYMBOLS)
    return {i.instrument_key: i for i in ranked}


def calendar_of(settings: Settings, sessions: sessionmaker[Session] | None = None) -> NseCalendar:
    return components.trading_calendar(settings, sessions)


# --- the feed ----------------------------------------------------------------------------------


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
        from upstox_bot.worker.locks import Lease

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
        events.publish(self.redis, ((events.TICKS, tick_payload(t)) for t in latest.values()))

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


# --- the live feed: one Upstox Market Data Feed V3 connection per shard -----------------------

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
        events.publish(self.client, [(events.ACCOUNT, {"alert": kind.value, "message": message})])
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
            events.publish(self.redis, ((events.TICKS, tick_payload(t)) for t in latest.values()))
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


def request_stop(client: redis.Redis, shard: str) -> None:
    """Ask a live shard to end its session now (it sends its last batch and finishes)."""
    client.hset(Keys.feed_state(shard), "stop_requested", "1")


def run_feed_shard(resources: Resources, spec: FeedSpec, enqueue: Enqueue) -> str:
    """Play a simulated shard or hold a live one, as its market says."""
    if spec.live:
        return LiveFeedShard(resources, spec, enqueue).run()
    return FeedShard(resources, spec, enqueue).run()


# --- session control (beat, CLI, tests) ---------------------------------------------------------


def start_session(client: redis.Redis, enqueue: Enqueue, specs: Sequence[FeedSpec]) -> None:
    """Register a session's shards (the supervisor restarts a shard whose feed task died) and
    enqueue a feed task for each."""
    for spec in specs:
        client.hset(Keys.shards, spec.shard, json.dumps(spec.to_json()))
        enqueue("feed.run_shard", (spec.to_json(),))


def supervise_feeds(client: redis.Redis, enqueue: Enqueue) -> list[str]:
    """Enqueue a feed task for every registered shard that is unfinished and unleased, and a
    holder for every account with such a shard and no holder.

    A shard whose feed worker died loses its lease within FEED_LEASE_MS, an account whose
    holder died within the holder's lease; the next supervision starts a new task that resumes
    from the shard's progress or the account's checkpoint. Returns the shards started.
    """
    started = []
    registry = cast(dict[bytes, bytes], client.hgetall(Keys.shards))
    for shard_b, raw in registry.items():
        spec = FeedSpec.from_json(json.loads(raw))
        progress = feed_progress(client, spec.account, spec.shard)
        if progress.finished:
            client.hdel(Keys.shards, shard_b)
            continue
        # The account's holder too: a worker killed while holding it loses its lease.
        ensure_holder(client, enqueue, spec.account)
        if client.exists(Keys.feed_lease(spec.shard)):
            continue
        if client.set(Keys.feed_launch(spec.shard), "1", nx=True, px=FEED_LEASE_MS * 2):
            enqueue("feed.run_shard", (spec.to_json(),))
            started.append(spec.shard)
    return started


def upstox_session_specs(
    resources: Resources, trading_date: date, *, end_ms: int | None = None
) -> list[FeedSpec]:
    """The live shards of one session: the ranked universe over as few V3 connections as the
    plan's limits allow (`plan_shards`), one feed task each.

    Raises:
        ConfigError: the universe was never refreshed, or it exceeds the plan's limits.
    """
    settings = resources.settings
    keys = list(account_instruments(resources))
    return [
        FeedSpec(
            account=settings.ACCOUNT_NAME,
            shard=f"{trading_date.isoformat()}-live-{n}",
            trading_date=trading_date,
            seed=0,
            minutes=375,
            instrument_keys=tuple(part),
            market=MARKET_UPSTOX,
            end_ms=end_ms,
        )
        for n, part in enumerate(plan_shards(keys, LIVE_MODE))
    ]


def sim_session_specs(
    settings: Settings,
    trading_date: date,
    *,
    shards: int = 1,
    minutes: float = 375,
    speed: float | None = None,
    seed: int | None = None,
    session_id: str | None = None,
) -> list[FeedSpec]:
    """The shards of one simulated session of the account (instruments dealt round-robin).

    Args:
        speed: simulated seconds per wall second (None: as fast as the holder applies).
        seed: the market's seed (default SIM_SEED).
        session_id: makes the shards' names unique to this start (a session started by hand;
            the day's scheduled session is named by its date alone).
    """
    instruments, _ = sim_universe(settings)
    keys = list(instruments)
    seed = settings.SIM_SEED if seed is None else seed
    prefix = trading_date.isoformat() if session_id is None else f"{trading_date}-{session_id}"
    if shards == 1:
        parts: list[tuple[str, ...]] = [()]
    else:
        parts = [tuple(keys[i::shards]) for i in range(shards)]
    return [
        FeedSpec(
            account=settings.ACCOUNT_NAME,
            shard=f"{prefix}-{n}",
            trading_date=trading_date,
            seed=seed,
            minutes=minutes,
            instrument_keys=part,
            speed=speed,
        )
        for n, part in enumerate(parts)
    ]


# --- ingest -------------------------------------------------------------------------------------


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


def now_ist() -> datetime:
    """Wall-clock time in Asia/Kolkata (beat tasks run on the real clock)."""
    return datetime.now(IST)


def market_ms_to_ist(ms: int) -> datetime:
    return ms_to_datetime(ms).astimezone(IST)


def shard_open_ms(client: redis.Redis, shard: str) -> int | None:
    """The session open (epoch ms) of the shard's feed, once its feed has started."""
    raw = cast(bytes | None, client.hget(Keys.feed_state(shard), "open_ms"))
    return int(raw) if raw is not None else None


# --- starting a session (CLI, API, beat) --------------------------------------------------------


def running_shards(client: redis.Redis, account: str) -> list[str]:
    """The account's registered shards that have not finished."""
    registry = cast(dict[bytes, bytes], client.hgetall(Keys.shards))
    out = []
    for shard, raw in registry.items():
        spec = FeedSpec.from_json(json.loads(raw))
        if spec.account == account and not feed_progress(client, account, spec.shard).finished:
            out.append(shard.decode())
    return sorted(out)


def start_sim_session(
    settings: Settings,
    client: redis.Redis,
    enqueue: Enqueue,
    *,
    trading_date: date | None = None,
    speed: float | None = None,
    seed: int | None = None,
    minutes: float = 375,
    shards: int = 1,
    sessions: sessionmaker[Session] | None = None,
) -> list[FeedSpec]:
    """Start a simulated session of the account on the workers, at any hour.

    Args:
        trading_date: the session to simulate; default today, or the next trading day.
        speed: simulated seconds per wall second (None: as fast as the account applies them).
        sessions: the database, to refuse a date before the account's last session.

    Raises:
        Conflict: a session of the account is still running, or it traded a later date.
        ConfigError: the date is not a trading day, or the arguments are out of range.
    """
    from upstox_bot.errors import Conflict

    if speed is not None and not 0 < speed <= 1_000_000:
        raise ConfigError(f"speed must be within (0, 1000000], got {speed}")
    if not 0 < minutes <= SESSION_MINUTES:
        raise ConfigError(f"minutes must be within (0, {SESSION_MINUTES}], got {minutes}")
    if not 1 <= shards <= 16:
        raise ConfigError(f"shards must be within 1-16, got {shards}")
    calendar = calendar_of(settings)
    day = trading_date or datetime.now(IST).date()
    if trading_date is None and not calendar.is_trading_day(day):
        day = calendar.next_trading_day(day)
    if not calendar.is_trading_day(day):
        raise ConfigError(f"{day.isoformat()} is not an NSE trading day")
    if sessions is not None:
        from upstox_bot.runtime.store import AccountStore

        checkpoint = AccountStore(
            sessions, settings.ACCOUNT_NAME, harness="distributed"
        ).checkpoint()
        if checkpoint is not None and checkpoint.trading_date > day:
            raise Conflict(
                f"account {settings.ACCOUNT_NAME!r} has traded up to "
                f"{checkpoint.trading_date.isoformat()}: a session on {day.isoformat()} would "
                "run its clock backwards; use a later date or another ACCOUNT_NAME"
            )
    running = running_shards(client, settings.ACCOUNT_NAME)
    if running:
        raise Conflict(
            f"a session of account {settings.ACCOUNT_NAME!r} is running ({', '.join(running)}): "
            "stop it first (`upstox-bot session stop`)"
        )
    specs = sim_session_specs(
        settings,
        day,
        shards=shards,
        minutes=minutes,
        speed=speed,
        seed=seed,
        session_id=uuid.uuid4().hex[:8],
    )
    client.delete(Keys.session_pause(settings.ACCOUNT_NAME))
    start_session(client, enqueue, specs)
    return specs
