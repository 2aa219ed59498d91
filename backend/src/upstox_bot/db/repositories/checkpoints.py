"""Where each harness got to in its market stream (restart recovery)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from upstox_bot.db.models import CheckpointRow
from upstox_bot.db.repositories._writes import upsert


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    trading_date: date
    market_at: datetime
    ticks_processed: int
    seed: int | None


class CheckpointRepository:
    """One checkpoint per (account, harness); written with the data it vouches for."""

    def __init__(self, session: Session, account: str, harness: str = "embedded") -> None:
        self._session = session
        self._account = account
        self._harness = harness

    def get_or_none(self) -> Checkpoint | None:
        row = self._session.scalar(
            select(CheckpointRow)
            .where(CheckpointRow.account == self._account, CheckpointRow.harness == self._harness)
            .execution_options(populate_existing=True)
        )
        if row is None:
            return None
        return Checkpoint(
            trading_date=row.trading_date,
            market_at=row.market_at,
            ticks_processed=row.ticks_processed,
            seed=row.seed,
        )

    def save(self, checkpoint: Checkpoint, at: datetime) -> None:
        upsert(
            self._session,
            CheckpointRow,
            [
                {
                    "account": self._account,
                    "harness": self._harness,
                    "trading_date": checkpoint.trading_date,
                    "market_at": checkpoint.market_at,
                    "ticks_processed": checkpoint.ticks_processed,
                    "seed": checkpoint.seed,
                    "updated_at": at,
                }
            ],
            conflict=["account", "harness"],
            update=["trading_date", "market_at", "ticks_processed", "seed", "updated_at"],
        )
