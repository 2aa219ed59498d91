"""Turn settings into the core's frozen per-component configs (the composition root's half)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.clock import (
    CalendarDay,
    NseCalendar,
    merge_calendar_days,
    read_calendar_days,
    shipped_calendar_days,
)
from upstox_bot.config import Settings
from upstox_bot.domain import Direction, InstrumentKind, rupees_to_paise
from upstox_bot.risk.limits import RiskLimits
from upstox_bot.signals import registry
from upstox_bot.signals.base import Strategy
from upstox_bot.trading.charges import (
    BrokeragePlan,
    ChargeSegment,
    ContractNotes,
    OrderExecution,
)
from upstox_bot.trading.exits import ExitRules
from upstox_bot.trading.ports import ChargesModel

log = logging.getLogger(__name__)


def calendar_days(
    settings: Settings, sessions: sessionmaker[Session] | None = None
) -> list[CalendarDay]:
    """The NSE calendar's days: HOLIDAYS_FILE (else the shipped file), with every year fetched
    from Upstox's market-holidays API and stored in the database taking that year's place.

    Raises:
        ValueError: HOLIDAYS_FILE is malformed (the line is named).
        OSError: HOLIDAYS_FILE cannot be read.
    """
    if settings.HOLIDAYS_FILE:
        with settings.HOLIDAYS_FILE.open(newline="", encoding="utf-8") as handle:
            base = read_calendar_days(handle, str(settings.HOLIDAYS_FILE))
    else:
        base = shipped_calendar_days()
    if sessions is None:
        return base
    from upstox_bot.db.repositories.calendar_days import CalendarDayRepository
    from upstox_bot.db.session import session_scope

    try:
        with session_scope(sessions) as session:
            stored = CalendarDayRepository(session).find()
    except SQLAlchemyError:
        # A database without the table (not migrated yet) keeps the file's calendar.
        log.warning("calendar.stored_days_unreadable", exc_info=True)
        return base
    return merge_calendar_days(base, stored)


def trading_calendar(
    settings: Settings, sessions: sessionmaker[Session] | None = None
) -> NseCalendar:
    """The NSE calendar the bot trades by (see `calendar_days`)."""
    return NseCalendar.from_days(calendar_days(settings, sessions))


def risk_limits(settings: Settings, capital_paise: int | None = None) -> RiskLimits:
    """The hard limits; capital defaults to ACCOUNT_SIZE."""
    return RiskLimits(
        capital_paise=capital_paise
        if capital_paise is not None
        else rupees_to_paise(settings.ACCOUNT_SIZE),
        risk_per_trade_pct=settings.RISK_PER_TRADE,
        position_size_pct=settings.POSITION_SIZE_PERCENT,
        max_open_positions=settings.MAX_OPEN_POSITIONS,
        daily_loss_limit_pct=settings.DAILY_LOSS_LIMIT,
        max_orders_per_minute=settings.MAX_ORDERS_PER_MINUTE,
        min_order_interval_s=settings.MIN_ORDER_INTERVAL_SECONDS,
        entry_start=settings.ENTRY_START_TIME,
        entry_end=settings.ENTRY_END_TIME,
        allow_short=settings.ALLOW_SHORT,
        slippage_bps=settings.SLIPPAGE_BPS,
        futures_margin_pct=settings.FUTURES_MARGIN_PERCENT,
    )


def exit_rules(settings: Settings) -> ExitRules:
    return ExitRules(
        stop_loss_pct=settings.STOP_LOSS_PERCENT,
        take_profit_pct=settings.TAKE_PROFIT_PERCENT,
        trailing_stop_pct=settings.TRAILING_STOP_PERCENT,
        square_off=settings.SQUARE_OFF_TIME,
    )


def strategy(settings: Settings) -> Strategy:
    return registry.create(
        settings.STRATEGY, settings.STRATEGY_PARAMS, strategies_dir=settings.STRATEGIES_DIR
    )


SEGMENT_OF_TRADE = {
    InstrumentKind.EQUITY: ChargeSegment.EQUITY_INTRADAY,
    InstrumentKind.FUTURE: ChargeSegment.FUTURES,
    InstrumentKind.OPTION: ChargeSegment.OPTIONS,
}


class IntradayCharges:
    """Charges of intraday trades on Upstox's contract notes (standard plan): each trade in the
    segment of what it traded (the stock as equity intraday, a future, an option), charged what
    it adds to its scrip's note of the day (trading.charges.ContractNotes)."""

    def __init__(self, plan: BrokeragePlan, *, clamp_rates: bool = False) -> None:
        self.plan = plan
        self.notes = ContractNotes(plan, clamp_rates=clamp_rates)

    def __call__(
        self,
        *,
        direction: Direction,
        entry_price_paise: int,
        exit_price_paise: int,
        quantity: int,
        trading_date: date,
        kind: InstrumentKind,
        instrument_key: str,
        entry_order: OrderExecution,
        exit_order: OrderExecution,
    ) -> int:
        return self.notes.charge(
            instrument_key=instrument_key,
            segment=SEGMENT_OF_TRADE[kind],
            trade_date=trading_date,
            orders=(entry_order, exit_order),
        )


def restore_contract_notes(
    model: ChargesModel,
    trading_date: date,
    trades: Sequence[tuple[str, InstrumentKind, int, Sequence[OrderExecution]]],
) -> None:
    """After a restart, give a contract-note charges model the notes of the day's trades so
    far: (instrument key, what it is, the charges its trades paid, their orders) per note. A
    model without notes is left alone."""
    if not isinstance(model, IntradayCharges):
        return
    for key, kind, booked, orders in trades:
        model.notes.restore(
            instrument_key=key,
            segment=SEGMENT_OF_TRADE[kind],
            trade_date=trading_date,
            orders=orders,
            booked_paise=booked,
        )


def charges_model(settings: Settings, *, clamp_rates: bool = False) -> ChargesModel:
    """The charges of the bot's intraday trades: a fresh set of contract notes (`clamp_rates`:
    history before the rate tables is charged at their earliest rates, for backtests)."""
    return IntradayCharges(
        BrokeragePlan(flat_per_order=settings.BROKERAGE_PER_ORDER), clamp_rates=clamp_rates
    )
