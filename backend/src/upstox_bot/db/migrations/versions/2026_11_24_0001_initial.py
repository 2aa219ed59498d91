"""initial schema: instruments, market data, signals, orders, positions, trades, accounts, audit

Revision ID: 0001
Revises:
Create Date: 2026-11-24 05:07:06+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types of db/base.py: a migration never imports the models.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAISE = sa.BigInteger()
TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
KEY = sa.String(length=64)
REF = sa.String(length=128)

EXIT_REASONS = (
    "'stop_loss', 'trailing_stop', 'take_profit', 'square_off', 'signal', 'manual', 'kill_switch'"
)
ORDER_STATUSES = (
    "'pending', 'submitting', 'open', 'partially_filled', 'filled', 'cancelled', 'rejected'"
)
RISK_RULES = (
    "'kill_switch', 'entry_window', 'daily_loss_limit', 'max_positions', "
    "'already_in_position', 'order_rate', 'order_spacing', 'position_size', "
    "'risk_per_trade', 'capital', 'shorts_disabled', 'no_price', 'market_closed'"
)
OPEN_ONLY = sa.text("status = 'open'")


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, nullable=False)


def upgrade() -> None:
    op.create_table(
        "symbols",
        _id(),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("trading_symbol", KEY, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("isin", sa.String(length=32), nullable=False),
        sa.Column("lot_size", sa.Integer(), nullable=False),
        sa.Column("tick_size_paise", PAISE, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("exchange", sa.String(length=16), nullable=False),
        sa.Column("segment", sa.String(length=16), nullable=False),
        sa.Column("sector", sa.String(length=128), nullable=False),
        sa.Column("underlying_symbol", KEY, nullable=True),
        sa.Column("expiry", sa.Date(), nullable=True),
        sa.Column("strike_paise", PAISE, nullable=True),
        sa.Column("option_type", sa.String(length=2), nullable=True),
        sa.Column("liquidity_rank", sa.Integer(), nullable=True),
        sa.Column("last_price_paise", PAISE, nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("in_ban", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('equity', 'future', 'option')", name=op.f("ck_symbols_kind")),
        sa.CheckConstraint(
            "option_type IS NULL OR option_type IN ('CE', 'PE')",
            name=op.f("ck_symbols_option_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_symbols")),
        sa.UniqueConstraint("instrument_key", name=op.f("uq_symbols_instrument_key")),
    )
    op.create_index(op.f("ix_symbols_trading_symbol"), "symbols", ["trading_symbol"])
    op.create_index(op.f("ix_symbols_underlying_symbol"), "symbols", ["underlying_symbol"])

    op.create_table(
        "ticks",
        _id(),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("ltp_paise", PAISE, nullable=False),
        sa.Column("ltq", sa.BigInteger(), nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.Column("close_paise", PAISE, nullable=False),
        sa.Column("bid_paise", PAISE, nullable=True),
        sa.Column("ask_paise", PAISE, nullable=True),
        sa.Column("bid_qty", sa.BigInteger(), nullable=True),
        sa.Column("ask_qty", sa.BigInteger(), nullable=True),
        sa.Column("oi", sa.BigInteger(), nullable=True),
        sa.Column("iv", sa.Float(), nullable=True),
        sa.Column("delta", sa.Float(), nullable=True),
        sa.Column("gamma", sa.Float(), nullable=True),
        sa.Column("theta", sa.Float(), nullable=True),
        sa.Column("vega", sa.Float(), nullable=True),
        sa.Column("rho", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticks")),
    )
    op.create_index(op.f("ix_ticks_instrument_key_ts"), "ticks", ["instrument_key", "ts"])

    op.create_table(
        "candles",
        _id(),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("start_at", TS, nullable=False),
        sa.Column("open_paise", PAISE, nullable=False),
        sa.Column("high_paise", PAISE, nullable=False),
        sa.Column("low_paise", PAISE, nullable=False),
        sa.Column("close_paise", PAISE, nullable=False),
        sa.Column("volume", sa.BigInteger(), nullable=False),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candles")),
        sa.UniqueConstraint(
            "instrument_key",
            "interval_s",
            "start_at",
            name=op.f("uq_candles_instrument_key_interval_s_start_at"),
        ),
    )

    op.create_table(
        "signals",
        _id(),
        sa.Column("signal_id", REF, nullable=False),
        sa.Column("account", KEY, nullable=False),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("strategy", KEY, nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("price_paise", PAISE, nullable=False),
        sa.Column("candle_start_at", TS, nullable=False),
        sa.Column("indicators", JSON_DOC, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(
            "type IN ('entry_long', 'entry_short', 'exit_long', 'exit_short')",
            name=op.f("ck_signals_type"),
        ),
        sa.CheckConstraint(
            "status IN ('new', 'accepted', 'rejected', 'ignored')", name=op.f("ck_signals_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
        sa.UniqueConstraint("signal_id", name=op.f("uq_signals_signal_id")),
    )
    op.create_index(op.f("ix_signals_account_created_at"), "signals", ["account", "created_at"])
    op.create_index(
        op.f("ix_signals_instrument_key_created_at"), "signals", ["instrument_key", "created_at"]
    )

    op.create_table(
        "risk_decisions",
        _id(),
        sa.Column("account", KEY, nullable=False),
        sa.Column("signal_id", REF, nullable=True),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("lots", sa.Integer(), nullable=False),
        sa.Column("price_paise", PAISE, nullable=False),
        sa.Column("stop_paise", PAISE, nullable=False),
        sa.Column("target_paise", PAISE, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.CheckConstraint(
            f"rule IS NULL OR rule IN ({RISK_RULES})", name=op.f("ck_risk_decisions_rule")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_decisions")),
    )
    op.create_index(
        op.f("ix_risk_decisions_account_decided_at"), "risk_decisions", ["account", "decided_at"]
    )
    op.create_index(op.f("ix_risk_decisions_signal_id"), "risk_decisions", ["signal_id"])

    op.create_table(
        "orders",
        _id(),
        sa.Column("client_order_id", REF, nullable=False),
        sa.Column("account", KEY, nullable=False),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("lots", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=8), nullable=False),
        sa.Column("order_type", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("limit_price_paise", PAISE, nullable=True),
        sa.Column("signal_id", REF, nullable=True),
        sa.Column("exit_reason", sa.String(length=24), nullable=True),
        sa.Column("broker_order_id", REF, nullable=True),
        sa.Column("filled_quantity", sa.Integer(), nullable=False),
        sa.Column("average_price_paise", PAISE, nullable=True),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_orders_side")),
        sa.CheckConstraint("purpose IN ('entry', 'exit')", name=op.f("ck_orders_purpose")),
        sa.CheckConstraint(
            "order_type IN ('market', 'limit', 'sl', 'sl_m')", name=op.f("ck_orders_order_type")
        ),
        sa.CheckConstraint(f"status IN ({ORDER_STATUSES})", name=op.f("ck_orders_status")),
        sa.CheckConstraint(
            f"exit_reason IS NULL OR exit_reason IN ({EXIT_REASONS})",
            name=op.f("ck_orders_exit_reason"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_order_id", name=op.f("uq_orders_client_order_id")),
    )
    op.create_index(op.f("ix_orders_account_created_at"), "orders", ["account", "created_at"])
    op.create_index(op.f("ix_orders_account_status"), "orders", ["account", "status"])
    op.create_index(
        op.f("ix_orders_instrument_key_created_at"), "orders", ["instrument_key", "created_at"]
    )
    op.create_index(op.f("ix_orders_broker_order_id"), "orders", ["broker_order_id"])

    op.create_table(
        "fills",
        _id(),
        sa.Column("fill_id", REF, nullable=False),
        sa.Column("client_order_id", REF, nullable=False),
        sa.Column("broker_order_id", REF, nullable=False),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price_paise", PAISE, nullable=False),
        sa.Column("filled_at", TS, nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_fills_side")),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name=op.f("fk_fills_client_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint("fill_id", name=op.f("uq_fills_fill_id")),
    )
    op.create_index(op.f("ix_fills_client_order_id"), "fills", ["client_order_id"])

    op.create_table(
        "positions",
        _id(),
        sa.Column("account", KEY, nullable=False),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("lots", sa.Integer(), nullable=False),
        sa.Column("entry_price_paise", PAISE, nullable=False),
        sa.Column("entry_at", TS, nullable=False),
        sa.Column("entry_order_id", REF, nullable=False),
        sa.Column("stop_paise", PAISE, nullable=False),
        sa.Column("target_paise", PAISE, nullable=False),
        sa.Column("trailing_active", sa.Boolean(), nullable=False),
        sa.Column("best_price_paise", PAISE, nullable=False),
        sa.Column("trail_stop_paise", PAISE, nullable=True),
        sa.Column("last_price_paise", PAISE, nullable=False),
        sa.Column("unrealised_pnl_paise", PAISE, nullable=False),
        sa.Column("realised_pnl_paise", PAISE, nullable=True),
        sa.Column("entry_charges_paise", PAISE, nullable=False),
        sa.Column("strategy", KEY, nullable=False),
        sa.Column("exit_pending", sa.Boolean(), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("direction IN ('long', 'short')", name=op.f("ck_positions_direction")),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_positions_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
    )
    # At most one open position per (account, instrument): a partial unique index.
    op.create_index(
        "ux_positions_open_account_instrument_key",
        "positions",
        ["account", "instrument_key"],
        unique=True,
        postgresql_where=OPEN_ONLY,
        sqlite_where=OPEN_ONLY,
    )
    op.create_index(op.f("ix_positions_account_status"), "positions", ["account", "status"])
    op.create_index(op.f("ix_positions_account_closed_at"), "positions", ["account", "closed_at"])

    op.create_table(
        "trades",
        _id(),
        sa.Column("trade_id", REF, nullable=False),
        sa.Column("account", KEY, nullable=False),
        sa.Column("instrument_key", KEY, nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("lots", sa.Integer(), nullable=False),
        sa.Column("entry_price_paise", PAISE, nullable=False),
        sa.Column("exit_price_paise", PAISE, nullable=False),
        sa.Column("entry_at", TS, nullable=False),
        sa.Column("exit_at", TS, nullable=False),
        sa.Column("gross_pnl_paise", PAISE, nullable=False),
        sa.Column("charges_paise", PAISE, nullable=False),
        sa.Column("net_pnl_paise", PAISE, nullable=False),
        sa.Column("exit_reason", sa.String(length=24), nullable=False),
        sa.Column("entry_order_id", REF, nullable=False),
        sa.Column("exit_order_id", REF, nullable=False),
        sa.Column("strategy", KEY, nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.CheckConstraint("direction IN ('long', 'short')", name=op.f("ck_trades_direction")),
        sa.CheckConstraint(f"exit_reason IN ({EXIT_REASONS})", name=op.f("ck_trades_exit_reason")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades")),
        sa.UniqueConstraint("trade_id", name=op.f("uq_trades_trade_id")),
    )
    op.create_index(op.f("ix_trades_account_trading_date"), "trades", ["account", "trading_date"])
    op.create_index(op.f("ix_trades_account_exit_at"), "trades", ["account", "exit_at"])
    op.create_index(
        op.f("ix_trades_instrument_key_exit_at"), "trades", ["instrument_key", "exit_at"]
    )

    op.create_table(
        "rate_limit_logs",
        _id(),
        sa.Column("account", KEY, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("client_order_id", REF, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_logs")),
    )
    op.create_index(
        op.f("ix_rate_limit_logs_account_kind_at"), "rate_limit_logs", ["account", "kind", "at"]
    )

    op.create_table(
        "accounts",
        _id(),
        sa.Column("name", KEY, nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("starting_capital_paise", PAISE, nullable=False),
        sa.Column("kill_switch", sa.Boolean(), nullable=False),
        sa.Column("kill_switch_reason", sa.Text(), nullable=True),
        sa.Column("live_trading_enabled", sa.Boolean(), nullable=False),
        sa.Column("paper_started_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("mode IN ('paper', 'live')", name=op.f("ck_accounts_mode")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )

    op.create_table(
        "account_days",
        _id(),
        sa.Column("account", KEY, nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.Column("capital_paise", PAISE, nullable=False),
        sa.Column("realised_pnl_paise", PAISE, nullable=False),
        sa.Column("unrealised_pnl_paise", PAISE, nullable=False),
        sa.Column("charges_paise", PAISE, nullable=False),
        sa.Column("open_positions", sa.Integer(), nullable=False),
        sa.Column("trades", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("loss_limit_paise", PAISE, nullable=False),
        sa.Column("loss_limit_hit", sa.Boolean(), nullable=False),
        sa.Column("kill_switch", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_days")),
        sa.UniqueConstraint(
            "account", "trading_date", name=op.f("uq_account_days_account_trading_date")
        ),
    )

    op.create_table(
        "audit_logs",
        _id(),
        sa.Column("at", TS, nullable=False),
        sa.Column("event", KEY, nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("entity_id", REF, nullable=False),
        sa.Column("actor", KEY, nullable=False),
        sa.Column("data", JSON_DOC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
    )
    op.create_index(op.f("ix_audit_logs_entity_entity_id"), "audit_logs", ["entity", "entity_id"])
    op.create_index(op.f("ix_audit_logs_at"), "audit_logs", ["at"])
    op.create_index(op.f("ix_audit_logs_event_at"), "audit_logs", ["event", "at"])

    op.create_table(
        "settings_overrides",
        _id(),
        sa.Column("key", KEY, nullable=False),
        sa.Column("value", JSON_DOC, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", KEY, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settings_overrides")),
        sa.UniqueConstraint("key", name=op.f("uq_settings_overrides_key")),
    )

    op.create_table(
        "api_keys",
        _id(),
        sa.Column("name", KEY, nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("hashed_key", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.CheckConstraint("scope IN ('read', 'trade')", name=op.f("ck_api_keys_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("hashed_key", name=op.f("uq_api_keys_hashed_key")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints; fills before orders (foreign key).
    for table in (
        "api_keys",
        "settings_overrides",
        "audit_logs",
        "account_days",
        "accounts",
        "rate_limit_logs",
        "trades",
        "positions",
        "fills",
        "orders",
        "risk_decisions",
        "signals",
        "candles",
        "ticks",
        "symbols",
    ):
        op.drop_table(table)
