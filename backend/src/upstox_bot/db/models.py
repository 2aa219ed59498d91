"""The tables of upstox-bot: one row class per table, mapped to domain.py by the repositories.

Conventions: money is BigInteger paise (`*_paise`), times are aware UTC (`UtcDateTime`),
StrEnums are strings kept honest by CHECK constraints, JSON documents are `JsonDoc`.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from upstox_bot.db.base import Base, BigId, JsonDoc, UtcDateTime, enum_check
from upstox_bot.domain import (
    Direction,
    ExitReason,
    InstrumentKind,
    OptionType,
    OrderPurpose,
    OrderStatus,
    OrderType,
    RiskRule,
    Side,
    SignalStatus,
    SignalType,
)

KEY = 64  # instrument keys, account names, strategy names
ID = 128  # client order ids, signal ids, trade ids, fill ids, broker ids


class AccountMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class PositionStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ApiKeyScope(StrEnum):
    READ = "read"  # GET endpoints and the live stream
    TRADE = "trade"  # also kill switch, settings, manual orders


class SymbolRow(Base):
    """The instrument master: one row per tradable instrument."""

    __tablename__ = "symbols"
    __table_args__ = (
        enum_check("kind", InstrumentKind),
        enum_check("option_type", OptionType, nullable=True),
        Index(None, "trading_symbol"),
        Index(None, "underlying_symbol"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instrument_key: Mapped[str] = mapped_column(String(KEY), unique=True)
    trading_symbol: Mapped[str] = mapped_column(String(KEY))
    name: Mapped[str] = mapped_column(String(256))
    isin: Mapped[str] = mapped_column(String(32))
    lot_size: Mapped[int] = mapped_column(Integer)
    tick_size_paise: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    exchange: Mapped[str] = mapped_column(String(16))
    segment: Mapped[str] = mapped_column(String(16))
    sector: Mapped[str] = mapped_column(String(128))
    underlying_symbol: Mapped[str | None] = mapped_column(String(KEY))
    expiry: Mapped[date | None] = mapped_column(Date)
    strike_paise: Mapped[int | None] = mapped_column(BigInteger)
    option_type: Mapped[str | None] = mapped_column(String(2))
    liquidity_rank: Mapped[int | None] = mapped_column(Integer)
    last_price_paise: Mapped[int | None] = mapped_column(BigInteger)
    is_active: Mapped[bool] = mapped_column(Boolean)
    in_ban: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TickRow(Base):
    """A stored market update (sampled: the feed keeps one per symbol every few seconds)."""

    __tablename__ = "ticks"
    # One stored tick per instrument and time: storing a batch twice stores nothing more.
    __table_args__ = (Index(None, "instrument_key", "ts", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    ltp_paise: Mapped[int] = mapped_column(BigInteger)
    ltq: Mapped[int] = mapped_column(BigInteger)
    volume: Mapped[int] = mapped_column(BigInteger)
    close_paise: Mapped[int] = mapped_column(BigInteger)
    bid_paise: Mapped[int | None] = mapped_column(BigInteger)
    ask_paise: Mapped[int | None] = mapped_column(BigInteger)
    bid_qty: Mapped[int | None] = mapped_column(BigInteger)
    ask_qty: Mapped[int | None] = mapped_column(BigInteger)
    oi: Mapped[int | None] = mapped_column(BigInteger)
    iv: Mapped[float | None] = mapped_column(Float)
    delta: Mapped[float | None] = mapped_column(Float)
    gamma: Mapped[float | None] = mapped_column(Float)
    theta: Mapped[float | None] = mapped_column(Float)
    vega: Mapped[float | None] = mapped_column(Float)
    rho: Mapped[float | None] = mapped_column(Float)


class CandleRow(Base):
    """One OHLCV bar; (instrument, interval, start) is unique so re-ingesting updates in place."""

    __tablename__ = "candles"
    __table_args__ = (UniqueConstraint("instrument_key", "interval_s", "start_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    interval_s: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    open_paise: Mapped[int] = mapped_column(BigInteger)
    high_paise: Mapped[int] = mapped_column(BigInteger)
    low_paise: Mapped[int] = mapped_column(BigInteger)
    close_paise: Mapped[int] = mapped_column(BigInteger)
    volume: Mapped[int] = mapped_column(BigInteger)
    ticks: Mapped[int] = mapped_column(Integer)


class SignalRow(Base):
    """A strategy signal with the indicator values it was computed from."""

    __tablename__ = "signals"
    __table_args__ = (
        enum_check("type", SignalType),
        enum_check("status", SignalStatus),
        Index(None, "account", "created_at"),
        Index(None, "instrument_key", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    signal_id: Mapped[str] = mapped_column(String(ID), unique=True)
    account: Mapped[str] = mapped_column(String(KEY))
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    strategy: Mapped[str] = mapped_column(String(KEY))
    type: Mapped[str] = mapped_column(String(16))
    strength: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    price_paise: Mapped[int] = mapped_column(BigInteger)
    candle_start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    indicators: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RiskDecisionRow(Base):
    """The risk manager's verdict on one proposed entry."""

    __tablename__ = "risk_decisions"
    __table_args__ = (
        enum_check("rule", RiskRule, nullable=True),
        Index(None, "account", "decided_at"),
        Index(None, "signal_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(KEY))
    signal_id: Mapped[str | None] = mapped_column(String(ID))
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    approved: Mapped[bool] = mapped_column(Boolean)
    rule: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)
    lots: Mapped[int] = mapped_column(Integer)
    price_paise: Mapped[int] = mapped_column(BigInteger)
    stop_paise: Mapped[int] = mapped_column(BigInteger)
    target_paise: Mapped[int] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OrderRow(Base):
    """An order and its latest state; the client order id (the Upstox tag) is unique."""

    __tablename__ = "orders"
    __table_args__ = (
        enum_check("side", Side),
        enum_check("purpose", OrderPurpose),
        enum_check("order_type", OrderType),
        enum_check("status", OrderStatus),
        enum_check("exit_reason", ExitReason, nullable=True),
        Index(None, "account", "created_at"),
        Index(None, "account", "status"),
        Index(None, "instrument_key", "created_at"),
        Index(None, "broker_order_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(ID), unique=True)
    account: Mapped[str] = mapped_column(String(KEY))
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[int] = mapped_column(Integer)
    lots: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(8))
    order_type: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(Text)
    limit_price_paise: Mapped[int | None] = mapped_column(BigInteger)
    signal_id: Mapped[str | None] = mapped_column(String(ID))
    exit_reason: Mapped[str | None] = mapped_column(String(24))
    broker_order_id: Mapped[str | None] = mapped_column(String(ID))
    filled_quantity: Mapped[int] = mapped_column(Integer)
    average_price_paise: Mapped[int | None] = mapped_column(BigInteger)
    # exact value of the fills (sum of price x quantity): the average is this / filled_quantity
    filled_value_paise: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FillRow(Base):
    """One execution of an order; the fill id is unique so a repeated report is ignored."""

    __tablename__ = "fills"
    __table_args__ = (enum_check("side", Side), Index(None, "client_order_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    fill_id: Mapped[str] = mapped_column(String(ID), unique=True)
    client_order_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("orders.client_order_id", ondelete="RESTRICT")
    )
    broker_order_id: Mapped[str] = mapped_column(String(ID))
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[int] = mapped_column(Integer)
    price_paise: Mapped[int] = mapped_column(BigInteger)
    filled_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PositionRow(Base):
    """A position and its exit state; at most one open row per (account, instrument)."""

    __tablename__ = "positions"
    __table_args__ = (
        enum_check("direction", Direction),
        enum_check("status", PositionStatus),
        Index(
            "ux_positions_open_account_instrument_key",
            "account",
            "instrument_key",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        Index(None, "account", "status"),
        Index(None, "account", "closed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(KEY))
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    direction: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[int] = mapped_column(Integer)
    lots: Mapped[int] = mapped_column(Integer)
    entry_price_paise: Mapped[int] = mapped_column(BigInteger)
    entry_at: Mapped[datetime] = mapped_column(UtcDateTime)
    entry_order_id: Mapped[str] = mapped_column(String(ID))
    stop_paise: Mapped[int] = mapped_column(BigInteger)
    target_paise: Mapped[int] = mapped_column(BigInteger)
    trailing_active: Mapped[bool] = mapped_column(Boolean)
    best_price_paise: Mapped[int] = mapped_column(BigInteger)
    trail_stop_paise: Mapped[int | None] = mapped_column(BigInteger)
    last_price_paise: Mapped[int] = mapped_column(BigInteger)
    unrealised_pnl_paise: Mapped[int] = mapped_column(BigInteger)
    realised_pnl_paise: Mapped[int | None] = mapped_column(BigInteger)
    entry_charges_paise: Mapped[int] = mapped_column(BigInteger)
    # the entry order's exact value and quantity (its exact average is value / quantity)
    entry_value_paise: Mapped[int] = mapped_column(BigInteger, server_default="0")
    entry_quantity: Mapped[int] = mapped_column(Integer, server_default="0")
    strategy: Mapped[str] = mapped_column(String(KEY))
    exit_pending: Mapped[bool] = mapped_column(Boolean)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TradeRow(Base):
    """A closed round trip with its P&L after charges."""

    __tablename__ = "trades"
    __table_args__ = (
        enum_check("direction", Direction),
        enum_check("exit_reason", ExitReason),
        Index(None, "account", "trading_date"),
        Index(None, "account", "exit_at"),
        Index(None, "instrument_key", "exit_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trade_id: Mapped[str] = mapped_column(String(ID), unique=True)
    account: Mapped[str] = mapped_column(String(KEY))
    instrument_key: Mapped[str] = mapped_column(String(KEY))
    direction: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[int] = mapped_column(Integer)
    lots: Mapped[int] = mapped_column(Integer)
    entry_price_paise: Mapped[int] = mapped_column(BigInteger)
    exit_price_paise: Mapped[int] = mapped_column(BigInteger)
    entry_at: Mapped[datetime] = mapped_column(UtcDateTime)
    exit_at: Mapped[datetime] = mapped_column(UtcDateTime)
    gross_pnl_paise: Mapped[int] = mapped_column(BigInteger)
    charges_paise: Mapped[int] = mapped_column(BigInteger)
    net_pnl_paise: Mapped[int] = mapped_column(BigInteger)
    exit_reason: Mapped[str] = mapped_column(String(24))
    entry_order_id: Mapped[str] = mapped_column(String(ID))
    exit_order_id: Mapped[str] = mapped_column(String(ID))
    strategy: Mapped[str] = mapped_column(String(KEY))
    trading_date: Mapped[date] = mapped_column(Date)


class RateLimitLogRow(Base):
    """One row per order sent to a broker, so the order-rate windows survive a restart."""

    __tablename__ = "rate_limit_logs"
    __table_args__ = (Index(None, "account", "kind", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(KEY))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    client_order_id: Mapped[str | None] = mapped_column(String(ID))
    kind: Mapped[str] = mapped_column(String(16))
    allowed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)


class AccountRow(Base):
    """A trading account: mode, capital and the switches a person controls."""

    __tablename__ = "accounts"
    __table_args__ = (enum_check("mode", AccountMode),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(KEY), unique=True)
    mode: Mapped[str] = mapped_column(String(8))
    starting_capital_paise: Mapped[int] = mapped_column(BigInteger)
    kill_switch: Mapped[bool] = mapped_column(Boolean)
    kill_switch_reason: Mapped[str | None] = mapped_column(Text)
    live_trading_enabled: Mapped[bool] = mapped_column(Boolean)
    paper_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AccountDayRow(Base):
    """The account's figures for one trading date (domain.AccountSnapshot), latest write wins."""

    __tablename__ = "account_days"
    __table_args__ = (UniqueConstraint("account", "trading_date"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(KEY))
    trading_date: Mapped[date] = mapped_column(Date)
    capital_paise: Mapped[int] = mapped_column(BigInteger)
    realised_pnl_paise: Mapped[int] = mapped_column(BigInteger)
    unrealised_pnl_paise: Mapped[int] = mapped_column(BigInteger)
    charges_paise: Mapped[int] = mapped_column(BigInteger)
    open_positions: Mapped[int] = mapped_column(Integer)
    trades: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)
    loss_limit_paise: Mapped[int] = mapped_column(BigInteger)
    loss_limit_hit: Mapped[bool] = mapped_column(Boolean)
    kill_switch: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CheckpointRow(Base):
    """How far a harness got in its market stream: where a restart resumes (one row per harness).

    Written in the same transaction as everything the engine recorded up to that point.
    """

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("account", "harness"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(KEY))
    harness: Mapped[str] = mapped_column(String(32))
    trading_date: Mapped[date] = mapped_column(Date)
    market_at: Mapped[datetime] = mapped_column(UtcDateTime)
    position: Mapped[dict[str, Any]] = mapped_column(JsonDoc)  # the harness's place in its stream
    holder: Mapped[str | None] = mapped_column(String(64))  # the kernel instance that wrote it
    number: Mapped[int] = mapped_column(BigInteger, server_default="0")  # its commits
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PendingWriteRow(Base):
    """What a kernel made durable in one write just before it sent orders (the write-ahead):
    its journalled records and sampled ticks, encoded (db/repositories/pending_writes.py).

    Written with the checkpoint they lead to; moved into their tables and deleted right after
    the send, or by the next start of the account's harness if the process died in between.
    """

    __tablename__ = "pending_writes"
    __table_args__ = (Index(None, "account", "harness", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(KEY))
    harness: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    written_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditLogRow(Base):
    """One state change (domain.AuditRecord)."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        Index(None, "entity", "entity_id"),
        Index(None, "at"),
        Index(None, "event", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    event: Mapped[str] = mapped_column(String(KEY))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(ID))
    actor: Mapped[str] = mapped_column(String(KEY))
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc)


class SettingsOverrideRow(Base):
    """A setting changed at runtime; it wins over the environment until removed."""

    __tablename__ = "settings_overrides"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(KEY), unique=True)
    value: Mapped[Any] = mapped_column(JsonDoc)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(KEY))


class ApiKeyRow(Base):
    """An API key: only its SHA-256 hash is stored, with a short prefix to recognise it by."""

    __tablename__ = "api_keys"
    __table_args__ = (enum_check("scope", ApiKeyScope),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(KEY))
    prefix: Mapped[str] = mapped_column(String(16))
    hashed_key: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


# The Upstox adapter and the backtests keep their tables in their own modules; importing
# them registers them.
from upstox_bot.db import models_backtest as models_backtest  # noqa: E402
from upstox_bot.db import models_upstox as models_upstox  # noqa: E402
