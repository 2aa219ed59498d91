"""List queries of the API: filters, a whitelisted sort and limit/offset, with the total."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from upstox_bot.db.base import Base

RowT = TypeVar("RowT", bound=Base)


def page(
    session: Session,
    model: type[RowT],
    *,
    where: Sequence[ColumnElement[bool]],
    sort: str,
    columns: Mapping[str, InstrumentedAttribute[Any]],
    limit: int,
    offset: int,
    with_total: bool = True,
) -> tuple[list[RowT], int]:
    """One page of rows and the count of all rows that match.

    Args:
        sort: a key of `columns`, prefixed with "-" for descending (ties by id, same way).
        columns: the sortable columns by public name.
    """
    descending = sort.startswith("-")
    column = columns[sort.removeprefix("-")]
    row_id: InstrumentedAttribute[int] = getattr(model, "id")  # noqa: B009 - every row has id
    order = (column.desc(), row_id.desc()) if descending else (column.asc(), row_id.asc())
    rows = list(
        session.scalars(
            select(model)
            .where(*where)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
            .execution_options(populate_existing=True)
        )
    )
    total = (
        session.scalar(select(func.count()).select_from(model).where(*where)) or 0
        if with_total
        else len(rows)
    )
    return rows, total


def aware(at: datetime) -> datetime:
    """`at` with UTC attached when it came without an offset (the API answers with one)."""
    if at.tzinfo is not None and at.utcoffset() is not None:
        return at
    return at.replace(tzinfo=UTC)
