"""List queries of the API: filters, a whitelisted sort and limit/offset, with the total; the
checked types of query and path parameters; and the trading symbols that list answers show.

Dates are exactly YYYY-MM-DD and times ISO 8601 (RFC 3339; no offset means UTC): a number is
not a date. A time beyond what the database can compare after conversion to UTC (year 1 at
+14:00, year 9999 at -23:59) is taken as the earliest or latest time there is: as a filter it
means the same. Text filters and path parameters are bounded in length and carry no control
characters (PostgreSQL refuses a NUL in text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, TypeVar

from fastapi import Path, Query
from pydantic import BeforeValidator, WithJsonSchema
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from upstox_bot.db.base import Base
from upstox_bot.db.models import SymbolRow

RowT = TypeVar("RowT", bound=Base)

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters
MAX_FILTER_CHARS = 200
MAX_ID_CHARS = 128
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?([Zz]|[+-]\d{2}:?\d{2})?"
)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def iso_date(value: object) -> date:
    """A date given exactly as YYYY-MM-DD (a date object passes)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return date.fromisoformat(value)


def iso_time(value: object) -> datetime:
    """An aware UTC time from ISO 8601 text (no offset: UTC), clamped to the representable
    range after conversion (see the module docstring)."""
    if isinstance(value, datetime):
        parsed = value
    else:
        match = _TIME.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError("must be a time as ISO 8601, e.g. 2026-11-25T09:15:00+05:30")
        day, clock, fraction, offset = match.groups()
        text = f"{day}T{clock}"
        if fraction:
            text += "." + fraction[:6].ljust(6, "0")
        if offset:
            text += "+00:00" if offset in "Zz" else offset
        parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return EARLIEST if parsed.year < 5000 else LATEST


CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"  # a time of day in IST


def clock_time(value: object) -> time:
    """A time of day given as HH:MM[:SS], without an offset (market times are IST)."""
    if isinstance(value, time) and value.tzinfo is None:
        return value
    if not isinstance(value, str) or not re.fullmatch(CLOCK_TIME, value):
        raise ValueError("must be a time of day in IST as HH:MM or HH:MM:SS, without an offset")
    return time.fromisoformat(value)


IsoDate = Annotated[date, BeforeValidator(iso_date)]
ClockTime = Annotated[
    time,
    BeforeValidator(clock_time),
    WithJsonSchema({"type": "string", "pattern": CLOCK_TIME, "examples": ["14:30"]}),
]
IsoTime = Annotated[datetime, BeforeValidator(iso_time)]
Since = Annotated[IsoTime | None, Query(description="From this time, inclusive (ISO 8601).")]
Until = Annotated[IsoTime | None, Query(description="Before this time (ISO 8601).")]
Filter = Annotated[str | None, Query(min_length=1, max_length=MAX_FILTER_CHARS, pattern=PRINTABLE)]
PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE)]
StartDate = Annotated[
    IsoDate | None, Query(alias="from", description="IST trading date, inclusive (YYYY-MM-DD)")
]
EndDate = Annotated[
    IsoDate | None, Query(alias="to", description="IST trading date, inclusive (YYYY-MM-DD)")
]
EPOCH = date(1970, 1, 1)  # the start of a date range given without one
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Skip this many items.")]
TOTAL_HEADER = "X-Total-Count"
TOTAL_DOC = {"headers": {TOTAL_HEADER: {"description": "Items matching the filters."}}}


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


def symbols_for(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Trading symbols of instrument keys (a key without a symbol row maps to itself)."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = session.execute(
        select(SymbolRow.instrument_key, SymbolRow.trading_symbol).where(
            SymbolRow.instrument_key.in_(wanted)
        )
    )
    found: dict[str, str] = dict(rows.all())
    return {key: found.get(key, key) for key in wanted}
