"""Backtests as background jobs: store the request, run it on a Celery worker or a local thread,
store the result or the error.

The local thread is `ThreadDispatcher`; the Celery one is the worker's
(`worker.tasks.backtests.CeleryDispatcher`). Both end in `execute`, which claims the stored
backtest (pending -> running) before it runs, so a job delivered twice runs once. Data paths in
a submitted request are server-side paths and must lie inside DATA_DIR or BACKTEST_DATA_DIRS
(`check_data_path`): a caller of the API must not read arbitrary files of the server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.backtest.data import DataError
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.service import run_backtest
from upstox_bot.config import Settings
from upstox_bot.db.models_backtest import BacktestStatus
from upstox_bot.db.repositories.backtests import BacktestRecord, BacktestRepository
from upstox_bot.db.session import session_scope
from upstox_bot.errors import ConfigError

log = logging.getLogger(__name__)

TASK_NAME = "backtests.run"
ERROR_CHARS = 2000  # a stored error message is cut to this length


class DataPathRefused(ValueError):
    """A request's data path is missing, not CSV data, or outside the allowed folders: fix the
    path (the message says which)."""


class Dispatcher(Protocol):
    """Starts the run of a stored backtest somewhere (a worker, a thread)."""

    def dispatch(self, backtest_id: str) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def allowed_data_dirs(settings: Settings) -> list[Path]:
    """The folders whose files backtests may read: DATA_DIR, then BACKTEST_DATA_DIRS (resolved)."""
    return [Path(folder).resolve() for folder in (settings.DATA_DIR, *settings.BACKTEST_DATA_DIRS)]


MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX: the longest file or folder name


def check_data_path(data: str, settings: Settings) -> Path:
    """The resolved path of a request's data, if a backtest may read it.

    A relative path is taken relative to DATA_DIR. Symbolic links are followed before the check,
    so a link inside an allowed folder to a file outside it is refused.

    Raises:
        DataPathRefused: no such file or folder, a file that is not a .csv, or a path outside
            DATA_DIR and BACKTEST_DATA_DIRS.
    """
    if not data.strip() or "\x00" in data:
        raise DataPathRefused("give the path of a CSV file or a folder of them")
    if len(data) > MAX_PATH_CHARS or any(
        len(part.encode("utf-8", "replace")) > MAX_NAME_BYTES for part in Path(data).parts
    ):
        raise DataPathRefused(
            f"path too long: at most {MAX_PATH_CHARS} characters, {MAX_NAME_BYTES} bytes a name"
        )
    try:
        path = Path(data)
        if not path.is_absolute():
            path = Path(settings.DATA_DIR) / path
        resolved = path.resolve()
        allowed = allowed_data_dirs(settings)
        if not any(resolved.is_relative_to(folder) for folder in allowed):
            raise DataPathRefused(
                f"{data}: outside the folders backtests may read (DATA_DIR and BACKTEST_DATA_DIRS)"
            )
        if resolved.is_file():
            if resolved.suffix.lower() != ".csv":
                raise DataPathRefused(f"{data}: not a .csv file")
        elif not resolved.is_dir():
            raise DataPathRefused(f"{data}: no such file or folder")
    except DataPathRefused:
        raise
    except (OSError, ValueError) as exc:  # a name the file system refuses, a loop of links
        why = getattr(exc, "strerror", None) or str(exc)
        raise DataPathRefused(f"{data}: cannot be read ({why})") from None
    return resolved


@dataclass(frozen=True, slots=True)
class DataChoice:
    """Bars a backtest may read: `path` is what to give as the request's `data`."""

    path: str
    kind: str  # "file" or "folder"
    files: int  # CSV files it holds (a file: 1)


MAX_DATA_CHOICES = 200


def _csv_count(folder: Path) -> int:
    top = [f for f in folder.glob("*.csv") if f.is_file()]
    nested = [f for f in folder.glob("*/*.csv") if f.is_file()]
    return len(top) + len(nested)


def data_choices(settings: Settings) -> list[DataChoice]:
    """The CSV files and folders of bars in DATA_DIR and BACKTEST_DATA_DIRS (a few levels deep),
    for a form to offer; paths inside DATA_DIR are given relative to it."""
    data_dir = Path(settings.DATA_DIR).resolve()
    choices: list[DataChoice] = []
    seen: set[Path] = set()

    def shown(path: Path) -> str:
        return str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path)

    def add(path: Path, kind: str, files: int) -> None:
        if path not in seen and files and len(choices) < MAX_DATA_CHOICES:
            seen.add(path)
            choices.append(DataChoice(shown(path), kind, files))

    for folder in allowed_data_dirs(settings):
        if not folder.is_dir():
            continue
        if folder != data_dir:
            add(folder, "folder", _csv_count(folder))
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                count = _csv_count(child)
                add(child.resolve(), "folder", count)
                if not count:  # a cache folder: candles/<interval>/<symbol>/*.csv
                    for grandchild in sorted(child.iterdir()):
                        if grandchild.is_dir():
                            add(grandchild.resolve(), "folder", _csv_count(grandchild))
            elif child.is_file() and child.suffix.lower() == ".csv":
                add(child.resolve(), "file", 1)
    return choices


def submit(
    session_factory: sessionmaker[Session],
    request: BacktestRequest,
    *,
    dispatcher: Dispatcher,
    now: Callable[[], datetime] = _utc_now,
) -> BacktestRecord:
    """Store a backtest as pending, then hand it to the dispatcher (after the commit, so that the
    job always finds its row).

    The caller checks the request first (`check_data_path`, the strategy and its parameters).

    Returns:
        The stored backtest (pending).
    """
    with session_scope(session_factory) as session:
        record = BacktestRepository(session).create(request.to_dict(), now())
    dispatcher.dispatch(record.id)
    log.info("backtest.submitted", extra={"backtest_id": record.id, "strategy": request.strategy})
    return record


def execute(
    session_factory: sessionmaker[Session],
    backtest_id: str,
    settings: Settings,
    *,
    now: Callable[[], datetime] = _utc_now,
) -> BacktestStatus | None:
    """Run one stored backtest and store its result or its error.

    Running it twice for the same id computes once: the run starts only if this call moves the
    backtest from pending to running.

    Returns:
        DONE or FAILED when this call ran it; None when it was not pending (a duplicate
        delivery, or an unknown id).
    """
    with session_scope(session_factory) as session:
        repo = BacktestRepository(session)
        claimed = repo.mark_running(backtest_id, now())
        record = repo.get(backtest_id) if claimed else None
    if record is None:
        log.info("backtest.duplicate", extra={"backtest_id": backtest_id})
        return None
    try:
        request = BacktestRequest.from_dict(record.request)
        request = _with_checked_path(request, settings)
        result = run_backtest(request, settings=settings)
    except (ConfigError, DataError, ValueError) as exc:
        # The request cannot run (bad data, option or parameter): the message is for the trader.
        return _fail(session_factory, backtest_id, str(exc), now())
    except Exception as exc:
        log.exception("backtest.crashed", extra={"backtest_id": backtest_id})
        return _fail(session_factory, backtest_id, f"internal error ({type(exc).__name__})", now())
    with session_scope(session_factory) as session:
        BacktestRepository(session).finish(backtest_id, result.to_dict(), now())
    log.info(
        "backtest.done",
        extra={"backtest_id": backtest_id, "trades": result.summary.trade_count},
    )
    return BacktestStatus.DONE


def _with_checked_path(request: BacktestRequest, settings: Settings) -> BacktestRequest:
    # Checked again where it runs: the worker's settings decide what it may read.
    path = check_data_path(request.data, settings)
    return BacktestRequest.from_dict({**request.to_dict(), "data": str(path)})


def _fail(
    session_factory: sessionmaker[Session], backtest_id: str, error: str, at: datetime
) -> BacktestStatus:
    with session_scope(session_factory) as session:
        BacktestRepository(session).fail(backtest_id, error[:ERROR_CHARS], at)
    log.warning("backtest.failed", extra={"backtest_id": backtest_id, "error": error})
    return BacktestStatus.FAILED


class ThreadDispatcher:
    """Runs backtests on background threads of this process (no Redis: the embedded harness or
    `upstox-bot api` alone).

    One thread by default: a backtest is CPU-bound and shares the interpreter with the API (and,
    embedded, the trading loop), so runs queue up rather than compete.
    """

    def __init__(
        self, session_factory: sessionmaker[Session], settings: Settings, *, workers: int = 1
    ) -> None:
        self._sessions = session_factory
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backtest")
        self._lock = threading.Lock()
        self._futures: set[Future[BacktestStatus | None]] = set()

    def dispatch(self, backtest_id: str) -> None:
        """Queue the run of a stored backtest."""
        future = self._pool.submit(execute, self._sessions, backtest_id, self._settings)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued run has ended; False if some still run after `timeout_s`."""
        with self._lock:
            pending = set(self._futures)
        _done, not_done = wait_futures(pending, timeout=timeout_s)
        return not not_done

    def shutdown(self) -> None:
        """Drop queued runs (they stay pending) and wait for the running one to end."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _forget(self, future: Future[BacktestStatus | None]) -> None:
        with self._lock:
            self._futures.discard(future)
