"""The backtest loop: the live engine, paper broker and executor driven over bars on a SimClock.

The loop is the embedded harness's market loop (runtime/embedded.py) fed with the trades of
`feed.replay.bar_path`: at each session's open and close the engine's timer runs, and for every
trade the clock moves to it, the paper broker fills the working orders at it, the engine sees it
and the executor places what the engine decided. A replayed session therefore trades exactly as
a backtest over the same bars.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from upstox_bot.backtest.data import Dataset
from upstox_bot.backtest.models import BacktestTrade, EquityPoint, OpenPosition
from upstox_bot.backtest.rules import BacktestExitManager, BacktestExitRules, BacktestRiskManager
from upstox_bot.clock import SimClock
from upstox_bot.domain import AccountSnapshot, AuditRecord, Instrument, Tick, ms_to_datetime
from upstox_bot.feed.replay import SESSION_MS, ist_date_of_ms, replay_trades, session_open_ms
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.signals.base import Strategy
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.journal import MemoryJournal
from upstox_bot.trading.ports import ChargesModel

_DAY_MS = 86_400_000
_SESSION_OPEN_MS = (9 * 60 + 15) * 60_000
_PROGRESS_EVERY = 1 << 15  # trades between two progress reports


class BacktestJournal(MemoryJournal):
    """A MemoryJournal that drops account snapshots and audit records (a long run makes
    millions of them and nothing in a backtest result reads them)."""

    __slots__ = ()

    def account(self, snapshot: AccountSnapshot) -> None:
        return None

    def audit(self, record: AuditRecord) -> None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Everything the loop needs besides the data and the strategy (paise, seconds)."""

    capital_paise: int
    limits: RiskLimits
    exits: BacktestExitRules
    charges: ChargesModel
    candle_interval_s: int
    signal_cooldown_s: int
    slippage_bps: Decimal = Decimal(0)
    quantity: int | None = None
    account: str = "backtest"
    kill_switch_square_off: bool = True
    series_capacity: int = 300
    # Leave out the repeat trades of a bar path when nothing is waiting to fill or to exit:
    # such a trade is a no-op for the trades (it only counts in the candle's tick count).
    skip_idle_repeats: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutput:
    """What the loop produced, before the summary is computed."""

    trades: tuple[BacktestTrade, ...]
    open_positions: tuple[OpenPosition, ...]
    equity: tuple[EquityPoint, ...]
    exposure: float  # 0-1
    unfilled_orders: int
    trades_replayed: int  # trades fed to the engine


class Backtest:
    """One run of the live engine over a dataset (build, then `run()` once)."""

    def __init__(self, dataset: Dataset, strategy: Strategy, config: RunConfig) -> None:
        self.series = tuple(s for s in dataset.series if len(s))
        if not self.series:
            raise ValueError("no bars to backtest")
        self.config = config
        self.instruments: dict[str, Instrument] = {
            s.instrument.instrument_key: s.instrument for s in self.series
        }
        self.keys = [s.instrument.instrument_key for s in self.series]
        self.symbols: Mapping[str, str] = {
            s.instrument.instrument_key: s.instrument.trading_symbol for s in self.series
        }
        self.first_ms = min(int(s.start_ms[0]) for s in self.series)
        self.last_ms = max(int(s.start_ms[-1]) for s in self.series)
        self.clock = SimClock(ms_to_datetime(session_open_ms(ist_date_of_ms(self.first_ms))))
        self.journal = BacktestJournal()
        limits = config.limits
        self.engine = Engine(
            config=EngineConfig(
                account=config.account,
                capital_paise=config.capital_paise,
                candle_interval_s=config.candle_interval_s,
                signal_cooldown_s=config.signal_cooldown_s,
                kill_switch_square_off=config.kill_switch_square_off,
                series_capacity=config.series_capacity,
                snapshot_every_minute=False,  # the backtest builds its own equity curve
            ),
            instruments=self.instruments,
            strategy=strategy,
            risk=BacktestRiskManager(
                limits,
                OrderRateLimiter(limits.max_orders_per_minute, limits.min_order_interval_s),
                KillSwitch(),
                quantity=config.quantity,
                stop_loss=config.exits.stop_loss,
            ),
            exits=BacktestExitManager(config.exits),
            journal=self.journal,
            charges=config.charges,
            clock=self.clock,
        )
        self.broker = PaperBroker(
            clock=self.clock,
            slippage_bps=config.slippage_bps,
            tick_size_paise=lambda key: self.instruments[key].tick_size_paise,
        )
        self.executor = OrderExecutor(engine=self.engine, broker=self.broker, journal=self.journal)
        self._equity: list[EquityPoint] = []
        self._exposed_ms = 0
        self._market_ms = 0
        self._last_ts = 0

    def _open_session(self, day: date) -> None:
        open_ms = session_open_ms(day)
        self.clock.advance_to(open_ms)
        self.executor.execute(self.engine.on_timer(open_ms))
        self._last_ts = open_ms
        self._market_ms += SESSION_MS

    def _close_session(self, day: date) -> None:
        close_ms = session_open_ms(day) + SESSION_MS
        engine = self.engine
        if engine.positions:
            self._exposed_ms += close_ms - self._last_ts
        self.clock.advance_to(close_ms)
        self.executor.execute(engine.on_timer(close_ms))
        equity = engine.day.capital_paise + engine.day.realised_paise + engine.unrealised_paise
        self._equity.append(EquityPoint(day=day, equity_paise=equity))

    def run(self, progress: Callable[[float], None] | None = None) -> RunOutput:
        """Replay every bar through the engine; `progress` gets the fraction done (0-1)."""
        engine, broker, executor, clock = self.engine, self.broker, self.executor, self.clock
        keys = self.keys
        skip_repeats = self.config.skip_idle_repeats
        span = max(self.last_ms - self.first_ms, 1)
        day: date | None = None
        day_end = -1
        count = 0
        working = 0  # the broker's working orders, read again after each call that may change it
        for ts, index, price, quantity, repeat in replay_trades(self.series):
            if ts >= day_end:
                if day is not None:
                    self._close_session(day)
                day = ist_date_of_ms(ts)
                day_end = session_open_ms(day) - _SESSION_OPEN_MS + _DAY_MS
                self._open_session(day)
                working = broker.working_count
            if repeat and skip_repeats and not working and not engine.exit_queue:
                continue
            clock.advance_to(ts)
            if engine.positions:
                self._exposed_ms += ts - self._last_ts
            self._last_ts = ts
            tick = Tick(instrument_key=keys[index], ts_ms=ts, ltp_paise=price, ltq=quantity)
            if working:
                executor.apply_fills(broker.on_tick(tick))
                working = broker.working_count
            intents = engine.on_tick(tick)
            if intents:
                executor.execute(intents)
                working = broker.working_count
            count += 1
            if progress is not None and not count % _PROGRESS_EVERY:
                progress(min(1.0, (ts - self.first_ms) / span))
        if day is not None:
            self._close_session(day)
        if progress is not None:
            progress(1.0)
        return RunOutput(
            trades=tuple(self._trades()),
            open_positions=tuple(self._open_positions()),
            equity=tuple(self._equity),
            exposure=self._exposed_ms / self._market_ms if self._market_ms else 0.0,
            unfilled_orders=broker.working_count,
            trades_replayed=count,
        )

    def _trades(self) -> list[BacktestTrade]:
        return [
            BacktestTrade(
                symbol=self.symbols[t.instrument_key],
                instrument_key=t.instrument_key,
                side=t.direction.value,
                quantity=t.quantity,
                entry_time=t.entry_at,
                entry_price_paise=t.entry_price_paise,
                exit_time=t.exit_at,
                exit_price_paise=t.exit_price_paise,
                gross_pnl_paise=t.gross_pnl_paise,
                charges_paise=t.charges_paise,
                pnl_paise=t.net_pnl_paise,
                exit_reason=t.exit_reason.value,
            )
            for t in self.journal.trades
        ]

    def _open_positions(self) -> list[OpenPosition]:
        return [
            OpenPosition(
                symbol=self.symbols[p.instrument_key],
                instrument_key=p.instrument_key,
                side=p.direction.value,
                quantity=p.quantity,
                entry_time=p.entry_at,
                entry_price_paise=p.entry_price_paise,
                last_price_paise=p.last_price_paise,
                unrealised_pnl_paise=p.unrealised_pnl_paise,
            )
            for p in self.engine.positions.values()
        ]
