"""Response models of the trading endpoints: money in rupees as exact decimals, times aware."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from upstox_bot.domain import (
    AccountSnapshot,
    Direction,
    ExitReason,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Position,
    RiskRule,
    Side,
    SignalStatus,
    SignalType,
    Trade,
    ms_to_datetime,
    paise_to_rupees,
)


def _rupees(paise: int | None) -> Decimal | None:
    return None if paise is None else paise_to_rupees(paise)


class PositionRead(BaseModel):
    instrument_key: str
    trading_symbol: str
    direction: Direction
    quantity: int
    lots: int
    entry_price: Decimal
    entry_at: datetime
    last_price: Decimal
    stop: Decimal = Field(description="Hard stop price.")
    target: Decimal = Field(description="Take-profit price; touching it arms the trailing stop.")
    trailing_active: bool
    trail_stop: Decimal | None
    best_price: Decimal = Field(description="Highest price since entry (lowest for a short).")
    effective_stop: Decimal = Field(description="The price that closes the position now.")
    unrealised_pnl: Decimal
    exit_pending: bool
    strategy: str

    @classmethod
    def of(cls, p: Position, symbol: str) -> PositionRead:
        return cls(
            instrument_key=p.instrument_key,
            trading_symbol=symbol,
            direction=p.direction,
            quantity=p.quantity,
            lots=p.lots,
            entry_price=paise_to_rupees(p.entry_price_paise),
            entry_at=p.entry_at,
            last_price=paise_to_rupees(p.last_price_paise),
            stop=paise_to_rupees(p.stop_paise),
            target=paise_to_rupees(p.target_paise),
            trailing_active=p.trailing_active,
            trail_stop=_rupees(p.trail_stop_paise),
            best_price=paise_to_rupees(p.best_price_paise),
            effective_stop=paise_to_rupees(p.effective_stop_paise),
            unrealised_pnl=paise_to_rupees(p.unrealised_pnl_paise),
            exit_pending=p.exit_pending,
            strategy=p.strategy,
        )


class TradeRead(BaseModel):
    trade_id: str
    instrument_key: str
    trading_symbol: str
    direction: Direction
    quantity: int
    entry_price: Decimal
    exit_price: Decimal
    entry_at: datetime
    exit_at: datetime
    gross_pnl: Decimal
    charges: Decimal
    net_pnl: Decimal
    exit_reason: ExitReason
    entry_order_id: str
    exit_order_id: str
    strategy: str

    @classmethod
    def of(cls, t: Trade, symbol: str) -> TradeRead:
        return cls(
            trade_id=t.trade_id,
            instrument_key=t.instrument_key,
            trading_symbol=symbol,
            direction=t.direction,
            quantity=t.quantity,
            entry_price=paise_to_rupees(t.entry_price_paise),
            exit_price=paise_to_rupees(t.exit_price_paise),
            entry_at=t.entry_at,
            exit_at=t.exit_at,
            gross_pnl=paise_to_rupees(t.gross_pnl_paise),
            charges=paise_to_rupees(t.charges_paise),
            net_pnl=paise_to_rupees(t.net_pnl_paise),
            exit_reason=t.exit_reason,
            entry_order_id=t.entry_order_id,
            exit_order_id=t.exit_order_id,
            strategy=t.strategy,
        )


class SignalRead(BaseModel):
    signal_id: str
    instrument_key: str
    trading_symbol: str
    strategy: str
    type: SignalType
    strength: float
    status: SignalStatus
    reason: str = Field(description="Why the strategy raised it.")
    price: Decimal
    candle_start_at: datetime
    created_at: datetime
    indicators: dict[str, float | None]
    outcome: str = Field(
        "", description="What came of it, for a person: the order and its state, or why not."
    )
    refusal_rule: RiskRule | None = Field(None, description="The risk rule that refused it.")
    refusal_reason: str | None = Field(None, description="The refusal, amounts in rupees.")
    order_id: str | None = Field(None, description="The entry order it caused (client id).")
    order_status: OrderStatus | None = None


class OrderRead(BaseModel):
    client_order_id: str
    instrument_key: str
    trading_symbol: str
    side: Side
    quantity: int
    purpose: OrderPurpose
    order_type: OrderType
    status: OrderStatus
    reason: str
    exit_reason: ExitReason | None
    signal_id: str | None
    broker_order_id: str | None
    filled_quantity: int
    average_price: Decimal | None
    rejection_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, o: Order, symbol: str) -> OrderRead:
        return cls(
            client_order_id=o.client_order_id,
            instrument_key=o.instrument_key,
            trading_symbol=symbol,
            side=o.side,
            quantity=o.quantity,
            purpose=o.purpose,
            order_type=o.order_type,
            status=o.status,
            reason=o.reason,
            exit_reason=o.exit_reason,
            signal_id=o.signal_id,
            broker_order_id=o.broker_order_id,
            filled_quantity=o.filled_quantity,
            average_price=_rupees(o.average_price_paise),
            rejection_reason=o.rejection_reason,
            created_at=o.created_at,
            updated_at=o.updated_at,
        )


class AccountRead(BaseModel):
    account: str
    as_of: datetime | None = Field(
        None,
        description="The market time the figures hold at (the running engine's clock); "
        "null when they come from the last stored snapshot.",
    )
    mode: str
    trading_date: date | None
    starting_capital: Decimal
    capital: Decimal = Field(description="Capital at the start of the trading date.")
    realised_pnl: Decimal = Field(description="The day's realised P&L, net of charges.")
    unrealised_pnl: Decimal
    day_pnl: Decimal
    charges: Decimal
    open_positions: int
    trades: int
    orders: int
    daily_loss_limit: Decimal
    loss_limit_hit: bool
    loss_limit_headroom: Decimal = Field(description="How much more the day may lose.")
    kill_switch: bool
    kill_switch_reason: str | None
    paper_trading: bool
    total_realised_pnl: Decimal = Field(description="All trades ever, net of charges.")


def snapshot_fields(s: AccountSnapshot | None) -> dict[str, Any]:
    if s is None:
        return {
            "trading_date": None,
            "realised_pnl": Decimal(0),
            "unrealised_pnl": Decimal(0),
            "day_pnl": Decimal(0),
            "charges": Decimal(0),
            "open_positions": 0,
            "trades": 0,
            "orders": 0,
            "loss_limit_hit": False,
        }
    return {
        "trading_date": date.fromisoformat(s.trading_date),
        "realised_pnl": paise_to_rupees(s.realised_pnl_paise),
        "unrealised_pnl": paise_to_rupees(s.unrealised_pnl_paise),
        "day_pnl": paise_to_rupees(s.day_pnl_paise),
        "charges": paise_to_rupees(s.charges_paise),
        "open_positions": s.open_positions,
        "trades": s.trades,
        "orders": s.orders,
        "loss_limit_hit": s.loss_limit_hit,
    }


class HealthRead(BaseModel):
    status: str
    version: str
    database: str
    market: str | None = None
    market_time: datetime | None = None
    ticks: int | None = None
    ticks_per_second: float | None = None


def candle_start(ms: int) -> datetime:
    return ms_to_datetime(ms)
