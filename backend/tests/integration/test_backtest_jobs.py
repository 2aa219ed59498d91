"""Stored backtests on SQLite and PostgreSQL, and `backtests.run` through a real Celery worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.support.waiting import wait_until
from tests.unit.api.test_backtests import REQUEST, write_walk
from upstox_bot.backtest import jobs
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.config import Settings, get_settings
from upstox_bot.db.models_backtest import BacktestStatus
from upstox_bot.db.repositories.backtests import BacktestRepository
from upstox_bot.db.session import make_session_factory, session_scope
from upstox_bot.errors import NotFound

T0 = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


def test_backtest_moves_pending_running_done_once(db_session: Session) -> None:
    repo = BacktestRepository(db_session)
    request = {"data": "/d/ZIG.csv", "strategy": "sma_crossover", "params": {"fast": 3}}
    created = repo.create(request, T0)
    assert created.status is BacktestStatus.PENDING
    assert repo.get(created.id).request == request

    assert repo.mark_running(created.id, T0 + timedelta(seconds=1))
    assert not repo.mark_running(created.id, T0 + timedelta(seconds=2))  # the guard
    result = {"summary": {"trade_count": 3, "net_pnl": 12.5}, "trades": []}
    assert repo.finish(created.id, result, T0 + timedelta(seconds=5))
    assert not repo.finish(created.id, {"summary": {}}, T0 + timedelta(seconds=6))
    assert not repo.fail(created.id, "late", T0 + timedelta(seconds=7))

    done = repo.get(created.id)
    assert done.status is BacktestStatus.DONE
    assert done.result == result
    assert (done.started_at, done.finished_at) == (
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=5),
    )
    assert done.error is None
    assert repo.summaries([created.id]) == {created.id: result["summary"]}


def test_failure_from_pending_or_running_and_newest_first_pages(db_session: Session) -> None:
    repo = BacktestRepository(db_session)
    ids = [repo.create({"data": f"{i}.csv"}, T0 + timedelta(minutes=i)).id for i in range(5)]
    assert repo.fail(ids[0], "no bars", T0)
    assert repo.mark_running(ids[1], T0)
    assert repo.fail(ids[1], "crashed", T0)
    assert not repo.mark_running(ids[0], T0)  # a failed backtest is never run

    page, total = repo.find(limit=2, offset=1)
    assert total == 5
    assert [r.id for r in page] == [ids[3], ids[2]]
    assert all(r.result is None for r in page)
    failed, count = repo.find(status=BacktestStatus.FAILED)
    assert count == 2
    assert [(r.id, r.error) for r in failed] == [(ids[1], "crashed"), (ids[0], "no bars")]
    assert repo.summaries([ids[0], ids[2]]) == {}
    with pytest.raises(NotFound):
        repo.get("missing")


# --- through a real worker ------------------------------------------------------------------


@pytest.mark.integration
def test_backtests_run_on_a_real_worker_computes_once(
    redis_url: str,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    worker_app = pytest.importorskip(
        "upstox_bot.worker.app", reason="the Celery app (worker/app.py) is not built yet"
    )
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from upstox_bot.api.routers.backtests import default_dispatcher
    from upstox_bot.runtime.distributed.resources import Resources
    from upstox_bot.worker.tasks import backtests as task_module
    from upstox_bot.worker.tasks.backtests import CeleryDispatcher

    settings = Settings(
        _env_file=None, DATA_DIR=tmp_path, DATABASE_URL=postgres_url, REDIS_URL=redis_url
    )
    csv = write_walk(tmp_path / "ZIG.csv", days=("2026-11-23",))
    for name, value in (("DATA_DIR", tmp_path), ("DATABASE_URL", postgres_url)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()  # the Celery app reads its broker from Settings on first use
    request.addfinalizer(get_settings.cache_clear)
    app = worker_app.app
    monkeypatch.setitem(app.conf, "broker_url", redis_url)  # if an earlier test loaded it
    monkeypatch.setattr(worker_app, "_resources", Resources(settings))
    engine: Engine = worker_app.resources().sessions.kw["bind"]
    request.addfinalizer(engine.dispose)

    def dispose_worker_engine() -> None:
        # The solo pool sends worker_process_init, so the task built its own Resources.
        if worker_app._resources is not None:
            worker_app._resources.sessions.kw["bind"].dispose()

    request.addfinalizer(dispose_worker_engine)
    sessions = make_session_factory(engine)
    dispatcher = default_dispatcher(sessions, settings)
    assert isinstance(dispatcher, CeleryDispatcher)

    outcomes: list[object] = []  # what each delivery's run returned, as the worker finished it

    def finished(task: Any = None, retval: object = None, **_: object) -> None:
        if getattr(task, "name", None) == jobs.TASK_NAME:
            outcomes.append(retval)

    task_postrun.connect(finished, weak=False)
    request.addfinalizer(lambda: task_postrun.disconnect(finished))
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["default"]):
        record = jobs.submit(
            sessions,
            BacktestRequest.from_dict({**REQUEST, "data": str(csv)}),
            dispatcher=dispatcher,
        )
        task_module.send(record.id)  # a duplicate delivery of the same job
        wait_until(lambda: len(outcomes) == 2, what="the worker to run both deliveries")
    with session_scope(sessions) as session:
        stored = BacktestRepository(session).get(record.id)

    assert stored.status is BacktestStatus.DONE, stored.error
    assert sorted(map(str, outcomes)) == ["done", "duplicate"]
    assert stored.result is not None
    assert stored.result["summary"]["trade_count"] > 0
    with session_scope(sessions) as session:
        final = BacktestRepository(session).get(record.id)
    assert final.finished_at == stored.finished_at  # the duplicate computed nothing
    assert redis.Redis.from_url(redis_url).llen("default") == 0
