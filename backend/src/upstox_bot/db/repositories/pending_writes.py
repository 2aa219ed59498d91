"""The write-ahead of a kernel's records: one row, written just before orders are sent.

A kernel that is about to send orders must have them, and everything recorded before them, on
disk first. Writing those records into their tables (candles, signals, risk decisions, orders,
positions: 50 to 90 records at a minute's close) is most of the time between a candle's closing
tick and its order. So the kernel writes them first as one encoded row beside its
checkpoint (one insert, one update, one commit), sends, and then moves them into their tables
and deletes the row in one transaction (`runtime/store.py`). A process that dies in between
leaves the row; the next start of the harness applies it before it reads anything.

The payload is a pickle of the journal calls and the sampled ticks (domain values pickle
through their constructors: domain.reduce_to_fields). It is read back only by this module,
through an unpickler that builds nothing but domain values and datetimes, and it lives for
milliseconds unless the process dies.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from upstox_bot.db.models import PendingWriteRow
from upstox_bot.domain import Tick

Ops = Sequence[tuple[str, tuple[Any, ...]]]

# What a payload may build: the domain's values and enums, and the datetimes in them.
_ALLOWED = {
    "datetime": frozenset({"date", "datetime", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "zoneinfo": frozenset({"ZoneInfo"}),
}
_DOMAIN = "upstox_bot.domain"


def _zoneinfo_getattr(owner: Any, name: str) -> Any:
    """The one `getattr` a payload needs: an aware datetime in IST pickles its zone as
    `getattr(ZoneInfo, "_unpickle")`."""
    if owner is ZoneInfo and name == "_unpickle":
        return ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise pickle.UnpicklingError(f"a pending write may not read {owner!r}.{name}")


class _DomainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "getattr":
            return _zoneinfo_getattr
        if (module == _DOMAIN and not name.startswith("__")) or name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a pending write may not build {module}.{name}")


def encode(ops: Ops, ticks: Sequence[Tick]) -> bytes:
    """The payload of journal calls (name, arguments) and sampled ticks."""
    return pickle.dumps((ops, list(ticks)), protocol=pickle.HIGHEST_PROTOCOL)


def decode(payload: bytes) -> tuple[Ops, list[Tick]]:
    """The journal calls and ticks of `encode`.

    Raises:
        pickle.UnpicklingError: the payload names anything but domain values and datetimes.
    """
    ops, ticks = _DomainUnpickler(io.BytesIO(payload)).load()
    return ops, ticks


class PendingWriteRepository:
    """An account's pending writes for one harness, oldest first."""

    def __init__(self, session: Session, account: str, harness: str) -> None:
        self._session = session
        self._account = account
        self._harness = harness

    def add(self, payload: bytes, at: datetime) -> int:
        """Store a payload; returns its id."""
        ident = self._session.scalar(
            insert(PendingWriteRow)
            .values(account=self._account, harness=self._harness, payload=payload, written_at=at)
            .returning(PendingWriteRow.id)
        )
        assert ident is not None
        return int(ident)

    def pending(self) -> list[tuple[int, bytes]]:
        """(id, payload) of every pending write, in the order they were written."""
        rows = self._session.execute(
            select(PendingWriteRow.id, PendingWriteRow.payload)
            .where(
                PendingWriteRow.account == self._account,
                PendingWriteRow.harness == self._harness,
            )
            .order_by(PendingWriteRow.id)
        )
        return [(row.id, row.payload) for row in rows]

    def take_all(self) -> list[bytes]:
        """Delete every pending write and return their payloads, in the order they were
        written. One statement: of two takers at once, each gets only what it deleted."""
        rows = self._session.execute(
            delete(PendingWriteRow)
            .where(
                PendingWriteRow.account == self._account,
                PendingWriteRow.harness == self._harness,
            )
            .returning(PendingWriteRow.id, PendingWriteRow.payload)
            .execution_options(synchronize_session=False)
        ).all()
        return [payload for _, payload in sorted(rows, key=lambda row: int(row[0]))]

    def remove(self, ids: Sequence[int]) -> int:
        """Delete the given pending writes; returns how many were still there."""
        if not ids:
            return 0
        result = self._session.execute(
            delete(PendingWriteRow)
            .where(
                PendingWriteRow.account == self._account,
                PendingWriteRow.harness == self._harness,
                PendingWriteRow.id.in_(ids),
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))
