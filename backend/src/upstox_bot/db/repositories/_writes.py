"""Dialect-aware idempotent writes: INSERT ... ON CONFLICT on PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Executable, Table, TextClause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from upstox_bot.db.base import Base

Values = Mapping[str, Any]


def table_of(model: type[Base]) -> Table:
    """The Core table of a row class (Core statements skip the ORM's per-object work)."""
    return cast(Table, model.__table__)


def insert_statement(session: Session, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT of a row class (for ON CONFLICT clauses of one's own)."""
    return _insert(session, table_of(model))


# The ON CONFLICT statements by dialect, table and columns: they sit on every commit's path
# (a commit precedes each order sent), and building one costs more than executing it (the
# statement is immutable; SQLAlchemy's compiled cache then finds it by identity).
_STATEMENTS: dict[tuple[object, ...], Executable] = {}


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    dialect = _dialect(session)
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upstox-bot supports PostgreSQL and SQLite, not {dialect}")


def insert_ignore(
    session: Session,
    model: type[Base],
    values: Values | Sequence[Values],
    *,
    conflict: Sequence[str],
    conflict_where: ColumnElement[bool] | TextClause | None = None,
) -> int:
    """Insert rows, skipping those that collide on the unique key `conflict`.

    Args:
        values: one row, or many (sent as one executemany).
        conflict: the columns of the unique constraint or index that decides a duplicate.
        conflict_where: the predicate of a partial unique index, if the key is one.

    Returns:
        The number of rows inserted, for a single row 1 or 0 (0: it existed).
    """
    if isinstance(values, Sequence) and not values:
        return 0
    table = table_of(model)
    where = None if conflict_where is None else str(conflict_where)  # made anew by callers
    key = ("ignore", _dialect(session), table.name, tuple(conflict), where)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        # Count the RETURNING rows: DBAPI rowcounts are unreliable here (psycopg reports -1
        # when SQLAlchemy adds an implicit RETURNING for the primary key).
        stmt = _STATEMENTS[key] = (
            _insert(session, table)
            .on_conflict_do_nothing(index_elements=list(conflict), index_where=conflict_where)
            .returning(*table.primary_key.columns)
        )
    if isinstance(values, Mapping):
        return len(session.execute(stmt, dict(values)).all())
    return len(session.execute(stmt, [dict(v) for v in values]).all())


def upsert(
    session: Session,
    model: type[Base],
    values: Values | Sequence[Values],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
) -> None:
    """Insert rows; where one collides on the unique key `conflict`, overwrite `update` columns."""
    if isinstance(values, Sequence) and not values:
        return
    table = table_of(model)
    key = ("upsert", _dialect(session), table.name, tuple(conflict), tuple(update))
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        insert = _insert(session, table)
        stmt = _STATEMENTS[key] = insert.on_conflict_do_update(
            index_elements=list(conflict),
            set_={name: insert.excluded[name] for name in update},
        )
    if isinstance(values, Mapping):
        session.execute(stmt, dict(values))
    else:
        session.execute(stmt, [dict(v) for v in values])


def execute_count(session: Session, stmt: Executable) -> int:
    """Execute an UPDATE or DELETE and return how many rows it touched."""
    result = cast(CursorResult[Any], session.execute(stmt))
    return max(result.rowcount, 0)
