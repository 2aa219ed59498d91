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
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.clock import NseCalendar
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.models import AccountMode
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.journal import SqlJournal
from upstox_bot.db.repositories.symbols import SymbolRepository
from upstox_bot.db.repositories.ticks import TickRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import (
    IST,
    AuditRecord,
    ExitReason,
    Instrument,
    Tick,
    datetime_to_ms,
    rupees_to_paise,
)
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.risk.checks import RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.runtime import components
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.journal import BufferedJournal

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


@dataclass(slots=True)
class LiveStats:
    """What the console and /health show about the running loop."""

    ticks: int = 0
    started_wall: float = field(default_factory=walltime.monotonic)
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=40))
    market_now: datetime | None = None
    trading_date: date | None = None
    finished: bool = False

    def ticks_per_second(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.recent[0], self.recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class EmbeddedBot:
    """Wires settings into the engine, the simulated market, SQLite and the API."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.settings = settings
        self.options = options
        self.stats = LiveStats()
        self.calendar = (
            NseCalendar.from_csv(settings.HOLIDAYS_FILE)
            if settings.HOLIDAYS_FILE
            else NseCalendar.default()
        )
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        url = settings.database_url
        migrate.upgrade(url)
        self.db_engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.db_engine)
        self.account = settings.ACCOUNT_NAME
        universe = load_universe(limit=settings.SIM_SYMBOLS)
        # The bot trades the stock itself (cash, intraday): one share is the unit. The F&O lot
        # of each stock is kept for trading its future or option.
        self.fno_lot_sizes = {i.instrument_key: i.lot_size for i, _ in universe}
        self.instruments: dict[str, Instrument] = {
            i.instrument_key: replace(i, lot_size=1) for i, _ in universe
        }
        self.prices: dict[str, int] = {i.instrument_key: p for i, p in universe}
        first = options.start_date or self._default_start_date()
        if not self.calendar.is_trading_day(first):
            first = self.calendar.next_trading_day(first)
        self.first_date = first
        self.clock = MarketClock(datetime_to_ms(self.calendar.session_open(first)))
        self.journal = BufferedJournal()
        self._tick_buffer: list[Tick] = []
        self._tick_sampled_at: dict[str, int] = {}
        self._stop = asyncio.Event()
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
            ),
            exits=ExitManager(components.exit_rules(settings)),
            journal=self.journal,
            charges=components.charges_model(settings),
            clock=self.clock,
        )
        self.broker = PaperBroker(
            clock=self.clock,
            slippage_bps=settings.SLIPPAGE_BPS,
            tick_size_paise=lambda key: self.instruments[key].tick_size_paise,
        )
        self.executor = OrderExecutor(
            engine=self.engine, broker=self.broker, journal=self.journal, before_send=self.flush
        )

    # --- set-up ----------------------------------------------------------------------------

    def _default_start_date(self) -> date:
        return datetime.now(IST).date()

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
        self.journal.forget(count)

    def _sample_tick(self, tick: Tick) -> None:
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

    # --- the market loop -------------------------------------------------------------------

    def _sessions(self) -> Iterator[date]:
        day = self.first_date
        while True:
            yield day
            day = self.calendar.next_trading_day(day)

    async def run_market(self) -> None:
        """Play simulated sessions until the duration is reached or stop() is called."""
        remaining_ms = (
            None
            if self.options.duration_minutes is None
            else int(self.options.duration_minutes * 60_000)
        )
        for index, day in enumerate(self._sessions()):
            if self._stop.is_set() or (remaining_ms is not None and remaining_ms <= 0):
                break
            session_ms = SESSION_MINUTES * 60_000
            play_ms = session_ms if remaining_ms is None else min(session_ms, remaining_ms)
            await self._play_session(day, self.options.seed + index, play_ms)
            if remaining_ms is not None:
                remaining_ms -= play_ms
        self.flush()
        self.stats.finished = True

    async def _play_session(self, day: date, seed: int, play_ms: int) -> None:
        open_ms = datetime_to_ms(self.calendar.session_open(day))
        end_ms = open_ms + play_ms
        self.stats.trading_date = day
        market = SimulatedMarket(
            list(self.instruments.values()),
            self.prices,
            seed=seed,
            trading_date=day,
            calendar=self.calendar,
            mean_tick_interval_ms=self.settings.SIM_TICK_INTERVAL_MS,
        )
        self.clock.advance_to(open_ms)
        self.executor.execute(self.engine.on_timer(open_ms))
        speed = self.options.speed
        wall_start = walltime.monotonic()
        last_flush = wall_start
        engine, executor, broker = self.engine, self.executor, self.broker
        count = 0
        for tick in market.iter_ticks():
            if tick.ts_ms >= end_ms or self._stop.is_set():
                break
            self.clock.advance_to(tick.ts_ms)
            if broker.working_count:
                executor.apply_fills(broker.on_tick(tick))
            intents = engine.on_tick(tick)
            if intents:
                executor.execute(intents)
            self._sample_tick(tick)
            count += 1
            if count % 256 == 0:
                self.stats.ticks += 256
                now_wall = walltime.monotonic()
                self.stats.recent.append((now_wall, self.stats.ticks))
                self.stats.market_now = self.clock.now()
                ahead_s = (tick.ts_ms - open_ms) / 1000 / speed - (now_wall - wall_start)
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
        log.info(
            "session.done",
            extra={
                "trading_date": day.isoformat(),
                "ticks": count,
                "trades": engine.day.trades,
                "realised_paise": engine.day.realised_paise,
            },
        )
