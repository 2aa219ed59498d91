"""The trading engine: events in (tick, timer, fill, rejection, command), order intents out.

One engine serves one account. It owns the candle aggregation, the strategy's candle windows,
the open positions and their exit state, the day's P&L and the risk state. It never talks to a
broker or a database itself: intents go back to the caller (an executor), records go to the
injected Journal. Time comes from the injected Clock; the harness advances it.

Order pacing: every order, entry or exit, obeys the order rate limits. An exit is never refused:
it waits in a queue and goes at the first slot, before any entry; while an exit waits, no entry
is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from hashlib import sha256
from typing import Protocol

import numpy as np
import numpy.typing as npt

from upstox_bot import faults
from upstox_bot.domain import (
    IST,
    AccountSnapshot,
    AuditRecord,
    Candle,
    ClientOrderId,
    Direction,
    ExitReason,
    Fill,
    Instrument,
    InstrumentKind,
    Order,
    OrderIntent,
    OrderPurpose,
    OrderStatus,
    Position,
    RiskDecision,
    RiskRule,
    Signal,
    SignalId,
    SignalStatus,
    Tick,
    Trade,
    ms_to_datetime,
    reduce_to_fields,
)
from upstox_bot.errors import Conflict, InvalidTransition, NotFound
from upstox_bot.feed.candles import DAY_MS, IST_OFFSET_MS, CandleResampler, TickAggregator
from upstox_bot.money import format_rupees
from upstox_bot.options.selection import check_smallest_lot
from upstox_bot.risk.checks import BookState, EntryRequest, RiskManager
from upstox_bot.signals.base import Strategy, StrategySignal
from upstox_bot.signals.series import CandleSeries
from upstox_bot.trading import order_state
from upstox_bot.trading.exits import ExitManager
from upstox_bot.trading.ports import ChargesModel, Journal
from upstox_bot.trading.routing import InstrumentRouter, StockRouter

log = logging.getLogger(__name__)

MINUTE_MS = 60_000


class EngineClock(Protocol):
    def now(self) -> datetime: ...

    def now_ms(self) -> int: ...


def derive_id(prefix: str, *parts: object) -> str:
    """A short stable id from its parts: the same cause always gives the same id.

    The prefix, a dash and the first 16 hex digits of the SHA-256 of the parts joined by "|".
    """
    text = "|".join([part if isinstance(part, str) else str(part) for part in parts])
    return prefix + "-" + sha256(text.encode()).digest()[:8].hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    account: str
    capital_paise: int  # capital at the start of the current day
    candle_interval_s: int = 60
    signal_cooldown_s: int = 300
    kill_switch_square_off: bool = True
    snapshot_every_minute: bool = True  # journal the account each minute with positions open
    series_capacity: int = 300
    # Build audit records and account snapshots for the journal. A backtest, whose journal
    # drops both, turns this off so that they are not built only to be thrown away.
    audit_records: bool = True

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(slots=True)
class DayState:
    trading_date: date
    capital_paise: int
    realised_paise: int = 0  # net of charges
    charges_paise: int = 0
    trades: int = 0
    orders: int = 0
    loss_limit_hit: bool = False
    square_off_done: bool = False


class Engine:
    """The core trading loop for one account (plain Python, single-threaded)."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        instruments: Mapping[str, Instrument],
        strategy: Strategy,
        risk: RiskManager,
        exits: ExitManager,
        journal: Journal,
        charges: ChargesModel,
        clock: EngineClock,
        router: InstrumentRouter | None = None,
    ) -> None:
        """Wire the engine. `instruments` are the stocks strategies watch; `router` says what is
        traded on their signals (default: the stock itself, StockRouter)."""
        self.config = config
        self.instruments = dict(instruments)
        self.strategy = strategy
        self.risk = risk
        self.exits = exits
        self.journal = journal
        self.charges = charges
        self.clock = clock
        self.router: InstrumentRouter = router if router is not None else StockRouter()
        self.aggregator = TickAggregator(60)
        self.resampler = (
            CandleResampler(config.candle_interval_s) if config.candle_interval_s > 60 else None
        )
        self.series: dict[str, CandleSeries] = {}
        self.stale_candles = 0  # closed candles refused as not newer than their window's last
        self.last_price: dict[str, int] = {}
        self.positions: dict[str, Position] = {}
        self.orders: dict[str, Order] = {}  # orders not yet terminal
        self.pending_entries: dict[str, OrderIntent] = {}  # by instrument
        self.exit_queue: dict[str, ExitReason] = {}  # by instrument, oldest first
        self.exit_attempts: dict[str, int] = {}
        self.last_entry_signal_ms: dict[str, int] = {}
        self._unrealised_paise = 0  # kept in step with the positions: O(1) per tick
        now = clock.now()
        self.day = DayState(trading_date=_ist_date(now), capital_paise=config.capital_paise)
        self._next_timer_ms = (clock.now_ms() // MINUTE_MS + 1) * MINUTE_MS
        square_off = exits.rules.square_off
        self._square_off_ms: int | None = (
            None
            if square_off is None
            else ((square_off.hour * 60 + square_off.minute) * 60 + square_off.second) * 1000
        )
        self._day_index = -1
        self._records = config.audit_records

    # --- queries ---------------------------------------------------------------------------

    @property
    def unrealised_paise(self) -> int:
        """Unrealised P&L of the open positions at their last prices (gross of charges)."""
        return self._unrealised_paise

    @property
    def day_pnl_paise(self) -> int:
        return self.day.realised_paise + self.unrealised_paise

    @property
    def open_position_count(self) -> int:
        # An entry partly filled and still working is one position, not two.
        if not self.pending_entries:
            return len(self.positions)
        return len(self.positions.keys() | self.pending_entries.keys())

    def available_paise(self) -> int:
        """Cash not tied up in open positions or entries on their way (their unfilled part)."""
        used = sum(p.entry_price_paise * p.quantity for p in self.positions.values())
        for intent in self.pending_entries.values():
            order = self.orders.get(intent.client_order_id)
            unfilled = intent.quantity - (order.filled_quantity if order is not None else 0)
            used += intent.reference_price_paise * max(unfilled, 0)
        return self.day.capital_paise + self.day.realised_paise - used

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot(
            trading_date=self.day.trading_date.isoformat(),
            capital_paise=self.day.capital_paise,
            realised_pnl_paise=self.day.realised_paise,
            unrealised_pnl_paise=self.unrealised_paise,
            charges_paise=self.day.charges_paise,
            open_positions=len(self.positions),
            trades=self.day.trades,
            orders=self.day.orders,
            loss_limit_paise=self.risk.loss_limit_paise,
            loss_limit_hit=self.day.loss_limit_hit,
            kill_switch=self.risk.kill_switch.active,
        )

    # --- events ----------------------------------------------------------------------------

    def on_tick(self, tick: Tick) -> list[OrderIntent]:
        """Apply one tick: candles, exit checks, loss limit. Returns the orders to place now."""
        return self.on_trade(tick.instrument_key, tick.ts_ms, tick.ltp_paise, tick.ltq, tick.volume)

    def on_trade(
        self, key: str, ts_ms: int, price: int, ltq: int, volume: int = 0
    ) -> list[OrderIntent]:
        """`on_tick` for the tick's fields (a backtest feeds its trades without Ticks)."""
        intents: list[OrderIntent] = []
        if ts_ms >= self._next_timer_ms:
            intents.extend(self.on_timer(ts_ms))
        self.last_price[key] = price
        closed = self.aggregator.on_trade(key, ts_ms, price, ltq, volume)
        if closed is not None:
            intents.extend(self._on_base_candle(closed))
        position = self.positions.get(key)
        if position is not None:
            was_trailing = position.trailing_active
            self._unrealised_paise += (
                position.direction.sign * (price - position.last_price_paise) * position.quantity
            )
            reason, changed = self.exits.on_price(position, price)
            if changed:
                self.journal.position_updated(position)
                if not was_trailing and self._records:
                    self._audit(
                        "exit.trailing_armed",
                        "position",
                        key,
                        self.clock.now(),
                        {
                            "price_paise": price,
                            "target_paise": position.target_paise,
                            "trail_stop_paise": position.trail_stop_paise,
                        },
                    )
            if reason is not None and not position.exit_pending and key not in self.exit_queue:
                self._queue_exit(key, reason)
            self._check_loss_limit()
        if self.exit_queue:
            intents.extend(self._drain_exits())
        return intents

    def on_quiet_trade(
        self, instrument_key: str, ts_ms: int, price_paise: int, ltq: int
    ) -> list[OrderIntent] | None:
        """Apply a trade, as `on_tick` with that tick would, when it needs no timer, no exit
        check and no queued exit: before the next timer, with no position in the instrument
        and no exit waiting. A backtest feeds most trades of the minutes it steps this way,
        without building a Tick.

        Returns:
            The orders to place now (as `on_tick`); None, with nothing changed, when the trade
            needs `on_tick`.
        """
        if ts_ms >= self._next_timer_ms or self.exit_queue or instrument_key in self.positions:
            return None
        self.last_price[instrument_key] = price_paise
        closed = self.aggregator.on_trade(instrument_key, ts_ms, price_paise, ltq)
        if closed is None:
            return []
        intents = self._on_base_candle(closed)
        if self.exit_queue:
            intents.extend(self._drain_exits())
        return intents

    def on_timer(self, now_ms: int) -> list[OrderIntent]:
        """Advance market time: close candles, square off, roll the day, release queued exits."""
        intents: list[OrderIntent] = []
        # IST day and time of day by integer arithmetic: this runs once a minute, and once a
        # bar in backtests, so no datetime is built unless the day changes.
        day_index, ms_of_day = divmod(now_ms + IST_OFFSET_MS, DAY_MS)
        if day_index != self._day_index:
            self._day_index = day_index
            new_date = ms_to_datetime(now_ms).astimezone(IST).date()
            if new_date != self.day.trading_date:
                self._roll_day(new_date)
        if self.positions:
            self._check_expiry_exits()
        if self.exit_queue:
            intents.extend(self._drain_exits())
        for candle in self.aggregator.flush(now_ms):
            intents.extend(self._on_base_candle(candle))
        if self.resampler is not None:
            for candle in self.resampler.flush(now_ms):
                intents.extend(self._on_strategy_candle(candle))
        if (
            not self.day.square_off_done
            and self._square_off_ms is not None
            and ms_of_day >= self._square_off_ms
        ):
            self.day.square_off_done = True
            for key in list(self.positions):
                self.request_exit(key, ExitReason.SQUARE_OFF)
        if self.exit_queue:
            intents.extend(self._drain_exits())
        if now_ms >= self._next_timer_ms:
            self._next_timer_ms = (now_ms // MINUTE_MS + 1) * MINUTE_MS
            if self.positions and self.config.snapshot_every_minute:
                self._journal_account()
        return intents

    def _on_base_candle(self, candle: Candle) -> list[OrderIntent]:
        self.journal.candle(candle)
        if self.resampler is None:
            return self._on_strategy_candle(candle)
        intents: list[OrderIntent] = []
        for multiple in self.resampler.on_candle(candle):
            self.journal.candle(multiple)
            intents.extend(self._on_strategy_candle(multiple))
        return intents

    def _on_strategy_candle(self, candle: Candle) -> list[OrderIntent]:
        key = candle.instrument_key
        series = self.series.get(key)
        if series is None:
            series = CandleSeries(key, candle.interval_s, self.config.series_capacity)
            self.series[key] = series
        last = series.last_start_ms
        if last is not None and candle.start_ms <= last:
            # The window holds this minute already (a candle closed again after a rebuild
            # from the store): deciding on it twice would be wrong, stopping the engine worse.
            self.stale_candles += 1
            log.error(
                "candle.stale",
                extra={"key": key, "start_ms": candle.start_ms, "last_start_ms": last},
            )
            return []
        series.append(candle)
        strategy = self.strategy
        if len(series) < strategy.startup_candles or key not in self.instruments:
            return []
        now = None
        try:
            # may_signal first: on most candles it says there is nothing to evaluate.
            if strategy.may_signal(series):
                held = self._held_for(key)
                now = self.clock.now()
                said = strategy.evaluate(series, position=held[1] if held else None, now=now)
            else:
                said = ()
        except Exception:
            # A strategy bug must not stop exits or other instruments: log, skip this candle.
            log.exception("strategy.error", extra={"strategy": strategy.name, "key": key})
            return []
        if not said or now is None:
            return []
        intents: list[OrderIntent] = []
        for s in said:
            intent = self._on_signal(s, candle, now)
            if intent is not None:
                intents.append(intent)
        return intents

    def _on_signal(self, said: StrategySignal, candle: Candle, now: datetime) -> OrderIntent | None:
        key = candle.instrument_key
        signal = Signal(
            signal_id=SignalId(
                derive_id(
                    "sg",
                    self.config.account,
                    self.strategy.name,
                    key,
                    candle.start_ms,
                    candle.interval_s,
                    said.type.value,
                )
            ),
            instrument_key=key,
            strategy=self.strategy.name,
            type=said.type,
            strength=min(1.0, max(0.0, said.strength)),
            reason=said.reason,
            price_paise=candle.close_paise,
            candle_start_ms=candle.start_ms,
            created_at=now,
            indicators=dict(said.indicators),
        )
        if not said.type.is_entry:
            # An exit signal on the stock closes what its entry opened: the stock, its future,
            # or the option (a call for EXIT_LONG, a put for EXIT_SHORT).
            held = self._held_for(key)
            if held is None or held[1] is not said.type.direction:
                self.journal.signal(signal, SignalStatus.IGNORED)
                return None
            self.journal.signal(signal, SignalStatus.ACCEPTED)
            self.request_exit(held[0], ExitReason.SIGNAL)
            return None
        now_ms = self.clock.now_ms()
        last = self.last_entry_signal_ms.get(key)
        cooldown_ms = self.config.signal_cooldown_s * 1000
        if last is not None and now_ms - last < cooldown_ms:
            self.journal.signal(signal, SignalStatus.IGNORED)
            return None
        self.last_entry_signal_ms[key] = now_ms
        self.journal.signal(signal, SignalStatus.NEW)
        return self._try_entry(signal, now, now_ms)

    def _held_for(self, underlying_key: str) -> tuple[str, Direction] | None:
        """The position held on a stock (itself or one of its contracts): its key and the
        signal direction it stands for."""
        router = self.router
        for key, position in self.positions.items():
            if router.underlying_key(key) == underlying_key:
                return key, router.signal_direction(key, position.direction)
        return None

    def _holds(self, underlying_key: str) -> bool:
        """Whether a position or an entry on its way is on this stock or one of its contracts."""
        router = self.router
        return any(
            router.underlying_key(key) == underlying_key
            for keys in (self.positions, self.pending_entries)
            for key in keys
        )

    def request_entry(self, signal: Signal) -> OrderIntent | None:
        """Run an entry signal raised outside the strategy (a manual trade) through the same
        routing, risk checks and pacing; the caller journals the signal first.

        Returns:
            The order intent to execute, or None when a rule refused it (decision journaled).
        """
        if not signal.type.is_entry:
            raise ValueError("request_entry takes an entry signal")
        return self._try_entry(signal, self.clock.now(), self.clock.now_ms())

    def _try_entry(self, signal: Signal, now: datetime, now_ms: int) -> OrderIntent | None:
        underlying_key = signal.instrument_key
        route = self.router.route(
            self.instruments[underlying_key],
            direction=signal.type.direction,
            spot_paise=self.last_price.get(underlying_key, 0),
            at_ms=now_ms,
            trading_date=self.day.trading_date,
        )
        instrument = route.instrument
        key = instrument.instrument_key if instrument is not None else underlying_key
        direction = route.direction or signal.type.direction
        price = route.price_paise
        stop, target = self.exits.rules.levels(direction, price) if price else (0, 0)
        if self.exit_queue:
            decision = RiskDecision(
                approved=False,
                rule=RiskRule.ORDER_SPACING,
                reason="an exit is waiting for an order slot; exits go first",
                instrument_key=key,
                signal_id=signal.signal_id,
                price_paise=price,
                decided_at=now,
            )
        elif instrument is None:
            decision = RiskDecision(
                approved=False,
                rule=route.rule or RiskRule.NO_CONTRACT,
                reason=route.reason,
                instrument_key=key,
                signal_id=signal.signal_id,
                decided_at=now,
            )
        elif instrument.kind is not InstrumentKind.EQUITY and price > 0 and stop == price:
            decision = RiskDecision(
                approved=False,
                rule=RiskRule.NO_PRICE,
                reason=(
                    f"{instrument.trading_symbol} at {format_rupees(price)} is too cheap for a stop"
                ),
                instrument_key=key,
                signal_id=signal.signal_id,
                price_paise=price,
                decided_at=now,
            )
        else:
            # The book is read only here: a refusal above needs none of it.
            book = BookState(
                open_positions=self.open_position_count,
                in_position=self._holds(underlying_key),
                day_pnl_paise=self.day_pnl_paise,
                loss_limit_hit=self.day.loss_limit_hit,
                available_paise=self.available_paise(),
            )
            decision = self._check_routed_entry(
                instrument, direction, signal, price, stop, target, book, now, now_ms
            )
        self.journal.risk_decision(decision)
        if not decision.approved:
            self.journal.signal_status(signal.signal_id, SignalStatus.REJECTED)
            if self._records:
                self._audit(
                    "risk.refused",
                    "signal",
                    signal.signal_id,
                    now,
                    {
                        "rule": decision.rule.value if decision.rule else None,
                        "reason": decision.reason,
                        "instrument_key": key,
                        **({"underlying_key": underlying_key} if key != underlying_key else {}),
                    },
                )
            return None
        self.journal.signal_status(signal.signal_id, SignalStatus.ACCEPTED)
        intent = OrderIntent(
            client_order_id=ClientOrderId(
                derive_id("ub", self.config.account, "entry", signal.signal_id)
            ),
            instrument_key=key,
            side=direction.entry_side,
            quantity=decision.quantity,
            lots=decision.lots,
            purpose=OrderPurpose.ENTRY,
            reason=signal.reason,
            created_at=now,
            signal_id=signal.signal_id,
            reference_price_paise=price,
        )
        self.risk.rate_limiter.record(now_ms)
        self.pending_entries[key] = intent
        if self._records:
            self._audit(
                "order.intent",
                "order",
                intent.client_order_id,
                now,
                {
                    "purpose": "entry",
                    "instrument_key": key,
                    "side": intent.side.value,
                    "quantity": intent.quantity,
                    "signal_id": signal.signal_id,
                    **(
                        {"underlying_key": underlying_key, "route": route.reason}
                        if key != underlying_key
                        else {}
                    ),
                },
            )
        return intent

    def _check_routed_entry(
        self,
        instrument: Instrument,
        direction: Direction,
        signal: Signal,
        price: int,
        stop: int,
        target: int,
        book: BookState,
        now: datetime,
        now_ms: int,
    ) -> RiskDecision:
        if instrument.kind is not InstrumentKind.EQUITY and price > 0:
            # F&O trade in whole lots: a contract whose one lot breaks the position cap or the
            # risk per trade is refused naming that rule, whatever the book looks like.
            smallest = check_smallest_lot(
                contract=instrument,
                price_paise=price,
                stop_paise=stop,
                limits=self.risk.limits,
                signal_id=signal.signal_id,
                at=now,
            )
            if not smallest.approved:
                return smallest
        return self.risk.check_entry(
            EntryRequest(
                instrument_key=instrument.instrument_key,
                direction=direction,
                signal_id=signal.signal_id,
                price_paise=price,
                stop_paise=stop,
                target_paise=target,
                lot_size=instrument.lot_size,
                at=now,
                at_ms=now_ms,
            ),
            book,
        )

    # --- exits -----------------------------------------------------------------------------

    def request_exit(self, instrument_key: str, reason: ExitReason) -> None:
        """Queue the exit of an open position (idempotent while one is queued or working).

        Raises:
            NotFound: no open position in that instrument.
        """
        position = self.positions.get(instrument_key)
        if position is None:
            raise NotFound(f"no open position in {instrument_key}")
        if position.exit_pending or instrument_key in self.exit_queue:
            return
        self._queue_exit(instrument_key, reason)

    def _queue_exit(self, key: str, reason: ExitReason) -> None:
        self.exit_queue[key] = reason
        position = self.positions[key]
        if self._records:
            self._audit(
                "exit.triggered",
                "position",
                key,
                self.clock.now(),
                {
                    "reason": reason.value,
                    "price_paise": position.last_price_paise,
                    "stop_paise": position.stop_paise,
                    "trail_stop_paise": position.trail_stop_paise,
                    "target_paise": position.target_paise,
                },
            )

    def _drain_exits(self) -> list[OrderIntent]:
        intents: list[OrderIntent] = []
        now_ms = self.clock.now_ms()
        while self.exit_queue:
            if not self.risk.rate_limiter.check(now_ms).allowed:
                break
            key, reason = next(iter(self.exit_queue.items()))
            del self.exit_queue[key]
            position = self.positions.get(key)
            if position is None or position.exit_pending:
                continue
            attempt = self.exit_attempts.get(key, 0) + 1
            self.exit_attempts[key] = attempt
            now = self.clock.now()
            intent = OrderIntent(
                client_order_id=ClientOrderId(
                    derive_id("ub", self.config.account, "exit", position.entry_order_id, attempt)
                ),
                instrument_key=key,
                side=position.direction.exit_side,
                quantity=position.quantity,
                lots=position.lots,
                purpose=OrderPurpose.EXIT,
                reason=reason.value,
                created_at=now,
                exit_reason=reason,
                reference_price_paise=position.last_price_paise,
            )
            position.exit_pending = True
            self.journal.position_updated(position)
            self.risk.rate_limiter.record(now_ms)
            intents.append(intent)
            if faults.ENABLED:
                faults.point("exit.sent")
        return intents

    # --- order lifecycle -------------------------------------------------------------------

    def on_order_created(self, order: Order) -> None:
        """Track an order the executor recorded (status PENDING or later)."""
        self.orders[order.client_order_id] = order
        self.day.orders += 1

    def on_fill(self, fill: Fill) -> None:
        """Apply a fill to its order, then to the position (open, or close into a trade)."""
        order = self.orders.get(fill.client_order_id)
        if order is None:
            raise NotFound(f"fill for unknown order {fill.client_order_id}")
        order_state.apply_fill(order, fill.quantity, fill.price_paise, fill.filled_at)
        self.journal.order(order)
        self.journal.fill(fill)
        if faults.ENABLED:
            faults.point("fill.applied")
        if self._records:
            self._audit(
                "order.filled" if order.status is OrderStatus.FILLED else "order.partial",
                "order",
                order.client_order_id,
                fill.filled_at,
                {
                    "quantity": fill.quantity,
                    "price_paise": fill.price_paise,
                    "filled_quantity": order.filled_quantity,
                },
            )
        if order.purpose is OrderPurpose.ENTRY:
            self._apply_entry_fill(order, fill)
        elif order.status is OrderStatus.FILLED:
            self._close_position(order, fill.filled_at)
        if order.status.is_terminal:
            del self.orders[order.client_order_id]

    def _apply_entry_fill(self, order: Order, fill: Fill) -> None:
        key = order.instrument_key
        if order.status is OrderStatus.FILLED:
            # A part-filled entry keeps the rest reserved until it fills or ends (on_order_closed).
            self.pending_entries.pop(key, None)
        position = self.positions.get(key)
        price = order.average_price_paise or fill.price_paise
        direction = Direction.LONG if order.side.value == "buy" else Direction.SHORT
        stop, target = self.exits.rules.levels(direction, price)
        if position is None:
            position = Position(
                instrument_key=key,
                direction=direction,
                quantity=order.filled_quantity,
                lots=order.filled_quantity // self._lot_size(key),
                entry_price_paise=price,
                entry_at=fill.filled_at,
                entry_order_id=order.client_order_id,
                stop_paise=stop,
                target_paise=target,
                best_price_paise=price,
                last_price_paise=self.last_price.get(key, price),
                strategy=self.strategy.name,
            )
            self.positions[key] = position
            self._unrealised_paise += position.unrealised_pnl_paise
            self.journal.position_opened(position)
            event = "position.opened"
        else:
            self._unrealised_paise -= position.unrealised_pnl_paise
            position.quantity = order.filled_quantity
            position.lots = order.filled_quantity // self._lot_size(key)
            position.entry_price_paise, position.stop_paise = price, stop
            position.target_paise, position.best_price_paise = target, price
            self._unrealised_paise += position.unrealised_pnl_paise
            self.journal.position_updated(position)
            event = "position.increased"
        if self._records:
            self._audit(
                event,
                "position",
                key,
                fill.filled_at,
                {
                    "direction": direction.value,
                    "quantity": position.quantity,
                    "entry_price_paise": price,
                    "stop_paise": stop,
                    "target_paise": target,
                },
            )
        self._journal_account()

    def _lot_size(self, key: str) -> int:
        instrument = self.instruments.get(key) or self.router.instrument_or_none(key)
        if instrument is None:
            raise NotFound(f"unknown instrument {key}")
        return instrument.lot_size

    def _close_position(self, order: Order, at: datetime) -> None:
        key = order.instrument_key
        position = self.positions.pop(key)
        self._unrealised_paise -= position.unrealised_pnl_paise
        exit_price = order.average_price_paise or position.last_price_paise
        position.last_price_paise = exit_price
        trade = self._book_trade(
            position,
            order,
            trade_id=derive_id("tr", position.entry_order_id),
            quantity=order.quantity,
            lots=position.lots,
            exit_price_paise=exit_price,
            at=at,
        )
        gross, charges = trade.gross_pnl_paise, trade.charges_paise
        self.exit_attempts.pop(key, None)
        self.journal.position_closed(position, trade)
        if self._records:
            self._audit(
                "position.closed",
                "position",
                key,
                at,
                {
                    "exit_reason": trade.exit_reason.value,
                    "exit_price_paise": exit_price,
                    "gross_pnl_paise": gross,
                    "charges_paise": charges,
                    "net_pnl_paise": trade.net_pnl_paise,
                    "trade_id": trade.trade_id,
                },
            )
        self._check_loss_limit()
        self._journal_account()

    def _book_trade(
        self,
        position: Position,
        order: Order,
        *,
        trade_id: str,
        quantity: int,
        lots: int,
        exit_price_paise: int,
        at: datetime,
    ) -> Trade:
        """The trade of `quantity` of the position closed by `order` at `exit_price_paise`,
        booked into the day's realised P&L, charges and trade count."""
        gross = position.direction.sign * (exit_price_paise - position.entry_price_paise) * quantity
        charges = self.charges(
            direction=position.direction,
            entry_price_paise=position.entry_price_paise,
            exit_price_paise=exit_price_paise,
            quantity=quantity,
            trading_date=self.day.trading_date,
        )
        trade = Trade(
            trade_id=trade_id,
            instrument_key=position.instrument_key,
            direction=position.direction,
            quantity=quantity,
            lots=lots,
            entry_price_paise=position.entry_price_paise,
            exit_price_paise=exit_price_paise,
            entry_at=position.entry_at,
            exit_at=at,
            gross_pnl_paise=gross,
            charges_paise=charges,
            net_pnl_paise=gross - charges,
            exit_reason=order.exit_reason or ExitReason.MANUAL,
            entry_order_id=position.entry_order_id,
            exit_order_id=order.client_order_id,
            strategy=position.strategy,
        )
        self.day.realised_paise += trade.net_pnl_paise
        self.day.charges_paise += charges
        self.day.trades += 1
        return trade

    def on_order_cancelled(self, client_order_id: str, *, by: str) -> None:
        """A working entry order was cancelled at the broker: free its slot and its cash.

        Raises:
            NotFound: no working order with that id.
            Conflict: it is an exit (an exit is never dropped: close the position instead).
        """
        order = self.orders.get(client_order_id)
        if order is None:
            raise NotFound(f"no working order {client_order_id}")
        if order.purpose is OrderPurpose.EXIT:
            raise Conflict("an exit order is not cancelled: a stop must never be lost")
        now = self.clock.now()
        order_state.transition(order, OrderStatus.CANCELLED, now)
        del self.orders[client_order_id]
        self.pending_entries.pop(order.instrument_key, None)
        self.journal.order(order)
        if self._records:
            self._audit("order.cancelled", "order", client_order_id, now, {}, actor=by)

    def on_order_closed(
        self, client_order_id: str, status: OrderStatus, reason: str, *, by: str = "broker"
    ) -> None:
        """An order ended at the broker without filling in full (cancelled there, or rejected
        for the rest); the fills it had were applied before. Settle what it leaves.

        Nothing filled: a rejection is :meth:`on_order_rejected`; a cancelled entry frees its
        slot and cash, a cancelled exit goes back in the queue. Part filled: an entry's filled
        quantity stays the position (opened by its fills, stop and target from their price) and
        the rest is released; an exit's filled quantity is realised as a trade (charges on that
        part), the rest of the position stays open and its exit is queued again: an exit is
        never dropped. An order the engine no longer follows is ignored (a repeated report).

        Args:
            status: REJECTED or CANCELLED, as the broker ended it.
            reason: the broker's message (audited).
            by: who asked for the cancel (audit actor); ``broker`` when nobody here did.
        """
        order = self.orders.get(client_order_id)
        if order is None:
            log.warning("order.close.ignored", extra={"client_order_id": client_order_id})
            return
        if order.filled_quantity == 0 and status is OrderStatus.REJECTED:
            self.on_order_rejected(client_order_id, reason)
            return
        now = self.clock.now()
        order_state.transition(order, OrderStatus.CANCELLED, now)
        del self.orders[client_order_id]
        self.journal.order(order)
        key = order.instrument_key
        if self._records:
            self._audit(
                "order.cancelled",
                "order",
                client_order_id,
                now,
                {
                    "reason": reason,
                    "broker_status": status.value,
                    "filled_quantity": order.filled_quantity,
                    "released_quantity": order.quantity - order.filled_quantity,
                    "average_price_paise": order.average_price_paise,
                },
                actor=by,
            )
        if order.purpose is OrderPurpose.ENTRY:
            self.pending_entries.pop(key, None)
            if order.filled_quantity:
                self._journal_account()
            return
        position = self.positions.get(key)
        if position is None:
            return
        if order.filled_quantity:
            self._reduce_position(position, order, now)
        position.exit_pending = False
        self.journal.position_updated(position)
        self._queue_exit(key, order.exit_reason or ExitReason.MANUAL)
        if order.filled_quantity:
            self._journal_account()

    def _reduce_position(self, position: Position, order: Order, at: datetime) -> None:
        # The filled part of an exit that ended early: a trade of its own (the position row
        # closes with that part) and the rest of the position opens again under the same entry.
        key = position.instrument_key
        filled = min(order.filled_quantity, position.quantity - 1)
        lot = self._lot_size(key)
        exit_price = order.average_price_paise or position.last_price_paise
        self._unrealised_paise -= position.unrealised_pnl_paise
        part = replace(
            position,
            quantity=filled,
            lots=filled // lot,
            last_price_paise=exit_price,
            exit_pending=False,
        )
        trade = self._book_trade(
            position,
            order,
            trade_id=derive_id("tr", position.entry_order_id, order.client_order_id),
            quantity=filled,
            lots=part.lots,
            exit_price_paise=exit_price,
            at=at,
        )
        gross, charges = trade.gross_pnl_paise, trade.charges_paise
        self.journal.position_closed(part, trade)
        position.quantity -= filled
        position.lots = position.quantity // lot
        position.exit_pending = False
        self._unrealised_paise += position.unrealised_pnl_paise
        self.journal.position_opened(position)
        if self._records:
            self._audit(
                "position.reduced",
                "position",
                key,
                at,
                {
                    "exit_reason": trade.exit_reason.value,
                    "closed_quantity": filled,
                    "open_quantity": position.quantity,
                    "exit_price_paise": exit_price,
                    "gross_pnl_paise": gross,
                    "charges_paise": charges,
                    "net_pnl_paise": trade.net_pnl_paise,
                    "trade_id": trade.trade_id,
                },
            )
        self._check_loss_limit()

    def on_order_rejected(self, client_order_id: str, reason: str) -> None:
        """A broker refused an order: free the entry slot, or queue the exit again."""
        order = self.orders.pop(client_order_id, None)
        if order is None:
            raise NotFound(f"rejection for unknown order {client_order_id}")
        now = self.clock.now()
        try:
            order_state.transition(order, OrderStatus.REJECTED, now, reason=reason)
        except InvalidTransition:
            log.warning("order.reject.ignored", extra={"client_order_id": client_order_id})
            return
        self.journal.order(order)
        if self._records:
            self._audit("order.rejected", "order", client_order_id, now, {"reason": reason})
        key = order.instrument_key
        if order.purpose is OrderPurpose.ENTRY:
            self.pending_entries.pop(key, None)
            return
        position = self.positions.get(key)
        if position is not None:
            # The position is still open: its exit goes back in the queue, never dropped.
            position.exit_pending = False
            self.journal.position_updated(position)
            self._queue_exit(key, order.exit_reason or ExitReason.MANUAL)

    def restore_position(self, position: Position) -> None:
        """Take over an open position recorded earlier (restart recovery), stop state intact.

        Raises:
            Conflict: a position in that instrument is already held.
        """
        if position.instrument_key in self.positions:
            raise Conflict(f"a position in {position.instrument_key} is already held")
        self.positions[position.instrument_key] = position
        self._unrealised_paise += position.unrealised_pnl_paise

    # --- recovery: rebuilding state after a restart (runtime/recovery.py drives these) ---

    def warm_tick(self, tick: Tick) -> None:
        """Rebuild market state from a tick already acted on before a restart: the candles
        being built (closing them exactly where on_tick did) and last prices, with no decision,
        no candle emitted and nothing journaled."""
        closed: list[Candle] = []
        if tick.ts_ms >= self._next_timer_ms:
            closed.extend(self.aggregator.flush(tick.ts_ms))
            if self.resampler is not None:
                self.resampler.flush(tick.ts_ms)
            self._next_timer_ms = (tick.ts_ms // MINUTE_MS + 1) * MINUTE_MS
        self.last_price[tick.instrument_key] = tick.ltp_paise
        candle = self.aggregator.on_tick(tick)
        if candle is not None:
            closed.append(candle)
        if self.resampler is not None:
            for base in closed:
                self.resampler.on_candle(base)

    def warm_timer(self, now_ms: int) -> None:
        """Rebuild the effect of an on_timer call made before a restart (candles it closed)."""
        self.aggregator.flush(now_ms)
        if self.resampler is not None:
            self.resampler.flush(now_ms)
        if now_ms >= self._next_timer_ms:
            self._next_timer_ms = (now_ms // MINUTE_MS + 1) * MINUTE_MS

    def restore_candles(self, instrument_key: str, candles: list[Candle]) -> None:
        """Refill the strategy's window of closed candles (oldest first)."""
        series = CandleSeries(
            instrument_key, self.config.candle_interval_s, self.config.series_capacity
        )
        for candle in candles[-self.config.series_capacity :]:
            series.append(candle)
        self.series[instrument_key] = series

    # --- backtest fast path: bars proved to change nothing but the candles and prices ---

    @property
    def next_timer_ms(self) -> int:
        """The time from which the next tick runs `on_timer` first."""
        return self._next_timer_ms

    def extend_candles(
        self, instrument_key: str, start_ms: npt.NDArray[np.int64], rows: npt.NDArray[np.float64]
    ) -> None:
        """Add closed strategy candles that the caller knows make no signal, without evaluating
        them: the window ends up as if each had closed in turn (`rows` as `CandleSeries.extend`
        takes them: open, high, low, close in rupees, and volume)."""
        series = self.series.get(instrument_key)
        if series is None:
            series = CandleSeries(
                instrument_key, self.config.candle_interval_s, self.config.series_capacity
            )
            self.series[instrument_key] = series
        series.extend(start_ms, rows)

    def refuses_entries_when_flat(self, at_ms: int) -> bool:
        """Whether a candle closing at `at_ms` can change nothing but records, whatever the
        strategy says: the book is flat (no position, order, pending entry or queued exit), so
        an exit signal is ignored, and the risk manager would refuse every entry then (kill
        switch, entries paused, entry window, or the daily loss limit, the day's P&L being
        realised); with no signal cooldown, the time a refused entry leaves is never read."""
        if (
            self.positions
            or self.orders
            or self.pending_entries
            or self.exit_queue
            or self.config.signal_cooldown_s
        ):
            return False
        if self.day.loss_limit_hit or self.risk.loss_limit_breached(self.day_pnl_paise):
            return True
        return self.risk.refuses_every_entry(ms_to_datetime(at_ms))

    def apply_quiet_prices(self, prices: Mapping[str, int]) -> None:
        """Move last prices (and the open positions' unrealised P&L) to where ticks the caller
        proved to touch no exit level and no loss limit left them."""
        for key, price in prices.items():
            self.last_price[key] = price
            position = self.positions.get(key)
            if position is not None:
                self._unrealised_paise += (
                    position.direction.sign
                    * (price - position.last_price_paise)
                    * position.quantity
                )
                position.last_price_paise = price

    def restore_order(self, order: Order, reference_price_paise: int) -> None:
        """Track an order left in flight; an entry keeps its slot and its cash reserved."""
        self.orders[order.client_order_id] = order
        if order.purpose is OrderPurpose.ENTRY:
            self.pending_entries[order.instrument_key] = OrderIntent(
                client_order_id=order.client_order_id,
                instrument_key=order.instrument_key,
                side=order.side,
                quantity=order.quantity,
                lots=order.lots,
                purpose=order.purpose,
                reason=order.reason,
                created_at=order.created_at,
                signal_id=order.signal_id,
                reference_price_paise=reference_price_paise,
            )

    def restore_exit(self, instrument_key: str, reason: ExitReason | None, attempts: int) -> None:
        """Put back an exit that was waiting for an order slot, and the exit attempt count."""
        if attempts:
            self.exit_attempts[instrument_key] = attempts
        if reason is not None and instrument_key in self.positions:
            self.exit_queue[instrument_key] = reason

    def restore_day(
        self,
        *,
        realised_paise: int,
        charges_paise: int,
        trades: int,
        orders: int,
        loss_limit_hit: bool,
        last_entry_signal_ms: Mapping[str, int],
    ) -> None:
        """Put back the day's counters and flags as they were recorded."""
        self.day.realised_paise = realised_paise
        self.day.charges_paise = charges_paise
        self.day.trades = trades
        self.day.orders = orders
        self.day.loss_limit_hit = loss_limit_hit
        ms_of_day = (self.clock.now_ms() + IST_OFFSET_MS) % DAY_MS
        self.day.square_off_done = (
            self._square_off_ms is not None and ms_of_day >= self._square_off_ms
        )
        self.last_entry_signal_ms.update(last_entry_signal_ms)
        self._next_timer_ms = (self.clock.now_ms() // MINUTE_MS + 1) * MINUTE_MS

    # --- commands --------------------------------------------------------------------------

    def set_kill_switch(self, active: bool, *, reason: str, by: str) -> None:
        """Turn the kill switch on or off; on closes open positions when configured so."""
        now = self.clock.now()
        changed = self.risk.kill_switch.set(active, reason=reason, at=now, by=by)
        if changed and self._records:
            self._audit(
                "kill_switch." + ("on" if active else "off"),
                "account",
                self.config.account,
                now,
                {"reason": reason},
                actor=by,
            )
        if active and self.config.kill_switch_square_off:
            for key in list(self.positions):
                self.request_exit(key, ExitReason.KILL_SWITCH)
        self._journal_account()

    # --- day and loss limit ----------------------------------------------------------------

    def _check_expiry_exits(self) -> None:
        # Stock F&O settle physically: a contract is closed on its expiry exit date.
        today = self.day.trading_date
        for key, position in self.positions.items():
            exit_date = self.router.exit_date(key)
            if exit_date is None or exit_date > today:
                continue
            if not position.exit_pending and key not in self.exit_queue:
                self._queue_exit(key, ExitReason.EXPIRY)

    def _check_loss_limit(self) -> None:
        if not self.day.loss_limit_hit and self.risk.loss_limit_breached(self.day_pnl_paise):
            self.day.loss_limit_hit = True
            now = self.clock.now()
            if self._records:
                self._audit(
                    "risk.daily_loss_limit_hit",
                    "account",
                    self.config.account,
                    now,
                    {
                        "day_pnl_paise": self.day_pnl_paise,
                        "limit_paise": self.risk.limits.daily_loss_limit_paise,
                    },
                )
            self._journal_account()

    def _roll_day(self, new_date: date) -> None:
        self._journal_account()
        self.day = DayState(
            trading_date=new_date,
            capital_paise=self.day.capital_paise + self.day.realised_paise,
        )
        self.last_entry_signal_ms.clear()
        if self._records:
            self._audit(
                "day.started",
                "account",
                self.config.account,
                self.clock.now(),
                {"trading_date": new_date.isoformat()},
            )

    # --- audit -----------------------------------------------------------------------------

    def _journal_account(self) -> None:
        if self._records:
            self.journal.account(self.snapshot())

    def _audit(
        self,
        event: str,
        entity: str,
        entity_id: str,
        at: datetime,
        data: Mapping[str, object],
        actor: str = "engine",
    ) -> None:
        self.journal.audit(
            AuditRecord(
                event=event, entity=entity, entity_id=entity_id, at=at, data=dict(data), actor=actor
            )
        )


def _ist_date(at: datetime) -> date:
    return at.astimezone(IST).date()
