"""Database fixtures: a fresh PostgreSQL database and a SQLite file, migrated once per run.

`db_session` is parametrized over both backends; each test runs inside a transaction that is
rolled back. The PostgreSQL server is UPSTOX_BOT_TEST_POSTGRES_URL (default: the local `test`
database, trust auth); without it the PostgreSQL cases skip, except under CI where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from upstox_bot.db import migrate
from upstox_bot.db.session import make_engine

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _server_url() -> str:
    return os.environ.get("UPSTOX_BOT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the server's maintenance database (to create databases)."""
    engine = make_engine(_server_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        message = f"PostgreSQL is not reachable at {make_url(_server_url())!r}: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def new_postgres_url(postgres_server: Engine) -> Iterator[Callable[[], str]]:
    """A factory of empty PostgreSQL databases, all dropped at the end of the run."""
    created: list[str] = []

    def create() -> str:
        name = f"upstox_bot_test_{uuid.uuid4().hex[:12]}"
        with postgres_server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(_server_url()).set(database=name).render_as_string(hide_password=False)

    yield create
    with postgres_server.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url(new_postgres_url: Callable[[], str]) -> str:
    """A PostgreSQL database migrated to head, shared by the run."""
    url = new_postgres_url()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file migrated to head, shared by the run."""
    path: Path = tmp_path_factory.mktemp("db") / "upstox_bot.sqlite"
    url = f"sqlite:///{path.as_posix()}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def engines() -> Iterator[dict[str, Engine]]:
    """Engines by URL, built once per run."""
    cache: dict[str, Engine] = {}
    yield cache
    for engine in cache.values():
        engine.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgresql", marks=pytest.mark.integration),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database: SQLite, then PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def db_engine(db_url: str, engines: dict[str, Engine]) -> Engine:
    """The shared engine of the parametrized backend."""
    if db_url not in engines:
        engines[db_url] = make_engine(db_url)
    return engines[db_url]


@pytest.fixture
def db_session(db_engine: Engine) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back after the test.

    The session's own commits and rollbacks work on a SAVEPOINT, so code under test may
    commit or recover from an IntegrityError without leaking rows into other tests.
    """
    with db_engine.connect() as connection:
        outer = connection.begin()
        session = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()
