"""F&O reasons: the risk rule no_contract and the exit reason expiry

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 06:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the enum values: a migration never imports the domain.
EXIT_REASONS_BEFORE = (
    "'stop_loss', 'trailing_stop', 'take_profit', 'square_off', 'signal', 'manual', 'kill_switch'"
)
EXIT_REASONS_AFTER = EXIT_REASONS_BEFORE + ", 'expiry'"
RISK_RULES_BEFORE = (
    "'kill_switch', 'entry_window', 'daily_loss_limit', 'max_positions', "
    "'already_in_position', 'order_rate', 'order_spacing', 'position_size', "
    "'risk_per_trade', 'capital', 'shorts_disabled', 'no_price', 'market_closed'"
)
RISK_RULES_AFTER = RISK_RULES_BEFORE + ", 'no_contract'"


def _replace_checks(rules: str, exit_reasons: str) -> None:
    # Batch mode: SQLite cannot alter a CHECK constraint in place, so the table is recreated.
    with op.batch_alter_table("risk_decisions") as batch:
        batch.drop_constraint(op.f("ck_risk_decisions_rule"), type_="check")
        batch.create_check_constraint("rule", f"rule IS NULL OR rule IN ({rules})")
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint(op.f("ck_orders_exit_reason"), type_="check")
        batch.create_check_constraint(
            "exit_reason", f"exit_reason IS NULL OR exit_reason IN ({exit_reasons})"
        )
    with op.batch_alter_table("trades") as batch:
        batch.drop_constraint(op.f("ck_trades_exit_reason"), type_="check")
        batch.create_check_constraint("exit_reason", f"exit_reason IN ({exit_reasons})")


def upgrade() -> None:
    _replace_checks(RISK_RULES_AFTER, EXIT_REASONS_AFTER)


def downgrade() -> None:
    # Refused (by the CHECK) while rows still hold the new values: nothing is dropped silently.
    _replace_checks(RISK_RULES_BEFORE, EXIT_REASONS_BEFORE)
