"""one checkpoint table: every harness's place in its market stream, fenced by its holder

The embedded harness kept (ticks processed, seed) in `checkpoints`; the distributed harness
kept its checkpoints as `engine.checkpoint` audit rows, which the trader saw in /audit. Both now
live in `checkpoints`: `position` holds where the harness is in its stream (a JSON document of
its own), `holder` and `number` which kernel instance wrote it and how many commits it made
(a worker that lost the account to another can no longer commit).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 08:00:00+00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("position", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("holder", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("number", sa.BigInteger(), nullable=False, server_default="0"))
    connection = op.get_bind()
    checkpoints = sa.table(
        "checkpoints",
        sa.column("id", sa.BigInteger()),
        sa.column("account", sa.String()),
        sa.column("harness", sa.String()),
        sa.column("trading_date", sa.Date()),
        sa.column("market_at", TS),
        sa.column("ticks_processed", sa.BigInteger()),
        sa.column("seed", sa.BigInteger()),
        sa.column("position", JSON_DOC),
        sa.column("updated_at", TS),
    )
    for row in connection.execute(sa.select(checkpoints)).mappings().all():
        connection.execute(
            checkpoints.update()
            .where(checkpoints.c.id == row["id"])
            .values(position={"ticks": row["ticks_processed"], "seed": row["seed"]})
        )
    # The distributed harness's checkpoints: the newest per account becomes its row.
    audit = sa.table(
        "audit_logs",
        sa.column("id", sa.BigInteger()),
        sa.column("event", sa.String()),
        sa.column("entity_id", sa.String()),
        sa.column("at", TS),
        sa.column("data", JSON_DOC),
    )
    rows = connection.execute(
        sa.select(audit.c.entity_id, audit.c.at, audit.c.data)
        .where(audit.c.event == "engine.checkpoint")
        .order_by(audit.c.id.desc())
    ).all()
    seen: set[str] = set()
    for account, at, data in rows:
        if account in seen:
            continue
        seen.add(account)
        doc = data if isinstance(data, dict) else json.loads(data)
        clock_ms = int(doc["clock_ms"])
        market_at = datetime.fromtimestamp(clock_ms / 1000, tz=UTC)
        connection.execute(
            checkpoints.insert().values(
                account=account,
                harness="distributed",
                trading_date=market_at.date(),
                market_at=market_at,
                ticks_processed=0,
                position={"cursors": doc["cursors"], "first_seen": doc.get("first_seen") or []},
                updated_at=at,
            )
        )
    connection.execute(audit.delete().where(audit.c.event == "engine.checkpoint"))
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("position", existing_type=JSON_DOC, nullable=False)
        batch.drop_column("ticks_processed")
        batch.drop_column("seed")


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(
            sa.Column("ticks_processed", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
    connection = op.get_bind()
    checkpoints = sa.table(
        "checkpoints",
        sa.column("id", sa.BigInteger()),
        sa.column("position", JSON_DOC),
        sa.column("ticks_processed", sa.BigInteger()),
        sa.column("seed", sa.BigInteger()),
    )
    for row in connection.execute(sa.select(checkpoints)).mappings().all():
        doc = row["position"] if isinstance(row["position"], dict) else json.loads(row["position"])
        connection.execute(
            checkpoints.update()
            .where(checkpoints.c.id == row["id"])
            .values(ticks_processed=int(doc.get("ticks") or 0), seed=doc.get("seed"))
        )
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("number")
        batch.drop_column("holder")
        batch.drop_column("position")
