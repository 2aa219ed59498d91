"""pending writes: what a kernel made durable just before it sent orders, applied right after

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pending_writes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("harness", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_writes")),
    )
    op.create_index(
        op.f("ix_pending_writes_account_harness_id"),
        "pending_writes",
        ["account", "harness", "id"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_writes_account_harness_id"), table_name="pending_writes")
    op.drop_table("pending_writes")
