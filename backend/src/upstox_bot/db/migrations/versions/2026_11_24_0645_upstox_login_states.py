"""upstox login states: the pending OAuth states of the daily login, shared by API processes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 06:45:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "upstox_login_states",
        sa.Column("state_sha256", sa.String(length=64), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("state_sha256", name=op.f("pk_upstox_login_states")),
    )
    op.create_index(
        op.f("ix_upstox_login_states_expires_at"), "upstox_login_states", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_upstox_login_states_expires_at"), table_name="upstox_login_states")
    op.drop_table("upstox_login_states")
