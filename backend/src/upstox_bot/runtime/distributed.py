"""The distributed harness: the same Engine driven by Celery tasks over Redis and PostgreSQL.

Design (docs/deployment.md tells the whole story):

- A feed task holds one market-data shard under a Redis lease. It cuts the shard's ticks into
  numbered batches, stores each in Redis, and enqueues `orders.apply_ticks` for it.
- The account's Engine lives in whichever orders worker holds the account lock. An apply task
  takes the lock, gets the engine (this process's, if it is the one that wrote the newest
  checkpoint; otherwise rebuilt from PostgreSQL), and applies every available batch in order,
  tick by tick, exactly as the embedded loop does: paper fills first, then `Engine.on_tick`,
  then placement of the intents. The paper broker's book is in Redis
  (`PersistentPaperBroker`), so an order accepted before a crash is found by its tag.
- Every commit writes an `engine.checkpoint` audit record in the same transaction: which tick
  of which batch the engine has applied. After a crash the next engine resumes exactly there,
  with the state the database held at that commit; nothing is applied twice and nothing lost.

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
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar, cast

import redis
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.api.hub import (
    account_payload,
    candle_payload,
    order_payload,
    signal_payload,
    tick_payload,
)
from upstox_bot.clock import NseCalendar
from upstox_bot.config import MarketSource, Settings
from upstox_bot.db.models import AccountMode, SignalRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.db.repositories.rate_limits import RateLimitLogRepository
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    IST,
    AccountSnapshot,
    AuditRecord,
    Candle,
    ExitReason,
    Fill,
    Instrument,
    Order,
    Position,
    RiskDecision,
    Signal,
    SignalStatus,
    Tick,
    Trade,
    datetime_to_ms,
    ms_to_datetime,
    rupees_to_paise,
)
from upstox_bot.errors import ConfigError, NotFound
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
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.runtime import components
from upstox_bot.runtime.embedded import MarketClock
from upstox_bot.trading.brokers.persistent import PersistentPaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.journal import BufferedJournal
from upstox_bot.trading.ports import Journal
from upstox_bot.trading.recovery import (
    DurableOrderExecutor,
    RecoveredState,
    restore,
    warm_candles,
)
from upstox_bot.upstox.token_store import TokenGuard, token_store_from_settings
from upstox_bot.worker import events
from upstox_bot.worker.locks import Lease
from upstox_bot.worker.state import (
    Keys,
    RedisOrderRateLimiter,
    RedisPaperBook,
    decode_tick,
    encode_ticks,
    position_to_dict,
    redis_client,
)

log = logging.getLogger(__name__)

CHECKPOINT_EVENT = "engine.checkpoint"
BATCH_TICKS = 2000  # ticks per feed batch
BATCH_TTL_S = 6 * 3600
FEED_LEASE_MS = 5000
FEED_WINDOW = 16  # batches the feed may run ahead of the engine
FEED_STALL_S = 3.0  # no engine progress for this long: store and enqueue the batches again
FEED_FINAL_WAIT_S = 600.0
DB_RETRY_S = 90.0  # ride out a PostgreSQL restart before giving a commit up
WARM_UP_MAX_MS = 5 * 60_000  # how far back a rebuilt engine replays ticks into its candles
MARKET_SIM = "sim"
MARKET_UPSTOX = "upstox"
LATENCY_SAMPLES = 1000  # candle-close-to-order latencies kept in Redis per account

Enqueue = Callable[[str, Sequence[Any]], None]
_T = TypeVar("_T")


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
        self.runtimes: dict[str, AccountRuntime] = {}

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


def with_db_retry(work: Callable[[], _T], *, deadline_s: float = DB_RETRY_S) -> _T:
    """Run a unit of work, retrying while the database is unreachable (a restart).

    Raises:
        sqlalchemy.exc.DBAPIError: the database stayed away past the deadline, or the error is
            not a lost connection.
    """
    deadline = walltime.monotonic() + deadline_s
    pause = 0.1
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not _is_disconnect(exc) or walltime.monotonic() >= deadline:
                raise
            log.warning("db.unavailable", extra={"retry_in_s": pause})
            walltime.sleep(pause)
            pause = min(pause * 2, 2.0)


def _is_disconnect(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(
        word in text
        for word in ("connection", "terminating", "shutting down", "starting up", "closed")
    )


# --- the journal that also collects live events -----------------------------------------------


class EventJournal:
    """A Journal that forwards every call and collects the live events to publish after commit."""

    def __init__(self, inner: Journal, symbols: Mapping[str, str]) -> None:
        self.inner = inner
        self.symbols = symbols
        self.events: list[events.Event] = []
        self.positions_changed = False

    def candle(self, candle: Candle) -> None:
        self.inner.candle(candle)
        self.events.append(
            (events.CANDLES, candle_payload(candle, self.symbols.get(candle.instrument_key)))
        )

    def signal(self, signal: Signal, status: SignalStatus) -> None:
        self.inner.signal(signal, status)
        self.events.append((events.SIGNALS, signal_payload(signal, status)))

    def signal_status(self, signal_id: str, status: SignalStatus) -> None:
        self.inner.signal_status(signal_id, status)
        self.events.append((events.SIGNALS, {"signal_id": signal_id, "status": status.value}))

    def risk_decision(self, decision: RiskDecision) -> None:
        self.inner.risk_decision(decision)

    def order(self, order: Order) -> None:
        self.inner.order(order)
        self.events.append((events.ORDERS, order_payload(order)))

    def order_sent(self, client_order_id: str, at: datetime) -> None:
        self.inner.order_sent(client_order_id, at)

    def fill(self, fill: Fill) -> None:
        self.inner.fill(fill)

    def position_opened(self, position: Position) -> None:
        self.inner.position_opened(position)
        self.positions_changed = True

    def position_updated(self, position: Position) -> None:
        self.inner.position_updated(position)
        self.positions_changed = True

    def position_closed(self, position: Position, trade: Trade) -> None:
        self.inner.position_closed(position, trade)
        self.positions_changed = True

    def account(self, snapshot: AccountSnapshot) -> None:
        self.inner.account(snapshot)
        self.events.append((events.ACCOUNT, account_payload(snapshot)))

    def audit(self, record: AuditRecord) -> None:
        self.inner.audit(record)


class _CandleBatchingJournal:
    """Replays into a SqlJournal but keeps the candles for one multi-row upsert at the end
    (candles reference nothing, so writing them last in the transaction changes nothing)."""

    def __init__(self, inner: SqlJournal) -> None:
        self.inner = inner
        self.candles: list[Candle] = []

    def candle(self, candle: Candle) -> None:
        self.candles.append(candle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --- the account's engine in a worker ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The newest engine.checkpoint of an account: who wrote it and how far each shard is."""

    token: str
    number: int
    clock_ms: int
    cursors: Mapping[str, tuple[int, int]]  # shard -> (next batch, next tick in it)
    first_seen: tuple[str, ...] = ()  # instruments in the order the engine first saw a tick

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            token=str(data["token"]),
            number=int(data["number"]),
            clock_ms=int(data["clock_ms"]),
            cursors={k: (int(v[0]), int(v[1])) for k, v in dict(data["cursors"]).items()},
            first_seen=tuple(data.get("first_seen") or ()),
        )


def load_checkpoint(session: Session, account: str) -> Checkpoint | None:
    """The newest checkpoint the account's engine committed, or None (never ran)."""
    found = AuditRepository(session).find(
        entity="engine", entity_id=account, event=CHECKPOINT_EVENT, limit=1
    )
    return Checkpoint.from_data(found[0].data) if found else None


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


class AccountRuntime:
    """One account's Engine, paper broker and executor inside the worker holding its lock.

    Build it with `AccountRuntime.load`, which restores the state the database holds; call its
    methods only while holding the account lock.
    """

    def __init__(
        self,
        resources: Resources,
        account: str,
        *,
        clock_ms: int,
        after_place: Callable[[Order], None] | None = None,
    ) -> None:
        settings = resources.settings
        self.resources = resources
        self.account = account
        self.token = uuid.uuid4().hex
        self.number = 0  # checkpoints this instance committed
        self.cursors: dict[str, tuple[int, int]] = {}
        # wall seconds from the feed cutting the batch with a candle's closing tick to the
        # entry orders it caused being sent (the embedded harness's candle_to_order_s)
        self.latencies: list[float] = []
        self.first_seen: dict[str, None] = {}  # ordered: the aggregator's instrument order
        self.clock = MarketClock(clock_ms)
        self.instruments = account_instruments(resources)
        symbols = {k: i.trading_symbol for k, i in self.instruments.items()}
        self.buffer = BufferedJournal()
        self.journal = EventJournal(self.buffer, symbols)
        client = resources.redis
        capital, kill = self._prepare_account()
        limits = components.risk_limits(settings, capital_paise=capital)
        self.engine = Engine(
            config=EngineConfig(
                account=account,
                capital_paise=capital,
                candle_interval_s=settings.CANDLE_INTERVAL_MINUTES * 60,
                signal_cooldown_s=settings.SIGNAL_COOLDOWN_MINUTES * 60,
                kill_switch_square_off=settings.KILL_SWITCH_SQUARE_OFF,
            ),
            instruments=self.instruments,
            strategy=components.strategy(settings),
            risk=RiskManager(
                limits,
                RedisOrderRateLimiter(
                    limits.max_orders_per_minute,
                    limits.min_order_interval_s,
                    client=client,
                    account=account,
                ),
                kill,
                calendar=calendar_of(settings, resources.sessions),
            ),
            exits=ExitManager(components.exit_rules(settings)),
            journal=self.journal,
            charges=components.charges_model(settings),
            clock=self.clock,
        )
        self.broker = PersistentPaperBroker(
            book=RedisPaperBook(client, account),
            clock=self.clock,
            slippage_bps=settings.SLIPPAGE_BPS,
            tick_size_paise=lambda key: self.instruments[key].tick_size_paise,
        )
        self.executor = DurableOrderExecutor(
            engine=self.engine,
            broker=self.broker,
            journal=self.journal,
            commit=self.flush,
            fills_of=self.broker.fills_of,
            after_place=after_place,
        )

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        resources: Resources,
        account: str,
        *,
        default_clock_ms: int,
        after_place: Callable[[Order], None] | None = None,
    ) -> AccountRuntime:
        """The account's engine as the database holds it: fresh, or restored at its checkpoint.

        Args:
            default_clock_ms: market time to start at when the engine never ran (epoch ms).
        """

        def read() -> Checkpoint | None:
            with session_scope(resources.sessions) as session:
                return load_checkpoint(session, account)

        checkpoint = with_db_retry(read)
        clock_ms = checkpoint.clock_ms if checkpoint is not None else default_clock_ms
        runtime = with_db_retry(
            lambda: cls(resources, account, clock_ms=clock_ms, after_place=after_place)
        )
        if checkpoint is not None:
            runtime.cursors = dict(checkpoint.cursors)
            runtime.first_seen = dict.fromkeys(checkpoint.first_seen)
            runtime._recover()
        runtime.flush()  # claims the account: the newest checkpoint is now this instance's
        log.info(
            "engine.loaded",
            extra={
                "account": account,
                "restored": checkpoint is not None,
                "positions": len(runtime.engine.positions),
                "orders_in_flight": len(runtime.engine.orders),
            },
        )
        return runtime

    def is_current(self, checkpoint: Checkpoint | None) -> bool:
        """Whether this instance wrote the newest checkpoint (no other worker moved on since)."""
        if checkpoint is None:
            return False
        return checkpoint.token == self.token and checkpoint.number == self.number

    def _prepare_account(self) -> tuple[int, KillSwitch]:
        settings = self.resources.settings
        today = self.clock.now().astimezone(IST).date()
        with session_scope(self.resources.sessions) as session:
            now = datetime.now(UTC)
            SymbolRepository(session).upsert_many(self.instruments.values(), now)
            account = AccountRepository(session).get_or_create(
                self.account,
                mode=AccountMode.PAPER,
                starting_capital_paise=rupees_to_paise(settings.ACCOUNT_SIZE),
                at=now,
            )
            earlier = TradeRepository(session, self.account).net_pnl_paise(
                date(1970, 1, 1), today - timedelta(days=1)
            )
            kill = KillSwitch(active=account.kill_switch, reason=account.kill_switch_reason or "")
            return account.starting_capital_paise + earlier, kill

    def _recover(self) -> None:
        engine = self.engine
        now = self.clock.now()
        today = now.astimezone(IST).date()
        day_start = datetime.combine(today, datetime.min.time(), tzinfo=IST)

        def read() -> RecoveredState:
            with session_scope(self.resources.sessions) as session:
                return self._read_state(session, today, day_start, now)

        state = with_db_retry(read)
        # The open candles and the latest prices were in the dead engine's memory only:
        # rebuild them from the tick batches it applied last (still in Redis).
        recent, shard_of, shard_ms = self._recent_ticks()
        prices = warm_candles(engine, recent, first_seen=list(self.first_seen))
        state.last_prices = {**state.last_prices, **prices}
        # A shard behind the clock may have had a candle closed early (a minute flush driven
        # by another shard's ticks); keep each series before its shard's current minute, so that
        # a candle the aggregator closes again is not older than the series' last.
        fallback = min(shard_ms.values(), default=self.clock.now_ms())
        state.candles = {
            key: [
                c
                for c in candles
                if c.start_ms < _minute(shard_ms.get(shard_of.get(key, ""), fallback))
            ]
            for key, candles in state.candles.items()
        }
        restore(engine, state)
        for order in list(engine.orders.values()):
            self.executor.resolve(order)

    def _recent_ticks(self) -> tuple[list[Tick], dict[str, str], dict[str, int]]:
        """The ticks applied in the few minutes before the checkpoint, oldest first: back to
        the first minute in which every instrument of the newest minute had traded before.

        Returns:
            The ticks; the shard of each instrument seen; each shard's time (epoch ms of the
            last tick it applied).
        """
        client = self.resources.redis
        clock_ms = self.clock.now_ms()
        earliest = _minute(clock_ms) - WARM_UP_MAX_MS
        collected: list[Tick] = []
        shard_of: dict[str, str] = {}
        shard_ms: dict[str, int] = {}
        for shard, (seq, index) in self.cursors.items():
            wanted: set[str] = set()
            seen_before: set[str] = set()
            ticks: list[Tick] = []
            done = False
            minute_start: int | None = None
            while seq >= 1 and not done:
                raw = cast(bytes | None, client.get(Keys.batch(self.account, shard, seq)))
                if raw is None:
                    break
                rows = json.loads(raw)["ticks"]
                upto = index if index else len(rows)
                for row in reversed(rows[:upto]):
                    tick = decode_tick(row)
                    if minute_start is None:
                        shard_ms[shard] = tick.ts_ms
                        minute_start = _minute(tick.ts_ms)
                    if tick.ts_ms < earliest:
                        done = True
                        break
                    shard_of.setdefault(tick.instrument_key, shard)
                    if tick.ts_ms >= minute_start:
                        wanted.add(tick.instrument_key)
                    else:
                        seen_before.add(tick.instrument_key)
                        if wanted <= seen_before:
                            done = True
                            break
                    ticks.append(tick)
                seq, index = seq - 1, 0
            collected.extend(reversed(ticks))
        collected.sort(key=lambda t: t.ts_ms)  # stable: ties keep their shard order
        return collected, shard_of, shard_ms

    def _read_state(
        self, session: Session, today: date, day_start: datetime, now: datetime
    ) -> RecoveredState:
        account = self.account
        engine = self.engine
        trades = TradeRepository(session, account).find(
            start_date=today, end_date=today, limit=100_000
        )
        snapshot = AccountRepository(session).latest_snapshot(account, on_or_before=today)
        interval_s = engine.config.candle_interval_s
        candles: dict[str, list[Candle]] = {}
        last_prices: dict[str, int] = {}
        repo = CandleRepository(session)
        for key in self.instruments:
            base = repo.find(key, 60, since=day_start, until=now)
            if base:
                last_prices[key] = base[-1].close_paise
            series = base if interval_s == 60 else repo.find(key, interval_s, since=day_start)
            candles[key] = series[-engine.config.series_capacity :]
        cooldowns: dict[str, int] = {}
        rows = session.execute(
            select(SignalRow.instrument_key, SignalRow.created_at, SignalRow.type, SignalRow.status)
            .where(SignalRow.account == account, SignalRow.created_at >= day_start)
            .order_by(SignalRow.created_at)
        )
        for key, created_at, kind, status in rows:
            if kind in ("entry_long", "entry_short") and status != SignalStatus.IGNORED.value:
                cooldowns[key] = datetime_to_ms(created_at)
        horizon = max(60, engine.risk.limits.min_order_interval_s)
        positions = PositionRepository(session, account).open_positions()
        queued: dict[str, ExitReason] = {}
        audits = AuditRepository(session)
        for position in positions:
            if position.exit_pending:
                continue
            triggered = audits.find(
                entity="position",
                entity_id=position.instrument_key,
                event="exit.triggered",
                since=position.entry_at,
                limit=1,
            )
            if triggered:
                queued[position.instrument_key] = ExitReason(str(triggered[0].data["reason"]))
        return RecoveredState(
            positions=positions,
            queued_exits=queued,
            unfinished_orders=OrderRepository(session, account).unfinished(),
            realised_paise=sum(t.net_pnl_paise for t in trades),
            charges_paise=sum(t.charges_paise for t in trades),
            trades=len(trades),
            orders=OrderRepository(session, account).count(since=day_start),
            loss_limit_hit=bool(
                snapshot and snapshot.trading_date == today.isoformat() and snapshot.loss_limit_hit
            ),
            last_prices=last_prices,
            candles=candles,
            last_entry_signal_ms=cooldowns,
            sent_ms=RateLimitLogRepository(session, account).sent_ms_since(
                now - timedelta(seconds=horizon)
            ),
        )

    # --- committing -------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit what the engine recorded with a checkpoint, then publish and mirror to Redis."""
        number = self.number + 1
        checkpoint = AuditRecord(
            event=CHECKPOINT_EVENT,
            entity="engine",
            entity_id=self.account,
            at=self.clock.now(),
            data={
                "token": self.token,
                "number": number,
                "clock_ms": self.clock.now_ms(),
                "cursors": {k: list(v) for k, v in self.cursors.items()},
                "first_seen": list(self.first_seen),
            },
            actor="worker",
        )

        def commit() -> int:
            with session_scope(self.resources.sessions) as session:
                journal = _CandleBatchingJournal(SqlJournal(session, self.account))
                count = self.buffer.replay_into(journal)
                # One row per key: a multi-row upsert must not touch a row twice.
                latest = {(c.instrument_key, c.interval_s, c.start_ms): c for c in journal.candles}
                CandleRepository(session).upsert_many(latest.values())
                AuditRepository(session).add(checkpoint)
            return count

        count = with_db_retry(commit)
        self.buffer.forget(count)
        self.number = number
        self._after_commit()

    def _after_commit(self) -> None:
        client = self.resources.redis
        published = list(self.journal.events)
        self.journal.events.clear()
        if self.journal.positions_changed:
            self.journal.positions_changed = False
            snapshot = [position_to_dict(p) for p in self.engine.positions.values()]
            published.append((events.POSITIONS, snapshot))
            try:
                pipe = client.pipeline(transaction=True)
                pipe.delete(Keys.positions(self.account))
                if snapshot:
                    pipe.hset(
                        Keys.positions(self.account),
                        mapping={p["instrument_key"]: json.dumps(p) for p in snapshot},
                    )
                pipe.execute()
            except redis.RedisError:
                log.warning("positions.snapshot_failed", extra={"account": self.account})
        if self.latencies:
            samples, self.latencies = self.latencies, []
            try:
                pipe = client.pipeline(transaction=False)
                pipe.lpush(Keys.latencies(self.account), *(f"{x:.6f}" for x in samples))
                pipe.ltrim(Keys.latencies(self.account), 0, LATENCY_SAMPLES - 1)
                pipe.execute()
            except redis.RedisError:
                log.warning("latency.record_failed", extra={"account": self.account})
        try:
            mirror: dict[str, str] = {
                "token": self.token,
                "clock_ms": str(self.clock.now_ms()),
                **{f"cursor:{k}": f"{s}:{i}" for k, (s, i) in self.cursors.items()},
            }
            client.hset(Keys.engine(self.account), mapping=mirror)  # type: ignore[arg-type]
        except redis.RedisError:
            log.warning("engine.mirror_failed", extra={"account": self.account})
        events.publish(client, published)

    # --- applying the market --------------------------------------------------------------

    def drain(
        self, shard: str, *, budget_s: float, stop: Callable[[], bool] = lambda: False
    ) -> bool:
        """Apply the shard's stored batches in order from the cursor, for up to `budget_s`.

        Args:
            stop: checked between batches; True stops (the account lock was lost).

        Returns:
            True when it stopped early with batches possibly left (enqueue another drain).
        """
        deadline = walltime.monotonic() + budget_s
        client = self.resources.redis
        while True:
            if stop():
                return True
            seq, index = self.cursors.get(shard, (1, 0))
            raw = cast(bytes | None, client.get(Keys.batch(self.account, shard, seq)))
            if raw is None:
                return False
            self.apply_batch(shard, json.loads(raw), index)
            if walltime.monotonic() >= deadline:
                return True

    def apply_batch(self, shard: str, batch: Mapping[str, Any], start: int) -> None:
        """Apply one batch from tick `start`, as the embedded loop applies the same ticks."""
        engine, executor, broker, clock = self.engine, self.executor, self.broker, self.clock
        seen = self.first_seen
        seq = int(batch["seq"])
        rows = batch["ticks"]
        if "entries_paused" in batch:  # live batches: the feed's view of the Upstox token
            engine.risk.entries_paused = batch["entries_paused"]
        cut_at = batch.get("cut_at")  # wall time (epoch s) the feed cut the batch
        open_ms = batch.get("open_ms")
        if start == 0 and open_ms is not None:
            clock.advance_to(open_ms)
            self.cursors[shard] = (seq, 0)
            executor.execute(engine.on_timer(open_ms))
        for index in range(start, len(rows)):
            tick = decode_tick(rows[index])
            if tick.instrument_key not in seen:
                seen[tick.instrument_key] = None
            clock.advance_to(tick.ts_ms)
            if broker.working_count:
                executor.apply_fills(broker.on_tick(tick))
            intents = engine.on_tick(tick)
            if intents:
                # The tick is done once its intents are on record: resume after it.
                self.cursors[shard] = (seq, index + 1)
                executor.execute(intents)
                if cut_at is not None and any(i.signal_id for i in intents):
                    self.latencies.append(walltime.time() - float(cut_at))
        timer_ms = batch.get("timer_ms")
        if timer_ms is not None:  # live batches carry the engine's once-a-second timer
            clock.advance_to(int(timer_ms))
            executor.execute(engine.on_timer(clock.now_ms()))
        close_ms = batch.get("close_ms")
        if close_ms is not None:
            clock.advance_to(close_ms)
            executor.execute(engine.on_timer(close_ms))
            self.journal.account(engine.snapshot())
        self.cursors[shard] = (seq + 1, 0)
        self.flush()

    # --- commands -------------------------------------------------------------------------

    def request_exit(self, instrument_key: str, reason: ExitReason, *, by: str) -> bool:
        """Queue the exit of an open position and place what is due; False without a position."""
        try:
            self.engine.request_exit(instrument_key, reason)
        except NotFound:
            return False
        self.journal.audit(
            AuditRecord(
                event="position.close_requested",
                entity="position",
                entity_id=instrument_key,
                at=self.clock.now(),
                data={"reason": reason.value},
                actor=by,
            )
        )
        self.executor.execute(self.engine.on_timer(self.clock.now_ms()))
        self.flush()
        return True

    def set_kill_switch(self, active: bool, *, reason: str, by: str) -> None:
        """Turn the kill switch on or off (on may square off), and place what is due."""
        self.engine.set_kill_switch(active, reason=reason, by=by)
        self.executor.execute(self.engine.on_timer(self.clock.now_ms()))
        self.flush()

    def reconcile(self) -> dict[str, int]:
        """Compare the orders in flight with the broker's view by tag and settle differences."""
        checked = settled = 0
        for order in list(self.engine.orders.values()):
            checked += 1
            known = self.broker.find_by_tag(order.client_order_id)
            if known is None or known.status is not order.status:
                self.executor.resolve(order)
                settled += 1
        self.executor.resolve_unresolved()
        self.flush()
        return {"checked": checked, "settled": settled}


def _minute(ms: int) -> int:
    return ms - ms % 60_000


def fault_hook_from_env() -> Callable[[Order], None] | None:
    """Test-only fault injection: UPSTOX_BOT_FAULT=kill-after-place SIGKILLs the worker process
    right after the broker accepted an order, before the database records it as accepted."""
    if os.environ.get("UPSTOX_BOT_FAULT") != "kill-after-place":
        return None

    def kill(order: Order) -> None:
        import signal

        log.error("fault.kill_after_place", extra={"client_order_id": order.client_order_id})
        os.kill(os.getpid(), signal.SIGKILL)

    return kill


def account_runtime(
    resources: Resources, account: str, *, default_clock_ms: int | None
) -> AccountRuntime | None:
    """This process's engine for the account if it is current, else one rebuilt from the store.

    Call it holding the account lock. Returns None when the engine never ran and no start time
    is given (nothing to act on).
    """

    def read() -> Checkpoint | None:
        with session_scope(resources.sessions) as session:
            return load_checkpoint(session, account)

    cached = resources.runtimes.get(account)
    checkpoint = with_db_retry(read)
    if cached is not None and cached.is_current(checkpoint):
        return cached
    if checkpoint is None and default_clock_ms is None:
        return None
    start_ms = checkpoint.clock_ms if checkpoint is not None else cast(int, default_clock_ms)
    runtime = AccountRuntime.load(
        resources, account, default_clock_ms=start_ms, after_place=fault_hook_from_env()
    )
    resources.runtimes[account] = runtime
    return runtime


def drop_runtime(resources: Resources, account: str) -> None:
    """Forget this process's engine (after an error): the next task rebuilds it from the store."""
    resources.runtimes.pop(account, None)


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


class FeedShard:
    """Plays one shard under its lease: batches to Redis, an apply task per batch, kicks on
    stall, at most FEED_WINDOW batches ahead of the engine."""

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

    def run(self) -> str:
        """Play the shard to its end; returns "done", "held" (another task has the lease),
        "lost" (the lease was taken over) or "stalled" (the engine stopped applying)."""
        spec = self.spec
        from upstox_bot.worker.locks import Lease

        lease = Lease(self.redis, Keys.feed_lease(spec.shard), ttl_ms=FEED_LEASE_MS)
        if not lease.acquire():
            log.info("feed.lease_held", extra={"shard": spec.shard})
            return "held"
        lease.start_renewing()
        try:
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

    def _play(self, lost: Callable[[], bool]) -> str:
        spec = self.spec
        progress = feed_progress(self.redis, spec.account, spec.shard)
        if progress.last_seq is not None:
            return self._wait(0, lost, final=True)
        ticks, open_ms, close_ms = self._ticks()
        end_ms = open_ms + int(spec.minutes * 60_000)
        stream = islice(ticks, progress.ticks_done, None)
        seq, done = progress.next_seq, progress.ticks_done
        finished = False
        while not finished:
            chunk: list[Tick] = []
            for tick in stream:
                if tick.ts_ms >= end_ms:
                    finished = True
                    break
                chunk.append(tick)
                if len(chunk) >= spec.batch_ticks:
                    break
            else:
                finished = True
            batch = {
                "seq": seq,
                "shard": spec.shard,
                "open_ms": open_ms if seq == 1 else None,
                "close_ms": close_ms if finished else None,
                "cut_at": walltime.time(),
                "ticks": encode_ticks(chunk),
            }
            raw = json.dumps(batch, separators=(",", ":")).encode()
            done += len(chunk)
            self._store(seq, raw)
            state = {"next_seq": seq + 1, "ticks_done": done, "open_ms": open_ms}
            if finished:
                state["last_seq"] = seq
            self.redis.hset(Keys.feed_state(spec.shard), mapping=state)  # type: ignore[arg-type]
            self.enqueue("orders.apply_ticks", (spec.account, spec.shard, seq))
            self.enqueue("ingest.ticks", (spec.account, spec.shard, seq))
            self._publish_ticks(chunk)
            self.outstanding[seq] = raw
            seq += 1
            if lost():
                log.error("feed.lease_lost", extra={"shard": spec.shard})
                return "lost"
            outcome = self._wait(FEED_WINDOW, lost)
            if outcome != "ok":
                return outcome
        return self._wait(0, lost, final=True)

    def _store(self, seq: int, raw: bytes) -> None:
        self.redis.set(Keys.batch(self.spec.account, self.spec.shard, seq), raw, ex=BATCH_TTL_S)

    def _publish_ticks(self, chunk: Sequence[Tick]) -> None:
        latest: dict[str, Tick] = {}
        for tick in chunk:
            latest[tick.instrument_key] = tick
        events.publish(self.redis, ((events.TICKS, tick_payload(t)) for t in latest.values()))

    def _wait(self, window: int, lost: Callable[[], bool], *, final: bool = False) -> str:
        """Wait until at most `window` batches are unapplied; kick the engine when it stalls."""
        spec = self.spec
        started = last_move = walltime.monotonic()
        last_applied = -1
        while True:
            progress = feed_progress(self.redis, spec.account, spec.shard)
            for seq in [s for s in self.outstanding if s <= progress.applied_seq]:
                del self.outstanding[seq]
            if final and progress.finished:
                return "done"
            if not final and len(self.outstanding) <= window:
                return "ok"
            now = walltime.monotonic()
            if progress.applied_seq != last_applied:
                last_applied, last_move = progress.applied_seq, now
            elif now - last_move > FEED_STALL_S:
                # Apply messages or batches may have been lost (a Redis restart): store the
                # unapplied batches again and enqueue a drain; a duplicate drain is a no-op.
                for seq, raw in self.outstanding.items():
                    self._store(seq, raw)
                self.enqueue(
                    "orders.apply_ticks", (spec.account, spec.shard, progress.applied_seq + 1)
                )
                log.warning(
                    "feed.engine_stalled",
                    extra={"shard": spec.shard, "applied_seq": progress.applied_seq},
                )
                last_move = now
            if lost():
                return "lost"
            if final and now - started > FEED_FINAL_WAIT_S:
                return "stalled"
            walltime.sleep(0.02)


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
        self.enqueue("orders.apply_ticks", (spec.account, spec.shard, seq))
        if chunk:
            self.enqueue("ingest.ticks", (spec.account, spec.shard, seq))
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
        for seq in [s for s in self.outstanding if s <= progress.applied_seq]:
            del self.outstanding[seq]
        now = walltime.monotonic()
        if progress.applied_seq != self._applied:
            self._applied, self._applied_moved = progress.applied_seq, now
        elif self.outstanding and now - self._applied_moved > FEED_STALL_S:
            # Apply messages or batches may have been lost (a Redis restart): store the
            # unapplied batches again and enqueue a drain; a duplicate drain is a no-op.
            if lease.held():
                for seq, raw in self.outstanding.items():
                    self.redis.set(Keys.batch(spec.account, spec.shard, seq), raw, ex=BATCH_TTL_S)
            self.enqueue("orders.apply_ticks", (spec.account, spec.shard, progress.applied_seq + 1))
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
    """Enqueue a feed task for every registered shard that is unfinished and unleased.

    A shard whose feed worker died loses its lease within FEED_LEASE_MS; the next supervision
    starts a new feed task that resumes from the shard's progress. Returns the shards started.
    """
    started = []
    registry = cast(dict[bytes, bytes], client.hgetall(Keys.shards))
    for shard_b, raw in registry.items():
        spec = FeedSpec.from_json(json.loads(raw))
        progress = feed_progress(client, spec.account, spec.shard)
        if progress.finished:
            client.hdel(Keys.shards, shard_b)
            continue
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
    settings: Settings, trading_date: date, *, shards: int = 1, minutes: float = 375
) -> list[FeedSpec]:
    """The shards of one simulated session of the account (instruments dealt round-robin)."""
    instruments, _ = sim_universe(settings)
    keys = list(instruments)
    seed = settings.SIM_SEED
    if shards == 1:
        parts: list[tuple[str, ...]] = [()]
    else:
        parts = [tuple(keys[i::shards]) for i in range(shards)]
    return [
        FeedSpec(
            account=settings.ACCOUNT_NAME,
            shard=f"{trading_date.isoformat()}-{n}",
            trading_date=trading_date,
            seed=seed,
            minutes=minutes,
            instrument_keys=part,
        )
        for n, part in enumerate(parts)
    ]


# --- ingest -------------------------------------------------------------------------------------


def ingest_batch(resources: Resources, account: str, shard: str, seq: int) -> int:
    """Store the batch's ticks sampled every TICK_STORE_INTERVAL_SECONDS per instrument.

    Returns how many ticks were stored (0 for a batch already ingested or gone).
    """
    interval_ms = resources.settings.TICK_STORE_INTERVAL_SECONDS * 1000
    client = resources.redis
    raw = cast(bytes | None, client.get(Keys.batch(account, shard, seq)))
    if not interval_ms or raw is None:
        return 0
    key = Keys.ingest_sampled(shard)
    if client.sismember(f"{key}:seqs", str(seq)):
        return 0  # a duplicate delivery
    sampled = {k.decode(): int(v) for k, v in cast(dict[bytes, bytes], client.hgetall(key)).items()}
    keep: list[Tick] = []
    for row in json.loads(raw)["ticks"]:
        tick = decode_tick(row)
        last = sampled.get(tick.instrument_key)
        if last is None or tick.ts_ms - last >= interval_ms:
            sampled[tick.instrument_key] = tick.ts_ms
            keep.append(tick)

    def store() -> None:
        with session_scope(resources.sessions) as session:
            TickRepository(session).insert_many(keep)

    if keep:
        with_db_retry(store)
    pipe = client.pipeline(transaction=True)
    if sampled:
        pipe.hset(key, mapping=sampled)  # type: ignore[arg-type]
    pipe.sadd(f"{key}:seqs", seq)
    pipe.expire(key, BATCH_TTL_S)
    pipe.expire(f"{key}:seqs", BATCH_TTL_S)
    pipe.execute()
    return len(keep)


def now_ist() -> datetime:
    """Wall-clock time in Asia/Kolkata (beat tasks run on the real clock)."""
    return datetime.now(IST)


def market_ms_to_ist(ms: int) -> datetime:
    return ms_to_datetime(ms).astimezone(IST)


def shard_open_ms(client: redis.Redis, shard: str) -> int | None:
    """The session open (epoch ms) of the shard's feed, once its feed has started."""
    raw = cast(bytes | None, client.hget(Keys.feed_state(shard), "open_ms"))
    return int(raw) if raw is not None else None
