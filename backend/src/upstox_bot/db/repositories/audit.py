"""The audit log: append records and query them by entity, event and time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from upstox_bot.db.base import jsonable
from upstox_bot.db.models import AuditLogRow
from upstox_bot.db.repositories._writes import table_of
from upstox_bot.domain import AuditRecord


def audit_values(record: AuditRecord) -> dict[str, Any]:
    """Column values of an audit_logs row; the data is made plain JSON (see `jsonable`)."""
    return {
        "at": record.at,
        "event": record.event,
        "entity": record.entity,
        "entity_id": record.entity_id,
        "actor": record.actor,
        "data": jsonable(record.data),
    }


def audit_from_row(row: AuditLogRow) -> AuditRecord:
    """The audit record stored in `row`."""
    return AuditRecord(
        event=row.event,
        entity=row.entity,
        entity_id=row.entity_id,
        at=row.at,
        data=row.data,
        actor=row.actor,
    )


class AuditRepository:
    """Appends to and reads the audit log."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, record: AuditRecord) -> None:
        """Append one record."""
        self._session.execute(insert(table_of(AuditLogRow)), audit_values(record))

    def find(
        self,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
        event: str | None = None,
        event_prefix: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Records newest first, filtered.

        Args:
            event: exact event name, e.g. "order.filled".
            event_prefix: events starting with this, e.g. "order." for every order event.
            since: at or after (aware). until: before (aware).
            limit: at most this many; offset: skip this many (pagination).
        """
        stmt = select(AuditLogRow)
        if entity is not None:
            stmt = stmt.where(AuditLogRow.entity == entity)
        if entity_id is not None:
            stmt = stmt.where(AuditLogRow.entity_id == entity_id)
        if event is not None:
            stmt = stmt.where(AuditLogRow.event == event)
        if event_prefix is not None:
            stmt = stmt.where(AuditLogRow.event.startswith(event_prefix, autoescape=True))
        if actor is not None:
            stmt = stmt.where(AuditLogRow.actor == actor)
        if since is not None:
            stmt = stmt.where(AuditLogRow.at >= since)
        if until is not None:
            stmt = stmt.where(AuditLogRow.at < until)
        stmt = stmt.order_by(AuditLogRow.at.desc(), AuditLogRow.id.desc())
        rows = self._session.scalars(stmt.limit(limit).offset(offset))
        return [audit_from_row(row) for row in rows]
