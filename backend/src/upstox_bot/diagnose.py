"""Start-up failures told in one line: what is wrong and how to fix it.

The CLI's entry point (`cli.main`) passes every exception that ends a command through
`explain`. A failure it knows (the database, DATA_DIR, a busy port, a setting) becomes one line
and exit code 2; the traceback goes to the log at DEBUG level, and `upstox-bot --debug ...`
prints it. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from upstox_bot.errors import ConfigError, UpstoxBotError


class StartupError(UpstoxBotError):
    """The bot cannot start as configured: the message says why and what to change."""


def shown_url(url: str) -> str:
    """A database URL as it may be shown: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sa_exc.ArgumentError, ValueError):
        return "(unparseable)"


def check_data_dir(data_dir: Path) -> None:
    """DATA_DIR must be a folder this process can write (it holds the SQLite file and state).

    Raises:
        StartupError: it is a file, or it cannot be created or written.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise StartupError(
            f"DATA_DIR {data_dir} is not a folder (a file has that name): move the file away "
            "or set DATA_DIR to a folder"
        )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-check-"):
            pass
    except FileExistsError:
        raise StartupError(
            f"DATA_DIR {data_dir}: a part of its path is a file, not a folder: set DATA_DIR to "
            "a folder"
        ) from None
    except NotADirectoryError:
        raise StartupError(
            f"DATA_DIR {data_dir}: a part of its path is a file, not a folder: set DATA_DIR to "
            "a folder"
        ) from None
    except OSError as exc:
        raise StartupError(
            f"DATA_DIR {data_dir} is not writable ({exc.strerror or exc}): give this user write "
            "access to it, or set DATA_DIR to a writable folder"
        ) from None


def check_port_free(host: str, port: int) -> None:
    """Nothing listens on host:port yet (checked by binding it as the API server will).

    Raises:
        StartupError: the port is taken (or the address cannot be bound).
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StartupError(
            f"API_HOST {host!r} is not an address of this machine ({exc.strerror}): use "
            "--host 127.0.0.1"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            raise StartupError(port_message(host, port, exc)) from None


def port_message(host: str, port: int, exc: OSError | None = None) -> str:
    """The one line for an API port that cannot be bound."""
    if exc is not None and exc.errno == errno.EACCES:
        return (
            f"port {port} on {host} needs privileges this user lacks: choose a port above 1023 "
            "with --port 8000"
        )
    if exc is not None and exc.errno == errno.EADDRNOTAVAIL:
        return f"API_HOST {host} is not an address of this machine: use --host 127.0.0.1"
    return (
        f"port {port} on {host} is in use (another upstox-bot?): stop that program, or choose "
        f"a free port with --port {port + 1 if port < 65535 else 8000} (or run without the "
        "API: --no-api)"
    )


def _sqlite_path(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    return parsed.database or None


def _database_error(exc: sa_exc.DBAPIError, url: str | None) -> str:
    original = exc.orig
    text = str(original).strip().splitlines()[0] if original is not None else str(exc)
    path = _sqlite_path(url)
    if isinstance(original, sqlite3.Error) or path is not None:
        where = path or "the SQLite file"
        lowered = text.lower()
        if "locked" in lowered or "busy" in lowered:
            return (
                f"the database file {where} is locked by another program (another upstox-bot "
                "on the same DATA_DIR?): stop it, or give this one another DATA_DIR"
            )
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return (
                f"the database file {where} is not a readable SQLite database ({text}): move "
                "it away (a new one is created) or restore it from a backup"
            )
        if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
            return (
                f"the database file {where} cannot be written ({text}): give this user write "
                "access to it and to DATA_DIR, or set DATA_DIR to a writable folder"
            )
        return f"the database file {where} failed: {text}: check DATA_DIR and the file"
    target = shown_url(url) if url else "DATABASE_URL"
    return (
        f"cannot use the database at {target} ({text}): check that the server runs and "
        "accepts connections, and DATABASE_URL (user, password, host, port, database)"
    )


def explain(exc: BaseException, *, database_url: str | None = None) -> str | None:
    """One line naming the cause and the fix of a failure, or None if it is not a known one.

    Args:
        database_url: the URL the command used, to name it (without its password).
    """
    if isinstance(exc, ConfigError | StartupError):
        return str(exc)
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return (
            f"DATABASE_URL {shown_url(database_url or '')}: unknown database kind ({exc}): use "
            "postgresql+psycopg://user@host:5432/db, or unset it for SQLite in DATA_DIR"
        )
    if isinstance(exc, sa_exc.ArgumentError):
        return (
            f"DATABASE_URL is not a database URL ({exc}): use "
            "postgresql+psycopg://user@host:5432/db, or unset it for SQLite in DATA_DIR"
        )
    if isinstance(exc, sa_exc.DBAPIError):
        return _database_error(exc, database_url)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "the API port is in use (another upstox-bot?): choose a free port with --port"
    return None
