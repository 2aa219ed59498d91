"""Pre-trade checks: every hard rule, in a fixed order, each refusal with its rule and reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from upstox_bot.clock import NseCalendar
from upstox_bot.domain import (
    IST,
    Direction,
    Instrument,
    InstrumentKind,
    RiskDecision,
    RiskRule,
    SignalId,
    reduce_to_fields,
)
from upstox_bot.money import format_rupees
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.risk.rate_limit import OrderRateLimiter
from upstox_bot.risk.sizing import margin_paise, size_position, worst_fill_paise

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryRequest:
    """A proposed entry with what the risk manager needs to judge it."""

    instrument_key: str
    direction: Direction
    signal_id: SignalId | None
    price_paise: int
    stop_paise: int
    target_paise: int
    lot_size: int
    at: datetime  # IST-aware time of the decision
    at_ms: int
    tick_paise: int = 0  # the instrument's tick: one tick of room when sizing (0: none)
    margin_fraction: Decimal | None = None  # a future's margin / value; None: full value

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class BookState:
    """The account as the risk manager sees it at decision time."""

    open_positions: int
    in_position: bool  # already holding (or exiting) this instrument
    day_pnl_paise: int  # realised (net) + unrealised, today
    loss_limit_hit: bool
    available_paise: int  # cash not tied up in positions

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


class RiskManager:
    """Vets entries against the hard limits. Exits are never refused, only paced."""

    def __init__(
        self,
        limits: RiskLimits,
        rate_limiter: OrderRateLimiter,
        kill_switch: KillSwitch,
        *,
        calendar: NseCalendar | None = None,
    ) -> None:
        """Set up the checks.

        Args:
            calendar: the NSE calendar of a live or paper session: no entry is taken on a date
                whose year it has no list for (a backtest passes None: its bars are the
                sessions).
        """
        self.limits = limits
        self.rate_limiter = rate_limiter
        self.kill_switch = kill_switch
        self.entries_paused: str | None = None  # why new entries wait (token expired, ...)
        self.banned: frozenset[str] = frozenset()  # instrument keys in the F&O ban period
        self.calendar = calendar
        self._unknown_dates_warned: set[date] = set()
        # Margin per future as a fraction of its value, from Upstox's margin API (live); a
        # future not in here blocks FUTURES_MARGIN_PERCENT of its value.
        self.margin_fractions: dict[str, Decimal] = {}

    @property
    def limits(self) -> RiskLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: RiskLimits) -> None:
        """Replace the limits (settings changed live); derived amounts are recomputed once."""
        self._limits = limits
        self._loss_limit_paise = limits.daily_loss_limit_paise
        self._risk_per_trade_paise = limits.risk_per_trade_paise
        self._max_position_value_paise = limits.max_position_value_paise
        self._slippage_bps = limits.slippage_bps
        self._futures_margin = limits.futures_margin_pct / 100

    def margin_fraction(self, instrument: Instrument) -> Decimal | None:
        """The share of a position's value that it blocks: a future's margin, else None (all)."""
        if instrument.kind is not InstrumentKind.FUTURE:
            return None
        return self.margin_fractions.get(instrument.instrument_key, self._futures_margin)

    def blocked_paise(self, instrument: Instrument | None, value_paise: int) -> int:
        """The cash a position of `value_paise` in `instrument` ties up (a future: its margin)."""
        if instrument is None:
            return value_paise
        return margin_paise(value_paise, self.margin_fraction(instrument))

    def sizing_fill_paise(self, price_paise: int, tick_paise: int) -> int:
        """The fill an entry at `price_paise` is sized for (sizing.worst_fill_paise); the price
        itself when there is neither slippage nor a tick to leave room for."""
        if tick_paise <= 0 and self._slippage_bps == 0:
            return price_paise
        return worst_fill_paise(price_paise, slippage_bps=self._slippage_bps, tick_paise=tick_paise)

    def reconfigure(self, limits: RiskLimits) -> None:
        """Take new limits, the order pacing included (settings changed, or a new day's
        capital)."""
        self.limits = limits
        self.rate_limiter.max_per_minute = limits.max_orders_per_minute
        self.rate_limiter.min_interval_ms = limits.min_order_interval_s * 1000

    @property
    def loss_limit_paise(self) -> int:
        """The daily loss limit of the current limits (paise, positive)."""
        return self._loss_limit_paise

    def loss_limit_breached(self, day_pnl_paise: int) -> bool:
        """True when today's P&L is at or below minus the daily loss limit (per tick: O(1))."""
        return day_pnl_paise <= -self._loss_limit_paise

    def refuses_every_entry(self, at: datetime) -> bool:
        """Whether `check_entry` refuses every entry at `at` (aware), whatever the instrument,
        direction, price and book: a rule that reads only the time and the switches (kill
        switch, entries paused, entry window) says no."""
        return self._standing_refusal(None, at) is not None

    def _standing_refusal(
        self, instrument_key: str | None, at: datetime
    ) -> tuple[RiskRule, str] | None:
        # The rules checked first, in order, that read no price and no book (the F&O ban
        # only with an instrument).
        limits = self.limits
        if self.kill_switch.active:
            return RiskRule.KILL_SWITCH, f"kill switch on: {self.kill_switch.reason}"
        if self.entries_paused is not None:
            return RiskRule.ENTRIES_PAUSED, f"new entries paused: {self.entries_paused}"
        local = at.astimezone(IST)
        calendar = self.calendar
        if calendar is not None and not calendar.knows(local.date()):
            return RiskRule.ENTRIES_PAUSED, self._unknown_date(calendar, local.date())
        if instrument_key is not None and instrument_key in self.banned:
            return RiskRule.FNO_BAN, "the stock is in the NSE F&O ban period"
        clock_time = local.time()
        if not (limits.entry_start <= clock_time <= limits.entry_end):
            return (
                RiskRule.ENTRY_WINDOW,
                f"{clock_time:%H:%M:%S} is outside the entry window "
                f"{limits.entry_start:%H:%M}-{limits.entry_end:%H:%M} IST",
            )
        return None

    def _unknown_date(self, calendar: NseCalendar, day: date) -> str:
        reason = calendar.unknown_date_warning(day) or f"the NSE calendar does not know {day}"
        if day not in self._unknown_dates_warned:
            # Loud, once per date: weekdays of an unlisted year only look like trading days.
            self._unknown_dates_warned.add(day)
            log.error("calendar.unknown_date", extra={"date": day.isoformat(), "reason": reason})
        return reason

    def check_entry(self, req: EntryRequest, book: BookState) -> RiskDecision:
        """Approve and size an entry, or refuse it naming the first rule it breaks."""
        limits = self.limits

        def refuse(rule: RiskRule, reason: str) -> RiskDecision:
            return RiskDecision(
                approved=False,
                rule=rule,
                reason=reason,
                instrument_key=req.instrument_key,
                signal_id=req.signal_id,
                price_paise=req.price_paise,
                stop_paise=req.stop_paise,
                target_paise=req.target_paise,
                decided_at=req.at,
            )

        standing = self._standing_refusal(req.instrument_key, req.at)
        if standing is not None:
            return refuse(*standing)
        if book.loss_limit_hit or self.loss_limit_breached(book.day_pnl_paise):
            return refuse(
                RiskRule.DAILY_LOSS_LIMIT,
                f"daily loss limit hit: day P&L {format_rupees(book.day_pnl_paise)}, "
                f"limit {format_rupees(-limits.daily_loss_limit_paise)}",
            )
        if book.in_position:
            return refuse(RiskRule.ALREADY_IN_POSITION, "already holding this instrument")
        if book.open_positions >= limits.max_open_positions:
            return refuse(
                RiskRule.MAX_POSITIONS,
                f"{book.open_positions} positions open, limit {limits.max_open_positions}",
            )
        if req.direction is Direction.SHORT and not limits.allow_short:
            return refuse(RiskRule.SHORTS_DISABLED, "short entries are disabled (ALLOW_SHORT)")
        if req.price_paise <= 0:
            return refuse(RiskRule.NO_PRICE, "no last price for the instrument")
        rate = self.rate_limiter.check(req.at_ms)
        if not rate.allowed and rate.rule is not None:
            text = (
                f"an order was sent less than {limits.min_order_interval_s}s ago"
                if rate.rule is RiskRule.ORDER_SPACING
                else f"{limits.max_orders_per_minute} orders in the last minute"
            )
            return refuse(rate.rule, f"{text}; next slot in {rate.wait_ms / 1000:.1f}s")
        sizing = size_position(
            price_paise=req.price_paise,
            stop_paise=req.stop_paise,
            lot_size=req.lot_size,
            risk_budget_paise=self._risk_per_trade_paise,
            max_position_value_paise=self._max_position_value_paise,
            available_paise=book.available_paise,
            fill_paise=self.sizing_fill_paise(req.price_paise, req.tick_paise),
            margin_fraction=req.margin_fraction,
        )
        if sizing.lots == 0:
            return refuse(sizing.binding_rule, sizing.reason)
        return RiskDecision(
            approved=True,
            rule=None,
            reason=sizing.reason,
            instrument_key=req.instrument_key,
            signal_id=req.signal_id,
            quantity=sizing.quantity,
            lots=sizing.lots,
            price_paise=req.price_paise,
            stop_paise=req.stop_paise,
            target_paise=req.target_paise,
            decided_at=req.at,
        )
