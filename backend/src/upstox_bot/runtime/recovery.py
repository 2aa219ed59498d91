"""Restart recovery: rebuild an engine's state from the database before it acts again.

What is rebuilt, all from rows committed together with the harness's checkpoint:
open positions with their whole stop state (trailing flag, high-water mark, trail stop), orders
left in flight (resolved through the broker by their tag before anything else happens), the
day's realised P&L, charges and counters, the loss-limit flag, the order-rate windows, exits
that were waiting for an order slot, the signal cooldowns and the strategy's candle windows.
The kill switch comes from the account row when the engine is built.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from upstox_bot.db.models import OrderRow, RiskDecisionRow, SignalRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.db.repositories.rate_limits import RateLimitLogRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.domain import (
    IST,
    ExitReason,
    InstrumentKind,
    OrderPurpose,
    SignalStatus,
    Trade,
    datetime_to_ms,
)
from upstox_bot.runtime import components
from upstox_bot.trading.charges import OrderExecution
from upstox_bot.trading.engine import Engine
from upstox_bot.trading.execution import OrderExecutor

log = logging.getLogger(__name__)

ENTRY_TYPES = ("entry_long", "entry_short")


@dataclass(slots=True)
class RecoveryReport:
    positions: list[str] = field(default_factory=list)
    orders_in_flight: list[str] = field(default_factory=list)
    queued_exits: list[str] = field(default_factory=list)
    realised_paise: int = 0
    rate_window_orders: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.positions)} open position(s), {len(self.orders_in_flight)} order(s) in "
            f"flight, {len(self.queued_exits)} queued exit(s), realised {self.realised_paise} "
            f"paise today"
        )


def _ist_day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=IST)
    return start, start + timedelta(days=1)


def recover(
    session: Session,
    *,
    engine: Engine,
    executor: OrderExecutor,
    account: str,
    trading_date: date,
) -> RecoveryReport:
    """Rebuild `engine` for `trading_date` from the database; resolve orders left in flight.

    Call it with the engine's clock at the restart point and its market state warmed
    (Engine.warm_tick) up to the same point, before the engine sees any new event.
    """
    report = RecoveryReport()
    day_start, day_end = _ist_day_bounds(trading_date)

    # The strategy's candle windows, up to the restart point.
    interval = engine.config.candle_interval_s
    candles = CandleRepository(session)
    now = engine.clock.now()
    for key in engine.instruments:
        window = candles.latest(key, interval, engine.config.series_capacity, before=now)
        if window:
            engine.restore_candles(key, window)

    # Open positions with their stop state, priced at the last trade before the restart.
    for position in PositionRepository(session, account).open_positions():
        position.last_price_paise = engine.last_price.get(
            position.instrument_key, position.last_price_paise
        )
        engine.restore_position(position)
        report.positions.append(position.instrument_key)

    # The day's money and counters.
    trades = TradeRepository(session, account)
    todays = trades.find(start_date=trading_date, end_date=trading_date, limit=1_000_000)
    orders_today = (
        session.scalar(
            select(func.count())
            .select_from(OrderRow)
            .where(
                OrderRow.account == account,
                OrderRow.created_at >= day_start,
                OrderRow.created_at < day_end,
            )
        )
        or 0
    )
    snapshot = AccountRepository(session).latest_snapshot(account, on_or_before=trading_date)
    loss_limit_hit = bool(
        snapshot and snapshot.trading_date == trading_date.isoformat() and snapshot.loss_limit_hit
    )
    cooldowns: dict[str, int] = {}
    rows = session.execute(
        select(SignalRow.instrument_key, func.max(SignalRow.created_at))
        .where(
            SignalRow.account == account,
            SignalRow.created_at >= day_start,
            SignalRow.created_at < day_end,
            SignalRow.type.in_(ENTRY_TYPES),
            SignalRow.status != SignalStatus.IGNORED.value,
        )
        .group_by(SignalRow.instrument_key)
    )
    for key, latest in rows:
        cooldowns[key] = datetime_to_ms(latest)
    engine.restore_day(
        realised_paise=sum(t.net_pnl_paise for t in todays),
        charges_paise=sum(t.charges_paise for t in todays),
        trades=len(todays),
        orders=orders_today,
        loss_limit_hit=loss_limit_hit,
        last_entry_signal_ms=cooldowns,
    )
    report.realised_paise = engine.day.realised_paise
    restore_contract_notes(session, engine, account, trading_date, todays)

    # Order-rate windows.
    sent = RateLimitLogRepository(session, account).sent_ms_since(now - timedelta(minutes=1))
    engine.risk.rate_limiter.restore(sent)
    report.rate_window_orders = len(sent)

    # Exits that were waiting for a slot, and how many exit orders each position has had.
    audit = AuditRepository(session)
    orders = OrderRepository(session, account)
    for key, position in engine.positions.items():
        exit_orders = [
            o
            for o in orders.find(instrument_key=key, since=position.entry_at, limit=1000)
            if o.purpose is OrderPurpose.EXIT
        ]
        queued: ExitReason | None = None
        if not position.exit_pending:
            triggers = audit.find(
                entity="position",
                entity_id=key,
                event="exit.triggered",
                since=position.entry_at,
                limit=1,
            )
            last_exit_order_at = max((o.created_at for o in exit_orders), default=None)
            if triggers and (last_exit_order_at is None or triggers[0].at >= last_exit_order_at):
                queued = ExitReason(str(triggers[0].data["reason"]))
                report.queued_exits.append(key)
        engine.restore_exit(key, queued, len(exit_orders))

    # Orders left in flight: tracked again, then resolved through the broker by their tag.
    for order in orders.unfinished():
        reference = 0
        if order.purpose is OrderPurpose.ENTRY and order.signal_id:
            reference = (
                session.scalar(
                    select(RiskDecisionRow.price_paise)
                    .where(RiskDecisionRow.signal_id == order.signal_id)
                    .limit(1)
                )
                or 0
            )
        engine.restore_order(order, reference or engine.last_price.get(order.instrument_key, 0))
        executor.unresolved[order.client_order_id] = order
        report.orders_in_flight.append(order.client_order_id)
    executor.resolve_unresolved()
    log.info("recovery.done", extra={"summary": report.summary()})
    return report


def restore_contract_notes(
    session: Session, engine: Engine, account: str, trading_date: date, trades: Sequence[Trade]
) -> None:
    """Give the engine's charges model the day's contract notes as the trades before the restart
    left them (trading/charges.py), so the next trades are charged as without the restart."""
    if not trades:
        return
    orders = OrderRepository(session, account)
    notes: dict[str, tuple[int, dict[str, OrderExecution]]] = {}
    for trade in trades:
        booked, executed = notes.get(trade.instrument_key, (0, {}))
        for order_id in (trade.entry_order_id, trade.exit_order_id):
            order = orders.get_or_none(order_id)
            if order is not None and order.filled_quantity:
                executed[order_id] = OrderExecution(
                    order_id=order_id,
                    side=order.side,
                    quantity=order.filled_quantity,
                    value_paise=order.executed_value_paise,
                )
        notes[trade.instrument_key] = (booked + trade.charges_paise, executed)
    restored = []
    for key, (booked, executed) in notes.items():
        instrument = engine.instruments.get(key) or engine.router.instrument_or_none(key)
        kind = instrument.kind if instrument is not None else InstrumentKind.EQUITY
        restored.append((key, kind, booked, list(executed.values())))
    components.restore_contract_notes(engine.charges, trading_date, restored)
