"""The backtest loop: the live engine, paper broker and executor driven over bars on a SimClock.

The loop is the embedded harness's market loop (runtime/embedded.py) fed with the trades of
`feed.replay.bar_path`: at each session's open and close the engine's timer runs, and for every
trade the clock moves to it, the paper broker fills the working orders at it, the engine sees it
and the executor places what the engine decided. A replayed session therefore trades exactly as
a backtest over the same bars.

With `RunConfig.fast_path` (the default) and a strategy that has a vectorised form, only the
minutes where something can happen are stepped this way; the others are skipped with the
engine left exactly as their ticks would leave it (see backtest/fastpath.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

import numpy as np

from upstox_bot.backtest.data import Dataset
from upstox_bot.backtest.fastpath import FastPlan
from upstox_bot.backtest.models import BacktestTrade, EquityPoint, OpenPosition
from upstox_bot.backtest.rules import (
    BacktestExitManager,
    BacktestExitRules,
    BacktestRiskManager,
    ScaledCharges,
)
from upstox_bot.clock import (
    DAY_MS,
    SESSION_MS,
    MarketClock,
    ist_date_of_ms,
    ist_midnight_ms,
    session_open_ms,
)
from upstox_bot.domain import (
    AccountSnapshot,
    AuditRecord,
    Direction,
    Fill,
    Instrument,
    Order,
    Position,
    RiskDecision,
    Signal,
    SignalStatus,
    Trade,
    reduce_to_fields,
)
from upstox_bot.feed.replay import ReplayTrade, bar_path, replay_trades
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.signals.base import Strategy, StrategySignal
from upstox_bot.signals.series import CandleSeries
from upstox_bot.trading.brokers.paper import PaperBroker
from upstox_bot.trading.engine import Engine, EngineConfig
from upstox_bot.trading.execution import OrderExecutor
from upstox_bot.trading.journal import MemoryJournal
from upstox_bot.trading.kernel import TradingCore
from upstox_bot.trading.ports import ChargesModel

_PROGRESS_EVERY = 1 << 15  # trades between two progress reports


class BacktestJournal(MemoryJournal):
    """A MemoryJournal that keeps only the closed trades: a long run makes millions of
    signals, decisions, order states, snapshots and audit records, and nothing in a backtest
    result reads them (the open positions are read from the engine)."""

    def signal(self, signal: Signal, status: SignalStatus) -> None:
        return None

    def signal_status(self, signal_id: str, status: SignalStatus) -> None:
        return None

    def risk_decision(self, decision: RiskDecision) -> None:
        return None

    def order(self, order: Order) -> None:
        return None

    def order_sent(self, client_order_id: str, at: datetime) -> None:
        return None

    def fill(self, fill: Fill) -> None:
        return None

    def position_opened(self, position: Position) -> None:
        return None

    def position_updated(self, position: Position) -> None:
        return None

    def position_closed(self, position: Position, trade: Trade) -> None:
        self.trades.append(trade)

    def account(self, snapshot: AccountSnapshot) -> None:
        return None

    def audit(self, record: AuditRecord) -> None:
        return None


class _CandidateGate(Strategy):
    """The run's strategy, evaluated only on the candles its vectorised form marked: on the
    others `signal_candidates` promised that `evaluate` says nothing."""

    name = "candidate_gate"

    def __init__(self, inner: Strategy, candidates: Mapping[str, frozenset[int]]) -> None:
        # No Strategy.__init__: the inner strategy has validated its parameters.
        self.name = inner.name  # type: ignore[misc]
        self.params = inner.params
        self.inner = inner
        self._candidates = candidates

    @property
    def startup_candles(self) -> int:
        return self.inner.startup_candles

    def may_signal(self, candles: CandleSeries) -> bool:
        marked = self._candidates.get(candles.instrument_key)
        return marked is not None and candles.last_start_ms in marked

    def evaluate(
        self, candles: CandleSeries, *, position: Direction | None, now: datetime
    ) -> Sequence[StrategySignal]:
        if not self.may_signal(candles):
            return ()
        return self.inner.evaluate(candles, position=position, now=now)


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
    # Step only the minutes where a decision, a fill or an exit can happen, when the strategy
    # has a vectorised form (same trades; False steps every bar, for tests and comparisons).
    fast_path: bool = True
    # Recompute the percentage limits from each day's opening capital, as a live account does
    # (False: keep them on capital_paise, FIXED_RISK_CAPITAL).
    limits_follow_capital: bool = True

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutput:
    """What the loop produced, before the summary is computed."""

    trades: tuple[BacktestTrade, ...]
    open_positions: tuple[OpenPosition, ...]
    equity: tuple[EquityPoint, ...]
    exposure: float  # 0-1
    unfilled_orders: int
    trades_replayed: int  # trades fed to the engine (the fast path skips quiet bars' trades)

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


class Backtest:
    """One run of the live engine over a dataset (build, then `run()` once)."""

    def __init__(self, dataset: Dataset, strategy: Strategy, config: RunConfig) -> None:
        self.series = tuple(s for s in dataset.series if len(s))
        if not self.series:
            raise ValueError("no bars to backtest")
        self.config = config
        # Prices finer than the paisa (split-adjusted history) come as `price_scale` units per
        # paisa: the engine then counts all money in those units (capital, limits, ticks,
        # charges), and the results are turned back into paise.
        self.scale = scale = dataset.price_scale
        self.instruments: dict[str, Instrument] = {
            s.instrument.instrument_key: (
                replace(s.instrument, tick_size_paise=s.instrument.tick_size_paise * scale)
                if scale != 1
                else s.instrument
            )
            for s in self.series
        }
        self.keys = [s.instrument.instrument_key for s in self.series]
        self._index_of = {key: index for index, key in enumerate(self.keys)}
        self.symbols: Mapping[str, str] = {
            s.instrument.instrument_key: s.instrument.trading_symbol for s in self.series
        }
        self.first_ms = min(int(s.start_ms[0]) for s in self.series)
        self.last_ms = max(int(s.start_ms[-1]) for s in self.series)
        self.clock = MarketClock(session_open_ms(ist_date_of_ms(self.first_ms)), ist=True)
        self.journal = BacktestJournal()
        limits = config.limits
        charges = config.charges
        if scale != 1:
            limits = replace(limits, capital_paise=limits.capital_paise * scale)
            charges = ScaledCharges(charges, scale)
        self.engine = Engine(
            config=EngineConfig(
                account=config.account,
                capital_paise=config.capital_paise * scale,
                candle_interval_s=config.candle_interval_s,
                signal_cooldown_s=config.signal_cooldown_s,
                kill_switch_square_off=config.kill_switch_square_off,
                series_capacity=config.series_capacity,
                snapshot_every_minute=False,  # the backtest builds its own equity curve
                audit_records=False,  # BacktestJournal drops audit records and snapshots
                limits_follow_capital=config.limits_follow_capital,
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
            charges=charges,
            clock=self.clock,
        )
        self.broker = PaperBroker(
            clock=self.clock,
            slippage_bps=config.slippage_bps,
            tick_size_paise=lambda key: self.instruments[key].tick_size_paise,
        )
        self.executor = OrderExecutor(engine=self.engine, broker=self.broker, journal=self.journal)
        self.core = TradingCore(
            engine=self.engine, executor=self.executor, clock=self.clock, paper=self.broker
        )
        self._equity: list[EquityPoint] = []
        self._exposed_ms = 0
        self._market_ms = 0
        self._last_ts = 0
        self._count = 0
        self._strategy = strategy

    def _open_session(self, day: date) -> None:
        open_ms = session_open_ms(day)
        self.core.fire_timer(open_ms)
        self._last_ts = open_ms
        self._market_ms += SESSION_MS

    def _close_session(self, day: date) -> None:
        close_ms = session_open_ms(day) + SESSION_MS
        engine = self.engine
        if engine.positions:
            self._exposed_ms += close_ms - self._last_ts
        self.core.fire_timer(close_ms)
        equity = engine.capital_paise + engine.realised_paise + engine.unrealised_paise
        self._equity.append(EquityPoint(day=day, equity_paise=self._paise(equity)))

    def run(self, progress: Callable[[float], None] | None = None) -> RunOutput:
        """Replay the bars through the engine; `progress` gets the fraction done (0-1)."""
        plan = (
            FastPlan.build_or_none(
                self.series,
                self._strategy,
                candle_interval_s=self.config.candle_interval_s,
                window=self.config.series_capacity,
            )
            if self.config.fast_path
            else None
        )
        if plan is None:
            self._run_full(progress)
        else:
            self.engine.reconfigure(strategy=_CandidateGate(self._strategy, plan.candidates))
            try:
                self._run_fast(plan, progress)
            finally:
                self.engine.reconfigure(strategy=self._strategy)
        if progress is not None:
            progress(1.0)
        return RunOutput(
            trades=tuple(self._trades()),
            open_positions=tuple(self._open_positions()),
            equity=tuple(self._equity),
            exposure=self._exposed_ms / self._market_ms if self._market_ms else 0.0,
            unfilled_orders=self.broker.working_count,
            trades_replayed=self._count,
        )

    def _run_full(self, progress: Callable[[float], None] | None) -> None:
        """Every trade of every bar path, in time order."""
        engine, broker, core = self.engine, self.broker, self.core
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
                day_end = ist_midnight_ms(day) + DAY_MS
                self._open_session(day)
                working = broker.working_count
            if repeat and skip_repeats and not working and not engine.exit_queue:
                continue
            if engine.positions:
                self._exposed_ms += ts - self._last_ts
            self._last_ts = ts
            if core.step_trade(keys[index], ts, price, quantity) or working:
                working = broker.working_count
            count += 1
            if progress is not None and not count % _PROGRESS_EVERY:
                progress(min(1.0, (ts - self.first_ms) / span))
        if day is not None:
            self._close_session(day)
        self._count = count

    # --- the fast path ---------------------------------------------------------------------

    def _run_fast(self, plan: FastPlan, progress: Callable[[float], None] | None) -> None:
        """Step the minutes that matter, skip the quiet ones (see backtest/fastpath.py)."""
        engine, broker = self.engine, self.broker
        next_must, build, full = plan.next_must, plan.build, plan.full
        cursors = [0] * len(self.series)
        square_off = self.config.exits.square_off
        days = len(plan.days)
        # With one series, the minute after a candidate must step for that candidate alone.
        drop = len(self.series) == 1
        for number, (day, lo, hi) in enumerate(plan.days):
            self._open_session(day)
            close_ms = session_open_ms(day) + SESSION_MS
            square_off_at = plan.square_off_index(lo, hi, square_off)
            j = lo
            while j < hi:
                if not full[j] and not broker.working_count and not engine.exit_queue:
                    # Skip to the next minute that must step; a candidate minute at the end
                    # of the span has its candle built from its trades, outside the engine.
                    end = min(int(next_must[j]), hi)
                    while drop and end < hi and build[end]:
                        # A candidate the engine's rules refuse whatever it says (a flat book
                        # outside the entry window, say) is skipped like any other candle.
                        after = end + 1
                        at_ms = int(plan.minutes[after]) if after < hi else close_ms
                        if not engine.refuses_entries_when_flat(at_ms):
                            break
                        end = (
                            after
                            if after >= hi or build[after]
                            else min(
                                int(next_must[after + 1]) if after + 1 < len(next_must) else hi, hi
                            )
                        )
                    if end < hi and build[end] and not full[end]:
                        end += 1
                    if engine.positions:
                        end = self._quiet_end(plan, cursors, j, end, square_off_at)
                    if end > j:
                        self._skip(plan, cursors, j, end, bool(build[end - 1]))
                        j = end
                        continue
                self._step_minute(plan, cursors, j)
                j += 1
            self._close_session(day)
            if progress is not None and not number % 64:
                progress(number / days)

    def _step_minute(self, plan: FastPlan, cursors: list[int], j: int) -> None:
        """Feed the trades of every bar starting at minute j, in time order, as the full loop
        does."""
        minute = int(plan.minutes[j])
        trades: list[ReplayTrade] = []
        for index, s in enumerate(self.series):
            i = cursors[index]
            if i < len(s) and int(s.start_ms[i]) == minute:
                cursors[index] = i + 1
                volume = int(s.volume[i])
                for offset, price, repeat in bar_path(
                    int(s.open[i]), int(s.high[i]), int(s.low[i]), int(s.close[i]), s.span_ms
                ):
                    trades.append(
                        (minute + offset, index, price, volume if offset == 0 else 0, repeat)
                    )
        if len(self.series) > 1:
            trades.sort()
        engine, broker, core, clock, keys = (
            self.engine,
            self.broker,
            self.core,
            self.clock,
            self.keys,
        )
        skip_repeats = self.config.skip_idle_repeats
        working = broker.working_count
        for ts, index, price, quantity, repeat in trades:
            if repeat and skip_repeats and not working and not engine.exit_queue:
                continue
            clock.advance_to(ts)
            if engine.positions:
                self._exposed_ms += ts - self._last_ts
            self._last_ts = ts
            self._count += 1
            if not working:
                # Nothing to fill: most trades only move the candle and the last price.
                clock.advance_to(ts)
                quiet = engine.on_quiet_trade(keys[index], ts, price, quantity)
                if quiet is not None:
                    if quiet:
                        core.execute(quiet)
                        working = broker.working_count
                    continue
            if core.step_trade(keys[index], ts, price, quantity) or working:
                working = broker.working_count

    def _quiet_end(
        self, plan: FastPlan, cursors: list[int], j: int, end: int, square_off_at: int
    ) -> int:
        """How far from minute j the open positions let the run skip: before the first bar
        that could reach an exit level, the square-off or the daily loss limit (j: none)."""
        engine = self.engine
        if not engine.square_off_done:
            end = min(end, square_off_at)
        if end <= j:
            return j
        rules = self.config.exits
        until = int(plan.minutes[end]) if end < len(plan.minutes) else None
        worst_pnl = engine.realised_paise
        for key, position in engine.positions.items():
            if engine.router.exit_date(key) is not None:
                return j
            index = self._index_of.get(key)
            if index is None:
                return j  # not a replayed instrument: step, never guess
            arrays = plan.series[index]
            lo = cursors[index]
            hi = (
                len(arrays.start_ms)
                if until is None
                else int(arrays.start_ms.searchsorted(until, "left"))
            )
            high = arrays.max_paise[lo:hi]
            low = arrays.min_paise[lo:hi]
            long = position.direction is Direction.LONG
            touch = np.zeros(hi - lo, dtype=np.bool_)
            if rules.take_profit:
                if rules.trailing_stop and position.trailing_active:
                    best = position.best_price_paise
                    touch |= high > best if long else low < best
                else:
                    target = position.target_paise
                    touch |= high >= target if long else low <= target
            if rules.stop_loss:
                touch |= low <= position.stop_paise if long else high >= position.stop_paise
            trail = position.trail_stop_paise
            if trail is not None:
                touch |= low <= trail if long else high >= trail
            if hi > lo and touch.any():
                first = lo + int(touch.argmax())
                end = min(end, int(plan.minutes.searchsorted(arrays.start_ms[first])))
                hi = first
            worst = position.last_price_paise
            if hi > lo:
                worst = (
                    min(worst, int(low[: hi - lo].min()))
                    if long
                    else max(worst, int(high[: hi - lo].max()))
                )
            worst_pnl += (
                position.direction.sign * (worst - position.entry_price_paise) * (position.quantity)
            )
            if end <= j:
                return j
        if not engine.loss_limit_hit and engine.risk.loss_limit_breached(worst_pnl):
            return j
        return end

    def _skip(self, plan: FastPlan, cursors: list[int], j: int, end: int, build: bool) -> None:
        """Leave the engine as the trades of minutes [j, end) would, none of which can take a
        decision: the timer of minute j (it closes the last stepped candle), the bars'
        candles into the windows and their closes as last prices. With `build`, the bars of
        the last minute are not closed: their trades go to the candle aggregator, which then
        holds their candles open as it would after stepping them."""
        engine, clock = self.engine, self.clock
        minute = int(plan.minutes[j])
        clock.advance_to(minute)
        if minute >= engine.next_timer_ms and (engine.on_timer(minute) or engine.exit_queue):
            raise RuntimeError("backtest fast path: a skipped minute took a decision")
        capacity = self.config.series_capacity
        skip_repeats = self.config.skip_idle_repeats
        count = len(plan.minutes)
        prices: dict[str, int] = {}
        last_ts = self._last_ts
        built: list[ReplayTrade] = []
        for index, arrays in enumerate(plan.series):
            lo = cursors[index]
            hi = int(plan.bar_at[index][end]) if end < count else len(arrays.start_ms)
            if hi <= lo:
                continue
            cursors[index] = hi
            key = self.keys[index]
            last = hi - 1
            start = int(arrays.start_ms[last])
            closed = hi
            if build and start == int(plan.minutes[end - 1]):
                closed = last
                built.append((start, index, 0, 0, False))
            first = max(lo, closed - capacity)
            if closed > first:
                engine.extend_candles(
                    key, arrays.start_ms[first:closed], arrays.rows[:, first:closed]
                )
            prices[key] = int(arrays.close_paise[last])
            offset = int(arrays.last_offset_ms[last])
            if not skip_repeats and offset != self.series[index].span_ms - 1000:
                offset += 1  # the last trade is the repeat of the last extreme
            last_ts = max(last_ts, start + offset)
        if built:
            self._build_candles(built, skip_repeats)
        engine.apply_quiet_prices(prices)
        if engine.positions:
            self._exposed_ms += last_ts - self._last_ts
        self._last_ts = last_ts
        clock.advance_to(last_ts)

    def _build_candles(self, bars: list[ReplayTrade], skip_repeats: bool) -> None:
        """Feed the trades of these bars (start ms, series index) to the candle aggregator
        alone, in time order: a quiet minute's trades change nothing else in the engine."""
        trades: list[ReplayTrade] = []
        for start, index, _price, _quantity, _repeat in bars:
            s = self.series[index]
            i = int(s.start_ms.searchsorted(start))
            volume = int(s.volume[i])
            for offset, price, repeat in bar_path(
                int(s.open[i]), int(s.high[i]), int(s.low[i]), int(s.close[i]), s.span_ms
            ):
                if not (repeat and skip_repeats):
                    trades.append(
                        (start + offset, index, price, volume if offset == 0 else 0, repeat)
                    )
        if len(bars) > 1:
            trades.sort()
        engine, keys = self.engine, self.keys
        for ts, index, price, quantity, _repeat in trades:
            if engine.aggregate_trade(keys[index], ts, price, quantity):
                raise RuntimeError("backtest fast path: a built candle closed another")

    def _paise(self, units: int) -> int:
        """Money in price units as paise (half away from zero)."""
        if self.scale == 1:
            return units
        whole = (2 * abs(units) + self.scale) // (2 * self.scale)
        return whole if units >= 0 else -whole

    def _price(self, units: int) -> int | Decimal:
        """A price in price units as paise: exact (a Decimal when finer than the paisa)."""
        if self.scale == 1 or units % self.scale == 0:
            return units // self.scale
        return (Decimal(units) / self.scale).normalize()

    def _trades(self) -> list[BacktestTrade]:
        paise, price = self._paise, self._price
        out = []
        for t in self.journal.trades:
            gross, charges = paise(t.gross_pnl_paise), paise(t.charges_paise)
            out.append(
                BacktestTrade(
                    symbol=self.symbols[t.instrument_key],
                    instrument_key=t.instrument_key,
                    side=t.direction.value,
                    quantity=t.quantity,
                    entry_time=t.entry_at,
                    entry_price_paise=price(t.entry_price_paise),
                    exit_time=t.exit_at,
                    exit_price_paise=price(t.exit_price_paise),
                    gross_pnl_paise=gross,
                    charges_paise=charges,
                    pnl_paise=gross - charges,
                    exit_reason=t.exit_reason.value,
                )
            )
        return out

    def _open_positions(self) -> list[OpenPosition]:
        return [
            OpenPosition(
                symbol=self.symbols[p.instrument_key],
                instrument_key=p.instrument_key,
                side=p.direction.value,
                quantity=p.quantity,
                entry_time=p.entry_at,
                entry_price_paise=self._price(p.entry_price_paise),
                last_price_paise=self._price(p.last_price_paise),
                unrealised_pnl_paise=self._paise(p.unrealised_pnl_paise),
            )
            for p in self.engine.positions.values()
        ]
