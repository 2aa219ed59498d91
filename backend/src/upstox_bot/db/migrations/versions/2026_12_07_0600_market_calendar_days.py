"""market calendar days: NSE holidays and special sessions fetched from Upstox's holidays API

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 06:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "market_calendar_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("session_open", sa.Time(), nullable=True),
        sa.Column("session_close", sa.Time(), nullable=True),
        sa.Column("provisional", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", name=op.f("pk_market_calendar_days")),
    )


def downgrade() -> None:
    op.drop_table("market_calendar_days")
