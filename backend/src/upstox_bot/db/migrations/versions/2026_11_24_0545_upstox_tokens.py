"""upstox tokens: the encrypted access token of each daily Upstox login

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 05:45:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "upstox_tokens",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstox_tokens")),
    )
    op.create_index(op.f("ix_upstox_tokens_issued_at"), "upstox_tokens", ["issued_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_upstox_tokens_issued_at"), table_name="upstox_tokens")
    op.drop_table("upstox_tokens")
