"""risk rules entries_paused (token expired) and fno_ban (NSE F&O ban period)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 06:15:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the enum values: a migration never imports the domain.
RISK_RULES_BEFORE = (
    "'kill_switch', 'entry_window', 'daily_loss_limit', 'max_positions', "
    "'already_in_position', 'order_rate', 'order_spacing', 'position_size', "
    "'risk_per_trade', 'capital', 'shorts_disabled', 'no_price', 'market_closed', 'no_contract'"
)
RISK_RULES_AFTER = RISK_RULES_BEFORE + ", 'entries_paused', 'fno_ban'"


def _replace_check(rules: str) -> None:
    # Batch mode: SQLite cannot alter a CHECK constraint in place, so the table is recreated.
    with op.batch_alter_table("risk_decisions") as batch:
        batch.drop_constraint(op.f("ck_risk_decisions_rule"), type_="check")
        batch.create_check_constraint("rule", f"rule IS NULL OR rule IN ({rules})")


def upgrade() -> None:
    _replace_check(RISK_RULES_AFTER)


def downgrade() -> None:
    # Refused (by the CHECK) while rows still hold the new values: nothing is dropped silently.
    _replace_check(RISK_RULES_BEFORE)
