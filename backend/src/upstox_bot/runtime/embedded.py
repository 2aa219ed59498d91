"""The embedded harness: one process, SQLite (or any DATABASE_URL), the simulated market, the
paper broker, the API server and a live console, all on one asyncio loop.

The market is paced by `speed` (simulated seconds per wall second) but the engine only ever sees
market time: the same seed gives the same trades at any speed.
"""

from __future__ import annotations

import asyncio
import logging
import time as walltime
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from fastapi import FastAPI

from upstox_bot import faults
from upstox_bot.backtest.data import Dataset, load_bars
from upstox_bot.clock import SESSION_MS, MarketClock
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.repositories.checkpoints import Checkpoint
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.settings_overrides import settings_with_overrides
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    IST,
    AccountSnapshot,
    Instrument,
    InstrumentKind,
    OrderPurpose,
    OrderStatus,
    Tick,
    datetime_to_ms,
)
from upstox_bot.errors import ConfigError
from upstox_bot.feed.derivatives import ChainPricer, DerivativeTicks, WatchSpan
from upstox_bot.feed.replay import ReplayMarket
from upstox_bot.feed.sampling import TickSampler
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.live_events import (
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
from upstox_bot.monitoring.alerts.model import AlertKind
from upstox_bot.monitoring.notifiers import dispatcher_from_settings
from upstox_bot.options.chain import simulate_fno_chain
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime import components
from upstox_bot.runtime.control import (
    Command,
    CommandResult,
    CommandStatus,
    KernelView,
    LiveStats,
    LocalControl,
)
from upstox_bot.runtime.kernel import AccountKernel, KernelPorts, Ops
from upstox_bot.runtime.store import AccountStore, RetryPolicy
from upstox_bot.trading.routing import ContractBook

log = logging.getLogger(__name__)

FLUSH_EVERY_WALL_S = 0.25
# A commit also goes ahead of every order sent (durable first): what is buffered then rides on
# the order's path. So a backlog is committed early, whatever the time: at most this many
# journal entries or sampled ticks wait for a commit (checked every FLUSH_CHECK_TICKS ticks).
FLUSH_BACKLOG = 16
FLUSH_CHECK_TICKS = 16


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
    force_live_reason: str | None = None  # start live before the paper period (audited)


class HubSink:
    """Publishes a kernel's committed facts on the API's event hub (from the engine's thread)."""

    def __init__(self, hub: EventHub, symbols: Mapping[str, str]) -> None:
        self.hub = hub
        self.symbols = symbols

    def committed(self, ops: Ops, view: KernelView) -> None:
        hub = self.hub
        for name, args in ops:
            if name == "candle" and hub.has_subscribers(CANDLES):
                candle = args[0]
                symbol = self.symbols.get(candle.instrument_key, candle.instrument_key)
                hub.publish_threadsafe(CANDLES, candle_payload(candle, symbol))
            elif name == "signal" and hub.has_subscribers(SIGNALS):
                hub.publish_threadsafe(SIGNALS, signal_payload(args[0], args[1]))
            elif name == "order" and hub.has_subscribers(ORDERS):
                hub.publish_threadsafe(ORDERS, order_payload(args[0]))


class _Sinks:
    """The embedded kernel's event sink: the controls' view, and the hub when the API runs."""

    def __init__(self, bot: EmbeddedBot) -> None:
        self.bot = bot

    def committed(self, ops: Ops, view: KernelView) -> None:
        bot = self.bot
        bot.control.publish(view)
        if bot.hub is not None:
            HubSink(bot.hub, bot.kernel.symbols).committed(ops, view)


class EmbeddedBot:
    """One process: the account's kernel, the simulated (or replayed, or Upstox) market, the
    database (SQLite by default) and, beside it, the API on its own thread."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.options = options
        self.stats = LiveStats()
        self.hub: EventHub | None = None  # the API's live stream, when the API runs here
        # Told of each session's end (the console prints its summary), on the loop thread.
        self.session_ended: Callable[[date, AccountSnapshot], None] | None = None
        self.control = LocalControl()
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
        self.sampler = TickSampler(settings.TICK_STORE_INTERVAL_SECONDS * 1000)
        self._stop = asyncio.Event()
        self._paused_at_ms: int | None = None  # the simulated market waits before this time
        self._resume = asyncio.Event()
        self._resume.set()
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
        self.store = AccountStore(
            self.sessions,
            self.account,
            harness="embedded",
            # At start-up a database that cannot be written is a failure to report (start-up
            # names the cause); once trading, it is waited for (run_market).
            retry=RetryPolicy(deadline_s=0.0),
        )
        self.kernel = AccountKernel(
            settings,
            harness="embedded",
            instruments=self.instruments,
            clock=self.clock,
            calendar=self.calendar,
            ports=KernelPorts(
                store=self.store,
                rate_limiter=OrderRateLimiter(
                    settings.MAX_ORDERS_PER_MINUTE, settings.MIN_ORDER_INTERVAL_SECONDS
                ),
                events=_Sinks(self),
                alerts=self.alerts,
            ),
            router=self.router,
            position=self._position,
            on_session=self._on_session,
            force_live_reason=options.force_live_reason,
        )
        self.engine = self.kernel.engine
        self.desk = self.kernel.desk

    # --- set-up ----------------------------------------------------------------------------

    def _default_start_date(self) -> date:
        return datetime.now(IST).date()

    def _position(self) -> dict[str, Any]:
        if self._session is None:
            return {}
        day, seed = self._session
        return {
            "session": day.isoformat(),
            "ticks": self._ticks_done,
            "seed": seed,
            "sampled": self.sampler.state(),
        }

    def _db_waiting(self, error: Exception) -> None:
        self.alerts.notify(
            AlertKind.DATABASE_UNAVAILABLE,
            f"The database cannot be written ({str(error)[:160]}): trading waits until it can "
            "(nothing is lost; orders are never sent before they are on disk).",
        )

    # --- persistence -----------------------------------------------------------------------

    def flush(self) -> None:
        """Commit what the engine recorded (and sampled ticks) in one transaction."""
        self.kernel.commit()
        if faults.ENABLED:
            faults.point("flush.committed")

    def sample_tick(self, tick: Tick) -> None:
        """Keep one tick per instrument every TICK_STORE_INTERVAL_SECONDS for storage."""
        if self.sampler.keep(tick.instrument_key, tick.ts_ms):
            self.kernel.ticks.append(tick)

    # --- controls (applied on the market loop, between two ticks) --------------------------

    def attach_controls(self) -> None:
        """Serve controls from now on: the API (on its own thread) sends them here."""
        self.control.attach(asyncio.get_running_loop(), self.kernel.apply)
        self.control.publish(self.kernel.view())

    def create_api(self) -> FastAPI:
        """The API app over this bot: its database, controls, live stream and loop figures."""
        from upstox_bot.api.app import create_app

        if self.hub is None:
            self.hub = EventHub()
        return create_app(
            self.settings,
            control=self.control,
            sessions=self.sessions,
            hub=self.hub,
            stats=self.stats,
        )

    def _on_session(self, command: Command) -> CommandResult:
        action = str(command.args.get("action", ""))
        if action == "pause_at":
            self._paused_at_ms = int(command.args["at_ms"])
            return CommandResult(
                status=CommandStatus.DONE, detail=f"the market pauses at {self._paused_at_ms}"
            )
        if action == "resume":
            # Resume, and pause again at the next time given (if any).
            until = command.args.get("pause_at")
            self._paused_at_ms = int(until) if until is not None else None
            self._resume.set()
            self.kernel.market = "running"
            return CommandResult(status=CommandStatus.DONE, detail="the market resumes")
        if action == "stop":
            self.stop()
            return CommandResult(status=CommandStatus.DONE, detail="the session stops")
        raise ValueError(f"unknown session action {action!r}: pause_at, resume or stop")

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Release what the bot holds: pending alerts are sent (bounded wait), the DB closed."""
        self.control.detach()
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
        session of the checkpoint resumes at the first tick after it, with the kernel rebuilt
        from the database (`AccountKernel.recover`): the run ends as an uninterrupted one would.
        """
        # From now on an unavailable database is waited for: no order goes out before it is
        # on record, and nothing recorded is lost (an alert says so).
        self.store.retry = RetryPolicy(
            deadline_s=None, on_wait=self._db_waiting, stop=self._stop.is_set
        )
        self.attach_controls()
        if self.options.market == "upstox":
            from upstox_bot.runtime.live_market import play_upstox

            await play_upstox(self)
            return
        checkpoint = self.store.checkpoint()
        resume_day: date | None = None
        if checkpoint is not None and checkpoint.position.get("session"):
            resume_day = date.fromisoformat(str(checkpoint.position["session"]))
        remaining_ms = (
            None
            if self.options.duration_minutes is None
            else int(self.options.duration_minutes * 60_000)
        )
        first = True
        for index, day in enumerate(self._sessions()):
            if self._stop.is_set() or (remaining_ms is not None and remaining_ms <= 0):
                break
            session_ms = SESSION_MS  # the regular session; a shorter day ends at its close
            play_ms = session_ms if remaining_ms is None else min(session_ms, remaining_ms)
            seed = self.options.seed + index
            if resume_day is not None and day < resume_day:
                self._fast_forward(day, seed)
            else:
                resume = checkpoint if resume_day is not None and day == resume_day else None
                await self._play_session(day, seed, play_ms, resume=resume, recover_first=first)
                first = False
            if remaining_ms is not None:
                remaining_ms -= play_ms
        self.flush()
        self.stats.finished = True
        self.kernel.market = "finished"
        self.control.publish(self.kernel.view())

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

    async def _wait_while_paused(self, tick_ms: int) -> None:
        """Hold the market before `tick_ms` while a pause at or before it is set."""
        paused_at = self._paused_at_ms
        if paused_at is None or tick_ms < paused_at:
            return
        self._resume.clear()
        self.flush()
        self.kernel.market = "paused"
        self.control.publish(self.kernel.view())
        while not self._resume.is_set():
            await self._resume.wait()

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
        kernel, stats, hub = self.kernel, self.stats, self.hub
        self.clock.advance_to(open_ms)
        count = 0
        if resume is not None:
            # The ticks acted on before the restart: the checkpoint holds what they built.
            self.sampler = TickSampler.from_state(
                self.sampler.interval_ms, dict(resume.position.get("sampled") or {})
            )
            done = int(resume.position.get("ticks") or 0)
            if done:
                for _ in ticks:
                    count += 1
                    if count >= done:
                        break
        self._session = (day, seed)
        self._ticks_done = count
        if recover_first:
            kernel.recover(resume)
        if resume is None:
            kernel.timer(open_ms)
        speed = self.options.speed
        wall_start = walltime.monotonic()
        market_start_ms = self.clock.now_ms()
        last_flush = wall_start
        for tick in ticks:
            if tick.ts_ms >= end_ms or self._stop.is_set():
                break
            if self._paused_at_ms is not None and tick.ts_ms >= self._paused_at_ms:
                await self._wait_while_paused(tick.ts_ms)
                if self._stop.is_set():
                    break
                wall_start = walltime.monotonic()
                market_start_ms = self.clock.now_ms()
            started = walltime.time()
            # The tick counts as done once its orders are on record (they commit inside).
            self._ticks_done = count + 1
            intents = kernel.step(tick)
            count += 1
            if kernel.handed_at and any(intent.signal_id for intent in intents):
                # To the orders handed to the broker (durable first), not to the step's end.
                stats.candle_to_order_s.append(kernel.handed_at - started)
            self.sample_tick(tick)
            if hub is not None and hub.has_subscribers(TICKS):
                hub.publish_threadsafe(
                    TICKS, tick_payload(tick, self.kernel.symbols.get(tick.instrument_key))
                )
            if count % FLUSH_CHECK_TICKS == 0 and (
                len(kernel.journal) >= FLUSH_BACKLOG or len(kernel.ticks) >= FLUSH_BACKLOG
            ):
                self.flush()
                last_flush = walltime.monotonic()
            if count % 256 == 0:
                stats.ticks += 256
                now_wall = walltime.monotonic()
                stats.recent.append((now_wall, stats.ticks))
                stats.last_tick_wall = now_wall
                stats.market_now = self.clock.now()
                ahead_s = (tick.ts_ms - market_start_ms) / 1000 / speed - (now_wall - wall_start)
                if now_wall - last_flush >= FLUSH_EVERY_WALL_S:
                    self.flush()
                    last_flush = now_wall
                # Let controls in; sleep when the market is ahead of the pace.
                await asyncio.sleep(max(0.0, ahead_s))
        stats.ticks += count % 256
        self._ticks_done = count
        if self._stop.is_set():
            # Stopped mid-session (Ctrl-C, SIGTERM, a stop command): what was done is committed
            # at the last tick, so the next start resumes there; the session is not closed.
            kernel.commit()
            log.info("session.stopped", extra={"trading_date": day.isoformat(), "ticks": count})
            return
        close_ms = min(end_ms, datetime_to_ms(self.calendar.session_close(day)))
        full_day = close_ms >= datetime_to_ms(self.calendar.session_close(day))
        kernel.close_session(close_ms, full_day=full_day)
        self.prices = market.closing_prices()
        stats.market_now = self.clock.now()
        if self.session_ended is not None:
            self.session_ended(day, self.engine.snapshot())
        log.info(
            "session.done",
            extra={
                "trading_date": day.isoformat(),
                "ticks": count,
                "trades": self.engine.day.trades,
                "realised_paise": self.engine.day.realised_paise,
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
