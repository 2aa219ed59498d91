"""exact fill values: orders keep the exact value of their fills, positions their entry's

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before keep 0: their rounded average price stands for the exact one.
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("filled_value_paise", sa.BigInteger(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("positions") as batch:
        batch.add_column(
            sa.Column("entry_value_paise", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("entry_quantity", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("positions") as batch:
        batch.drop_column("entry_quantity")
        batch.drop_column("entry_value_paise")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("filled_value_paise")
