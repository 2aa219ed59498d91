"""backtests: backtests submitted through the API, their state and their result

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 06:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# A frozen copy of BacktestStatus: a migration never imports the models.
STATUSES = "'pending', 'running', 'done', 'failed'"


def upgrade() -> None:
    op.create_table(
        "backtests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("request", JSON_DOC, nullable=False),
        sa.Column("result", JSON_DOC, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_backtests_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtests")),
    )
    op.create_index(op.f("ix_backtests_created_at"), "backtests", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_backtests_created_at"), table_name="backtests")
    op.drop_table("backtests")
