"""The embedded harness: one process, SQLite (or any DATABASE_URL), the simulated market, the
paper broker, the API server and a live console, all on one asyncio loop.

The market is paced by `speed` (simulated seconds per wall second) but the engine only ever sees
market time: the same seed gives the same trades at any speed.
"""

from __future__ import annotations

import asyncio
import logging
import time as walltime
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from upstox_bot import faults
from upstox_bot.api.hub import (
    CANDLES,
    ORDERS,
    SIGNALS,
    TICKS,
    EventHub,
    candle_payload,
    order_payload,
    signal_payload,
    tick_payload,
)
from upstox_bot.api.settings_changes import settings_with_overrides
from upstox_bot.backtest.data import Dataset, load_bars
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.models import AccountMode
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.checkpoints import Checkpoint, CheckpointRepository
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    IST,
    AccountSnapshot,
    AuditRecord,
    ExitReason,
    Instrument,
    InstrumentKind,
    OrderPurpose,
    OrderStatus,
    Tick,
    datetime_to_ms,
    rupees_to_paise,
)
from upstox_bot.errors import ConfigError
from upstox_bot.feed.derivatives import ChainPricer, DerivativeTicks, WatchSpan
from upstox_bot.feed.replay import ReplayMarket
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.monitoring.alerts import dispatcher_from_settings, end_of_day_summary
from upstox_bot.options.chain import simulate_fno_chain
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime import components
from upstox_bot.runtime.recovery import recover
from upstox_bot.screening.universe import banned_instrument_keys
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.journal import BufferedJournal
from upstox_bot.trading.routing import ContractBook

log = logging.getLogger(__name__)

SESSION_MINUTES = 375  # 09:15 to 15:30
FLUSH_EVERY_WALL_S = 0.25


class MarketClock:
    """Market time for the engine, moved forward by the harness (never backwards)."""

    def __init__(self, start_ms: int) -> None:
        self._ms = start_ms

    def now_ms(self) -> int:
        return self._ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._ms / 1000, tz=UTC)

    def advance_to(self, ms: int) -> None:
        if ms > self._ms:
            self._ms = ms


@dataclass(slots=True)
class RunOptions:
    speed: float
    duration_minutes: float | None  # None = until stopped
    seed: int
    start_date: date | None = None  # first simulated session; default: today or next open
    serve_api: bool = True
    live_console: bool = True
    replay_data: Path | None = None  # bars to replay instead of the simulated market
    market: str = "sim"  # sim | replay | upstox


@dataclass(slots=True)
class LiveStats:
    """What the console and /health show about the running loop."""

    ticks: int = 0
    started_wall: float = field(default_factory=walltime.monotonic)
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=40))
    market_now: datetime | None = None
    trading_date: date | None = None
    finished: bool = False
    last_tick_wall: float | None = None  # monotonic time the last tick was processed
    # wall seconds from the tick that closed a candle to its entry orders being sent
    candle_to_order_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def ticks_per_second(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.recent[0], self.recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class EmbeddedBot:
    """Wires settings into the engine, the simulated market, SQLite and the API."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.options = options
        self.stats = LiveStats()
        self.hub: EventHub | None = None  # the API's live stream, when the API runs here
        # Told of each session's end (the console prints its summary), on the loop thread.
        self.session_ended: Callable[[date, AccountSnapshot], None] | None = None
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        url = settings.database_url
        migrate.upgrade(url)
        self.db_engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.db_engine)
        with session_scope(self.sessions) as session:
            # Settings changed through the API (PATCH /api/v1/settings) outlive a restart; one
            # that no longer builds is skipped (audited, alerted below), never stops the start.
            settings, skipped = settings_with_overrides(session, settings, at=datetime.now(UTC))
        self.settings = settings
        self.calendar = components.trading_calendar(settings, self.sessions)
        self.account = settings.ACCOUNT_NAME
        self.replay: Dataset | None = None
        if options.replay_data is not None:
            self.replay = load_bars(options.replay_data)
            universe = [(series.instrument, int(series.open[0])) for series in self.replay.series]
        elif options.market == "upstox":
            from upstox_bot.runtime.live_market import universe_instruments

            universe = [(i, 0) for i in universe_instruments(self.sessions, settings.SIM_SYMBOLS)]
        else:
            universe = load_universe(limit=settings.SIM_SYMBOLS)
        # The bot trades the stock itself (cash, intraday): one share is the unit. The F&O lot
        # of each stock is kept for trading its future or option.
        self.fno_lot_sizes = {i.instrument_key: i.lot_size for i, _ in universe}
        self.instruments: dict[str, Instrument] = {
            i.instrument_key: replace(i, lot_size=1) for i, _ in universe
        }
        self.prices: dict[str, int] = {i.instrument_key: p for i, p in universe}
        first = options.start_date or self._default_start_date()
        if self.replay is not None:
            dates = [d for d in self._replay_dates() if d >= (options.start_date or date.min)]
            if not dates:
                raise ConfigError(f"{options.replay_data}: no bars on or after {first}")
            first = dates[0]
        elif not self.calendar.is_trading_day(first):
            first = self.calendar.next_trading_day(first)
        self.first_date = first
        unknown = self.calendar.unknown_date_warning(first)
        if unknown is not None:
            log.error("calendar.unknown_date", extra={"date": first.isoformat(), "reason": unknown})
        elif self.calendar.is_provisional(first):
            log.warning("calendar.provisional", extra={"year": first.year})
        if options.market == "upstox":
            # The real market: its time is the wall clock's (and today is the trading date).
            self.first_date = datetime.now(IST).date()
            self.clock = MarketClock(datetime_to_ms(datetime.now(UTC)))
        else:
            self.clock = MarketClock(datetime_to_ms(self.calendar.session_open(first)))
        self.journal = BufferedJournal()
        self._tick_buffer: list[Tick] = []
        self._tick_sampled_at: dict[str, int] = {}
        self._stop = asyncio.Event()
        self.alerts = dispatcher_from_settings(settings)
        self.alerts.start()
        for record in skipped:
            self.alerts.on_audit(record)
        self._session: tuple[date, int] | None = None  # the session being played, and its seed
        self._ticks_done = 0  # ticks of that session fully processed (the checkpoint)
        # --- F&O: trade each stock's future or option (TRADE_INSTRUMENT) -------------------
        self.router: ContractBook | None = None
        self.pricer = ChainPricer()
        if settings.TRADE_INSTRUMENT is not InstrumentKind.EQUITY:
            self.router = ContractBook(
                self.instruments.values(),
                trade=settings.TRADE_INSTRUMENT,
                calendar=self.calendar,
                pricer=self.pricer,
                option_min_days_to_expiry=settings.OPTION_MIN_DAYS_TO_EXPIRY,
                expiry_exit_sessions=settings.EXPIRY_EXIT_SESSIONS,
            )
        # --- end F&O ----------------------------------------------------------------------
        capital, kill = self._prepare_account()
        limits = components.risk_limits(settings, capital_paise=capital)
        self.engine = Engine(
            config=EngineConfig(
                account=self.account,
                capital_paise=capital,
                candle_interval_s=settings.CANDLE_INTERVAL_MINUTES * 60,
                signal_cooldown_s=settings.SIGNAL_COOLDOWN_MINUTES * 60,
                kill_switch_square_off=settings.KILL_SWITCH_SQUARE_OFF,
            ),
            instruments=self.instruments,
            strategy=components.strategy(settings),
            risk=RiskManager(
                limits,
                OrderRateLimiter(limits.max_orders_per_minute, limits.min_order_interval_s),
                kill,
                calendar=self.calendar,
            ),
            exits=ExitManager(components.exit_rules(settings)),
            journal=self.journal,
            charges=components.charges_model(settings),
            clock=self.clock,
            router=self.router,
        )
        self.broker = PaperBroker(
            clock=self.clock,
            slippage_bps=settings.SLIPPAGE_BPS,
            tick_size_paise=self._tick_size_paise,
        )
        self.executor = OrderExecutor(
            engine=self.engine, broker=self.broker, journal=self.journal, before_send=self.flush
        )
        with session_scope(self.sessions) as session:
            # `upstox-bot universe refresh --ban-list` marks them; no new entry in any of them.
            self.engine.risk.banned = frozenset(banned_instrument_keys(session))

    # --- set-up ----------------------------------------------------------------------------

    def _default_start_date(self) -> date:
        return datetime.now(IST).date()

    def _tick_size_paise(self, key: str) -> int:
        contract = self.router.instrument_or_none(key) if self.router is not None else None
        return (contract or self.instruments[key]).tick_size_paise

    def _prepare_account(self) -> tuple[int, KillSwitch]:
        """Create the account and symbols if new; return today's capital and the kill switch."""
        with session_scope(self.sessions) as session:
            now = datetime.now(UTC)
            SymbolRepository(session).upsert_many(self.instruments.values(), now)
            account = AccountRepository(session).get_or_create(
                self.account,
                mode=AccountMode.PAPER,
                starting_capital_paise=rupees_to_paise(self.settings.ACCOUNT_SIZE),
                at=now,
            )
            earlier = TradeRepository(session, self.account).net_pnl_paise(
                date(1970, 1, 1), self.first_date - timedelta(days=1)
            )
            capital = account.starting_capital_paise + earlier
            kill = KillSwitch(active=account.kill_switch, reason=account.kill_switch_reason or "")
        return capital, kill

    # --- persistence -----------------------------------------------------------------------

    def flush(self) -> None:
        """Commit what the engine recorded (and sampled ticks) in one transaction."""
        if not len(self.journal) and not self._tick_buffer:
            return
        ticks, self._tick_buffer = self._tick_buffer, []
        with session_scope(self.sessions) as session:
            count = self.journal.replay_into(SqlJournal(session, self.account))
            if ticks:
                TickRepository(session).insert_many(ticks)
            if self._session is not None:
                day, seed = self._session
                CheckpointRepository(session, self.account).save(
                    Checkpoint(
                        trading_date=day,
                        market_at=self.clock.now(),
                        ticks_processed=self._ticks_done,
                        seed=seed,
                    ),
                    datetime.now(UTC),
                )
        audits = self.journal.audit_records(count)
        if self.hub is not None:
            self._publish(self.hub, count)
        self.journal.forget(count)
        for record in audits:
            self.alerts.on_audit(record)
        if faults.ENABLED:
            faults.point("flush.committed")

    def _publish(self, hub: EventHub, count: int) -> None:
        """Stream what was just committed (never before: a client sees only durable facts)."""
        for name, args in self.journal.ops(count):
            if name == "candle" and hub.has_subscribers(CANDLES):
                candle = args[0]
                symbol = self._symbol(candle.instrument_key)
                hub.publish(CANDLES, candle_payload(candle, symbol))
            elif name == "signal" and hub.has_subscribers(SIGNALS):
                hub.publish(SIGNALS, signal_payload(args[0], args[1]))
            elif name == "order" and hub.has_subscribers(ORDERS):
                hub.publish(ORDERS, order_payload(args[0]))

    def _symbol(self, key: str) -> str:
        instrument = self.instruments.get(key)
        return instrument.trading_symbol if instrument is not None else key

    def sample_tick(self, tick: Tick) -> None:
        """Keep one tick per instrument every TICK_STORE_INTERVAL_SECONDS for storage."""
        interval_ms = self.settings.TICK_STORE_INTERVAL_SECONDS * 1000
        if not interval_ms:
            return
        last = self._tick_sampled_at.get(tick.instrument_key)
        if last is None or tick.ts_ms - last >= interval_ms:
            self._tick_sampled_at[tick.instrument_key] = tick.ts_ms
            self._tick_buffer.append(tick)

    # --- commands from the API (run on the loop thread) ------------------------------------

    def set_kill_switch(self, active: bool, *, reason: str, by: str) -> None:
        self.engine.set_kill_switch(active, reason=reason, by=by)
        self.executor.execute(self.engine.on_timer(self.clock.now_ms()))
        self.flush()

    def close_position(self, instrument_key: str, *, by: str) -> None:
        """Queue a manual exit; raises NotFound when there is no such open position."""
        self.engine.request_exit(instrument_key, ExitReason.MANUAL)
        self.journal.audit(
            AuditRecord(
                event="position.close_requested",
                entity="position",
                entity_id=instrument_key,
                at=self.clock.now(),
                data={},
                actor=by,
            )
        )
        self.executor.execute(self.engine.on_timer(self.clock.now_ms()))
        self.flush()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def recover_today(self) -> None:
        """Rebuild the engine from the database for the clock's trading date (live feed)."""
        self._recover(self.calendar.trading_date(self.clock.now()))

    def close(self) -> None:
        """Release what the bot holds: pending alerts are sent (bounded wait), the DB closed."""
        self.alerts.close()
        self.db_engine.dispose()

    # --- the market loop -------------------------------------------------------------------

    def _replay_dates(self) -> list[date]:
        assert self.replay is not None
        return sorted({d for series in self.replay.series for d in series.trading_dates()})

    def _sessions(self) -> Iterator[date]:
        if self.replay is not None:
            yield from (d for d in self._replay_dates() if d >= self.first_date)
            return
        day = self.first_date
        while True:
            yield day
            day = self.calendar.next_trading_day(day)

    async def run_market(self) -> None:
        """Play simulated sessions until the duration is reached or stop() is called.

        After a restart the sessions already played are fast-forwarded (no trading), and the
        session of the checkpoint resumes at the first tick after it, with the engine rebuilt
        from the database (runtime/recovery.py): the run ends as an uninterrupted one would.
        """
        if self.options.market == "upstox":
            from upstox_bot.runtime.live_market import play_upstox

            await play_upstox(self)
            return
        with session_scope(self.sessions) as session:
            checkpoint = CheckpointRepository(session, self.account).get_or_none()
        remaining_ms = (
            None
            if self.options.duration_minutes is None
            else int(self.options.duration_minutes * 60_000)
        )
        first = True
        for index, day in enumerate(self._sessions()):
            if self._stop.is_set() or (remaining_ms is not None and remaining_ms <= 0):
                break
            session_ms = SESSION_MINUTES * 60_000
            play_ms = session_ms if remaining_ms is None else min(session_ms, remaining_ms)
            seed = self.options.seed + index
            if checkpoint is not None and day < checkpoint.trading_date:
                self._fast_forward(day, seed)
            else:
                resume = None
                if checkpoint is not None and day == checkpoint.trading_date:
                    resume = checkpoint
                await self._play_session(day, seed, play_ms, resume=resume, recover_first=first)
                first = False
            if remaining_ms is not None:
                remaining_ms -= play_ms
        self.flush()
        self.stats.finished = True

    def _market(self, day: date, seed: int) -> SimulatedMarket | ReplayMarket:
        if self.replay is not None:
            return ReplayMarket(self.replay.series, trading_date=day)
        return SimulatedMarket(
            list(self.instruments.values()),
            self.prices,
            seed=seed,
            trading_date=day,
            calendar=self.calendar,
            mean_tick_interval_ms=self.settings.SIM_TICK_INTERVAL_MS,
        )

    def _fast_forward(self, day: date, seed: int) -> None:
        """A session played before the restart: only its closing prices are needed."""
        market = self._market(day, seed)
        for _ in market.iter_ticks():
            pass
        self.prices = market.closing_prices()

    def _recover(self, day: date) -> None:
        with session_scope(self.sessions) as session:
            report = recover(
                session,
                engine=self.engine,
                executor=self.executor,
                account=self.account,
                trading_date=day,
            )
        if report.positions or report.orders_in_flight or report.realised_paise:
            log.warning("recovery.resumed", extra={"summary": report.summary()})
        self.flush()

    async def _play_session(
        self,
        day: date,
        seed: int,
        play_ms: int,
        *,
        resume: Checkpoint | None = None,
        recover_first: bool = False,
    ) -> None:
        open_ms = datetime_to_ms(self.calendar.session_open(day))
        end_ms = open_ms + play_ms
        self.stats.trading_date = day
        market = self._market(day, seed)
        ticks = market.iter_ticks()
        if self.router is not None:  # F&O: the day's chain, and ticks of the watched contracts
            ticks = self._fno_ticks(day, ticks, resume)
        engine, executor, broker, hub = self.engine, self.executor, self.broker, self.hub
        self.clock.advance_to(open_ms)
        count = 0
        if resume is not None:
            # Ticks acted on before the restart rebuild the candles being built and last prices.
            if resume.ticks_processed:
                for tick in ticks:
                    engine.warm_tick(tick)
                    self.clock.advance_to(tick.ts_ms)
                    count += 1
                    if count >= resume.ticks_processed:
                        break
            resume_ms = datetime_to_ms(resume.market_at)
            engine.warm_timer(resume_ms)
            self.clock.advance_to(resume_ms)
        self._session = (day, seed)
        self._ticks_done = count
        if recover_first:
            self._recover(day)
        if resume is None:
            executor.execute(engine.on_timer(open_ms))
        speed = self.options.speed
        wall_start = walltime.monotonic()
        market_start_ms = self.clock.now_ms()
        last_flush = wall_start
        for tick in ticks:
            if tick.ts_ms >= end_ms or self._stop.is_set():
                break
            self.clock.advance_to(tick.ts_ms)
            started = walltime.perf_counter()
            if broker.working_count:
                executor.apply_fills(broker.on_tick(tick))
            intents = engine.on_tick(tick)
            count += 1
            self._ticks_done = count
            if intents:
                executor.execute(intents)
                if any(intent.signal_id for intent in intents):
                    self.stats.candle_to_order_s.append(walltime.perf_counter() - started)
            self.sample_tick(tick)
            if hub is not None and hub.has_subscribers(TICKS):
                hub.publish(TICKS, tick_payload(tick, self._symbol(tick.instrument_key)))
            if count % 256 == 0:
                self.stats.ticks += 256
                now_wall = walltime.monotonic()
                self.stats.recent.append((now_wall, self.stats.ticks))
                self.stats.last_tick_wall = now_wall
                self.stats.market_now = self.clock.now()
                ahead_s = (tick.ts_ms - market_start_ms) / 1000 / speed - (now_wall - wall_start)
                if now_wall - last_flush >= FLUSH_EVERY_WALL_S:
                    self.flush()
                    last_flush = now_wall
                # Yield to the API and the console; sleep when the market is ahead of the pace.
                await asyncio.sleep(max(0.0, ahead_s))
        self.stats.ticks += count % 256
        close_ms = min(end_ms, datetime_to_ms(self.calendar.session_close(day)))
        self.clock.advance_to(close_ms)
        executor.execute(engine.on_timer(close_ms))
        self.journal.account(engine.snapshot())
        self.prices = market.closing_prices()
        self.flush()
        if close_ms >= datetime_to_ms(self.calendar.session_close(day)):
            with session_scope(self.sessions) as session:
                trades = TradeRepository(session, self.account).find(
                    start_date=day, end_date=day, limit=100_000
                )
            self.alerts.send(end_of_day_summary(engine.snapshot(), trades))
        if self.session_ended is not None:
            self.session_ended(day, engine.snapshot())
        log.info(
            "session.done",
            extra={
                "trading_date": day.isoformat(),
                "ticks": count,
                "trades": engine.day.trades,
                "realised_paise": engine.day.realised_paise,
            },
        )

    # --- F&O (TRADE_INSTRUMENT future or option) -----------------------------------------------

    def _fno_ticks(
        self, day: date, ticks: Iterator[Tick], resume: Checkpoint | None
    ) -> Iterator[Tick]:
        """Learn the day's simulated chain (strikes around the opening prices) and wrap the
        stock ticks with ticks of the contracts held or being entered. After a restart the
        watched set before the checkpoint is rebuilt from the orders and trades recorded, so
        the replayed stream is the one played before."""
        router = self.router
        if router is None:
            return ticks
        for key, instrument in self.instruments.items():
            router.add_contracts(
                simulate_fno_chain(
                    instrument,
                    self.prices[key],
                    day,
                    self.calendar,
                    lot_size=self.fno_lot_sizes[key],
                )
            )
        history: list[WatchSpan] = []
        until_ms = None
        if resume is not None:
            until_ms = datetime_to_ms(resume.market_at)
            with session_scope(self.sessions) as session:
                history = self._watch_history(session, day, router)
        engine = self.engine
        feed = DerivativeTicks(
            router,
            self.pricer,
            lambda: engine.positions.keys() | engine.pending_entries.keys(),
            history=history,
            history_until_ms=until_ms,
        )
        return feed.wrap(ticks)

    def _watch_history(self, session: Session, day: date, router: ContractBook) -> list[WatchSpan]:
        """When each contract was watched on `day`: from its entry order's creation to the
        close of its position (or the entry's rejection); open-ended while still held."""
        start = datetime.combine(day, time(0), tzinfo=IST)
        closed_at = {
            trade.entry_order_id: trade.exit_at
            for trade in TradeRepository(session, self.account).find(
                start_date=day, end_date=day, limit=1_000_000
            )
        }
        spans: list[WatchSpan] = []
        orders = OrderRepository(session, self.account).find(
            since=start, until=start + timedelta(days=1), limit=1_000_000
        )
        for order in orders:
            if order.purpose is not OrderPurpose.ENTRY:
                continue
            if router.instrument_or_none(order.instrument_key) is None:
                continue
            if order.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
                until: datetime | None = order.updated_at
            else:
                until = closed_at.get(order.client_order_id)
            spans.append(
                WatchSpan(
                    order.instrument_key,
                    round(order.created_at.timestamp() * 1000),
                    None if until is None else round(until.timestamp() * 1000),
                )
            )
        return spans
