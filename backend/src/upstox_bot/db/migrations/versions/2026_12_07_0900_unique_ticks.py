"""unique ticks: one stored tick per instrument and time (storing a batch twice is a no-op)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Keep the first row of any instrument and time stored twice.
    op.execute(
        sa.text(
            "DELETE FROM ticks WHERE id NOT IN "
            "(SELECT MIN(id) FROM ticks GROUP BY instrument_key, ts)"
        )
    )
    op.drop_index(op.f("ix_ticks_instrument_key_ts"), table_name="ticks")
    op.create_index(
        op.f("ix_ticks_instrument_key_ts"), "ticks", ["instrument_key", "ts"], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ticks_instrument_key_ts"), table_name="ticks")
    op.create_index(op.f("ix_ticks_instrument_key_ts"), "ticks", ["instrument_key", "ts"])
