"""The audit log: every state change, who made it and with what data."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from sqlalchemy import ColumnElement

from upstox_bot.api.deps import SessionDep
from upstox_bot.api.queries import Filter, Limit, Offset, Since, Until, page
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, Page
from upstox_bot.api.schemas.control import AuditRead
from upstox_bot.db.models import AuditLogRow

router = APIRouter(tags=["audit"], responses=ERRORS, route_class=GuardedRoute)

AUDIT_SORT = {"at": AuditLogRow.at, "event": AuditLogRow.event}
AuditSort = Literal["-at", "at", "event"]


@router.get("/audit", response_model=Page[AuditRead])
def list_audit(
    session: SessionDep,
    entity: Filter = None,
    entity_id: Filter = None,
    event: Filter = None,
    event_prefix: Filter = None,
    actor: Filter = None,
    since: Since = None,
    until: Until = None,
    sort: AuditSort = "-at",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AuditRead]:
    """Audit records (newest first by default), filtered by entity, event (or event prefix,
    e.g. "order."), actor and time."""
    where: list[ColumnElement[bool]] = []
    if entity is not None:
        where.append(AuditLogRow.entity == entity)
    if entity_id is not None:
        where.append(AuditLogRow.entity_id == entity_id)
    if event is not None:
        where.append(AuditLogRow.event == event)
    if event_prefix is not None:
        where.append(AuditLogRow.event.startswith(event_prefix, autoescape=True))
    if actor is not None:
        where.append(AuditLogRow.actor == actor)
    if since is not None:
        where.append(AuditLogRow.at >= since)
    if until is not None:
        where.append(AuditLogRow.at < until)
    rows, total = page(
        session, AuditLogRow, where=where, sort=sort, columns=AUDIT_SORT, limit=limit, offset=offset
    )
    return Page(
        items=[
            AuditRead(
                at=r.at,
                event=r.event,
                entity=r.entity,
                entity_id=r.entity_id,
                actor=r.actor,
                data=r.data if isinstance(r.data, dict) else {"value": r.data},
            )
            for r in rows
        ],
        total=total,
        limit=limit,
        offset=offset,
    )
