"""Where each harness got to in its market stream: the one checkpoint table (restart recovery)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from upstox_bot.db.models import CheckpointRow
from upstox_bot.db.repositories._writes import upsert
from upstox_bot.errors import Conflict


class FencedOut(Conflict):
    """Another kernel instance has committed for the account since this one did: this one
    lost the account (it was paused past its lease) and must stop acting on it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """Where a harness is in its market stream, committed with everything recorded before it.

    Args:
        trading_date: the session being played.
        market_at: market time of the last event applied (aware).
        position: the harness's own place in its stream (ticks of a simulated session, tick
            batches of each feed shard, commands applied), as JSON data.
        holder: the kernel instance that wrote it (None for a harness that is never shared).
        number: how many commits that instance has made.
    """

    trading_date: date
    market_at: datetime
    position: Mapping[str, Any] = field(default_factory=dict)
    holder: str | None = None
    number: int = 0


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
            position=dict(row.position or {}),
            holder=row.holder,
            number=row.number,
        )

    def save(self, checkpoint: Checkpoint, at: datetime) -> None:
        """Write the checkpoint, fenced: a holder's second and later commits succeed only while
        the stored checkpoint is still its own previous one.

        Raises:
            FencedOut: another holder committed for the account since (see the class).
        """
        values = {
            "trading_date": checkpoint.trading_date,
            "market_at": checkpoint.market_at,
            "position": dict(checkpoint.position),
            "holder": checkpoint.holder,
            "number": checkpoint.number,
            "updated_at": at,
        }
        if checkpoint.holder is not None and checkpoint.number > 1:
            result = self._session.execute(
                update(CheckpointRow)
                .where(
                    CheckpointRow.account == self._account,
                    CheckpointRow.harness == self._harness,
                    CheckpointRow.holder == checkpoint.holder,
                    CheckpointRow.number == checkpoint.number - 1,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise FencedOut(
                    f"account {self._account!r}: another holder committed since "
                    f"{checkpoint.holder} number {checkpoint.number - 1}"
                )
            return
        upsert(
            self._session,
            CheckpointRow,
            [{"account": self._account, "harness": self._harness, **values}],
            conflict=["account", "harness"],
            update=list(values),
        )
