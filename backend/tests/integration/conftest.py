"""The servers' fixtures: PostgreSQL and SQLite databases migrated once per run, Redis
databases, and deployments of worker processes with a Redis server of their own.

`db_session` is parametrized over both backends; each test runs inside a transaction that is
rolled back. The PostgreSQL server is UPSTOX_BOT_TEST_POSTGRES_URL (default: the local `test`
database, trust auth), the Redis server the local one; without them the tests that need them
skip, except under CI where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests.support.cluster import Cluster
from tests.support.servers import RedisServer
from upstox_bot.db import migrate
from upstox_bot.db.session import make_engine

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_SERVER = "redis://127.0.0.1:6379"
REDIS_DATABASES = range(8, 16)  # those the tests may claim; the bot's defaults use the low ones
REDIS_CLAIM_KEY = "upstox-bot-test-claim"
REDIS_CLAIM_S = 600  # a claim expires: a run killed mid-way frees its database


def _server_url() -> str:
    return os.environ.get("UPSTOX_BOT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _unreachable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the server's maintenance database (to create databases)."""
    engine = make_engine(_server_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        _unreachable(f"PostgreSQL is not reachable at {make_url(_server_url())!r}: {exc.orig}")
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


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A database of the shared Redis server, claimed by this module and emptied before and after.

    Other test runs may share the server (never a database): a claim is a key set only if absent.
    """
    try:
        with redis.Redis.from_url(REDIS_SERVER, socket_timeout=2) as probe:
            probe.ping()
    except redis.RedisError as exc:
        _unreachable(f"Redis is not reachable at {REDIS_SERVER}: {exc}")
    for db in REDIS_DATABASES:
        url = f"{REDIS_SERVER}/{db}"
        with redis.Redis.from_url(url) as client:
            if not client.set(REDIS_CLAIM_KEY, os.getpid(), nx=True, ex=REDIS_CLAIM_S):
                continue
            client.flushdb()
            client.set(REDIS_CLAIM_KEY, os.getpid(), ex=REDIS_CLAIM_S)
            try:
                yield url
            finally:
                client.flushdb()
            return
    pytest.fail(f"no free Redis database ({REDIS_DATABASES.start}-{REDIS_DATABASES.stop - 1})")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the module's Redis database, emptied for this test (the claim renewed)."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
        client.set(REDIS_CLAIM_KEY, os.getpid(), ex=REDIS_CLAIM_S)
        yield client


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own (running): one a test may restart or empty, or that no
    worker listens on."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster_factory(
    new_postgres_url: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Cluster]]:
    """Deployments, each on a Redis server of its own and a new PostgreSQL database (unless
    given `pg_url`), with extra settings; their workers and servers stop after the test."""
    made: list[Cluster] = []

    def make(*, pg_url: str | None = None, **settings: str) -> Cluster:
        workdir = tmp_path_factory.mktemp("cluster")
        cluster = Cluster.deploy(pg_url or new_postgres_url(), workdir, **settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
