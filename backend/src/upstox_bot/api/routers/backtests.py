"""Backtests through the API: submit one (it runs on a worker or a local thread), list them,
read one with its trades, and fetch its HTML report."""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.deps import SessionDep, SettingsDep
from upstox_bot.api.queries import TOTAL_DOC, TOTAL_HEADER, Limit, Offset, PathId
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.backtests import (
    BacktestCreate,
    BacktestDataRead,
    BacktestListItem,
    BacktestRead,
    BacktestSubmitted,
)
from upstox_bot.api.schemas.common import ERRORS, ErrorBody, Page
from upstox_bot.backtest import jobs
from upstox_bot.backtest.models import BacktestResult
from upstox_bot.backtest.report import render_html
from upstox_bot.backtest.service import parse_timeframe
from upstox_bot.config import Settings
from upstox_bot.db.models_backtest import BacktestStatus
from upstox_bot.db.repositories.backtests import BacktestRepository
from upstox_bot.errors import ConfigError, Conflict
from upstox_bot.signals import registry

router = APIRouter(
    prefix="/backtests", tags=["backtests"], responses=ERRORS, route_class=GuardedRoute
)

_dispatcher_lock = threading.Lock()
log = logging.getLogger(__name__)


def default_dispatcher(
    session_factory: sessionmaker[Session], settings: Settings
) -> jobs.Dispatcher:
    """The Celery workers when REDIS_URL is set and the worker module imports; else a local
    thread."""
    if settings.REDIS_URL:
        try:
            # Imported here: the API without Redis must not need the worker's Celery app.
            from upstox_bot.worker.tasks.backtests import CeleryDispatcher
        except ImportError:
            log.warning("backtest.celery_unavailable", exc_info=True)
        else:
            return CeleryDispatcher()
    return jobs.ThreadDispatcher(session_factory, settings)


def get_dispatcher(request: Request) -> jobs.Dispatcher:
    """The app's backtest dispatcher (`app.state.backtest_dispatcher`), made on first use:
    Celery when REDIS_URL is set and the worker module imports, else a local thread."""
    state = request.app.state
    with _dispatcher_lock:
        dispatcher: jobs.Dispatcher | None = getattr(state, "backtest_dispatcher", None)
        if dispatcher is None:
            dispatcher = default_dispatcher(state.sessions, state.settings)
            state.backtest_dispatcher = dispatcher
    return dispatcher


DispatcherDep = Annotated[jobs.Dispatcher, Depends(get_dispatcher)]


def _invalid(field: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": value}]
    )


def _checked_data(body: BacktestCreate, settings: Settings) -> str:
    """The request's data path, resolved, if it may be read; else a 422 naming the field."""
    try:
        return str(jobs.check_data_path(body.data, settings))
    except jobs.DataPathRefused as exc:
        raise _invalid("data", str(exc), body.data) from None


def _check_strategy(body: BacktestCreate, settings: Settings) -> None:
    try:
        known = registry.available(settings.STRATEGIES_DIR)
    except ConfigError as exc:
        raise _invalid("strategy", str(exc), body.strategy) from None
    if body.strategy not in known:
        message = f"unknown strategy; available: {', '.join(sorted(known))}"
        raise _invalid("strategy", message, body.strategy)
    try:
        registry.create(body.strategy, body.params, strategies_dir=settings.STRATEGIES_DIR)
    except (ConfigError, TypeError, ValueError) as exc:
        raise _invalid("params", str(exc), body.params) from None
    if body.timeframe is not None:
        try:
            parse_timeframe(body.timeframe)
        except ConfigError as exc:
            raise _invalid("timeframe", str(exc), body.timeframe) from None


@router.post(
    "",
    response_model=BacktestSubmitted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={422: {"description": "An invalid field, or data outside the allowed folders."}},
)
def submit_backtest(
    body: BacktestCreate,
    request: Request,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
    _actor: TradeActor,
) -> BacktestSubmitted:
    """Queue a backtest (trade scope); poll GET /backtests/{id} until it is done or failed."""
    data = _checked_data(body, settings)
    _check_strategy(body, settings)
    record = jobs.submit(request.app.state.sessions, body.to_request(data), dispatcher=dispatcher)
    return BacktestSubmitted(id=record.id, status=record.status)


@router.get("", response_model=Page[BacktestListItem], responses={200: TOTAL_DOC})
def list_backtests(
    session: SessionDep,
    response: Response,
    status_filter: Annotated[BacktestStatus | None, Query(alias="status")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[BacktestListItem]:
    """Backtests, newest first, with the summary of those done; X-Total-Count holds how many."""
    repo = BacktestRepository(session)
    records, total = repo.find(status=status_filter, limit=limit, offset=offset)
    summaries = repo.summaries([r.id for r in records if r.status is BacktestStatus.DONE])
    response.headers[TOTAL_HEADER] = str(total)
    return Page(
        items=[BacktestListItem.of(r, summaries.get(r.id)) for r in records],
        total=total,
        limit=limit,
        offset=offset,
    )


# Outside /backtests/{id}: "data" would be read as a backtest's id.
data_router = APIRouter(tags=["backtests"], responses=ERRORS, route_class=GuardedRoute)


@data_router.get("/backtest-data", response_model=list[BacktestDataRead])
def list_backtest_data(settings: SettingsDep) -> list[BacktestDataRead]:
    """CSV files and folders of bars that a backtest may read (in DATA_DIR and
    BACKTEST_DATA_DIRS, two levels deep), for the `data` field of POST /backtests."""
    return [
        BacktestDataRead(path=c.path, kind="file" if c.kind == "file" else "folder", files=c.files)
        for c in jobs.data_choices(settings)
    ]


@router.get("/{backtest_id}", response_model=BacktestRead, responses={404: {"model": ErrorBody}})
def read_backtest(backtest_id: PathId, session: SessionDep) -> BacktestRead:
    """One backtest: its state, and once done its summary, trades and open positions."""
    return BacktestRead.of(BacktestRepository(session).get(backtest_id))


@router.get(
    "/{backtest_id}/report",
    response_model=None,
    responses={
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "The HTML report.",
        },
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "The backtest is not done."},
    },
)
def read_report(backtest_id: PathId, session: SessionDep) -> HTMLResponse:
    """The HTML report (equity curve, drawdown, monthly returns, trades) of a done backtest."""
    record = BacktestRepository(session).get(backtest_id)
    if record.status is not BacktestStatus.DONE or record.result is None:
        detail = f": {record.error}" if record.error else ""
        raise Conflict(
            f"backtest {backtest_id} is {record.status.value}{detail}; only a done one has a report"
        )
    return HTMLResponse(render_html(BacktestResult.from_dict(record.result)))
