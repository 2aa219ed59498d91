"""Engines, session factories and the unit-of-work scope. Nothing is built at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 5000


def _configure_sqlite(dbapi_connection: Any, _connection_record: Any) -> None:
    # Take transaction control away from the sqlite3 driver (which skips BEGIN before
    # SELECT, DDL and SAVEPOINT); _begin_sqlite emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the API read while the trading loop writes; NORMAL is durable in WAL mode
        # except for the last transactions on power loss, which the broker reconciliation covers.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine for a PostgreSQL or SQLite URL.

    SQLite connections get WAL journalling, `synchronous=NORMAL`, enforced foreign keys, a
    busy timeout and real transactions (BEGIN on every unit of work, so that SAVEPOINTs and
    DDL are transactional); the folder of a SQLite file is created if missing. PostgreSQL
    connections are pinged before use so that a restarted server does not fail the next
    unit of work. Build engines per process (after a fork), never at import time.

    Args:
        url: SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db` or `sqlite:///path.sqlite`.
        **kwargs: passed to `sqlalchemy.create_engine` (e.g. `echo=True`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and "mode=memory" not in url:
            # The embedded harness keeps its file in DATA_DIR, which may not exist yet.
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to `engine`; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back when it raises.

    Repositories flush but never commit; this scope (or the API's session dependency)
    owns the transaction.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
