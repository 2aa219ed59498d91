"""Liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

import time as walltime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from upstox_bot import __version__
from upstox_bot.api.auth import ReadKey
from upstox_bot.api.deps import AccountDep, SessionDep, SettingsDep, ViewDep
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS
from upstox_bot.api.schemas.control import CheckRead, ReadyRead
from upstox_bot.api.schemas.trading import HealthRead
from upstox_bot.config import MarketSource, Settings
from upstox_bot.db.models import OrderRow, RiskDecisionRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.monitoring.metrics import CONTENT_TYPE, MetricsSnapshot, render

router = APIRouter(tags=["health"], route_class=GuardedRoute)

FEED_SILENCE_S = 15.0  # no tick batch for this long: the feed is not ticking
REDIS_TIMEOUT_S = 1.0


def _database(sessions: sessionmaker[Session]) -> str:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # a health check reports, it does not raise
        return f"error: {type(exc).__name__}"
    return "ok"


@router.get("/health", response_model=HealthRead)
def health(request: Request, view: ViewDep) -> HealthRead:
    """Liveness: is the process up, can it reach its database, is the market loop moving?"""
    database = _database(request.app.state.sessions)
    stats = request.app.state.stats
    return HealthRead(
        status="ok" if database == "ok" else "degraded",
        version=__version__,
        database=database,
        market=None if view is None else view.market,
        market_time=None if view is None else view.at,
        ticks=None if stats is None else stats.ticks,
        ticks_per_second=None if stats is None else round(stats.ticks_per_second(), 1),
    )


def _redis(url: str) -> CheckRead:
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return CheckRead(ok=False, detail=f"unreachable: {type(exc).__name__}")
    finally:
        client.close()
    return CheckRead(ok=True, detail="ok")


def _checks(request: Request, settings: Settings) -> dict[str, CheckRead]:
    checks: dict[str, CheckRead] = {}
    database = _database(request.app.state.sessions)
    checks["database"] = CheckRead(ok=database == "ok", detail=database)
    if settings.REDIS_URL:
        checks["redis"] = _redis(settings.REDIS_URL)
    stats = request.app.state.stats
    if stats is not None:
        last = stats.recent[-1][0] if stats.recent else stats.started_wall
        silent = walltime.monotonic() - last
        if stats.finished:
            checks["feed"] = CheckRead(ok=False, detail="the market loop has finished")
        elif silent > FEED_SILENCE_S:
            checks["feed"] = CheckRead(ok=False, detail=f"no ticks for {silent:.0f} s")
        else:
            checks["feed"] = CheckRead(ok=True, detail=f"{stats.ticks} ticks")
    if settings.MARKET is MarketSource.UPSTOX:
        present = settings.UPSTOX_ACCESS_TOKEN is not None
        checks["upstox_token"] = CheckRead(
            ok=present, detail="present" if present else "no UPSTOX_ACCESS_TOKEN: log in first"
        )
    return checks


@router.get("/ready", response_model=ReadyRead, responses={503: {"model": ReadyRead}})
async def ready(request: Request, settings: SettingsDep) -> JSONResponse:
    """Readiness: database, Redis (when REDIS_URL is set), the feed (when the bot runs here)
    and the Upstox token (when MARKET=upstox). 503 while any of them fails."""
    checks = await run_in_threadpool(_checks, request, settings)
    body = ReadyRead(ready=all(c.ok for c in checks.values()), checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


def queue_depths(settings: Settings) -> dict[str, int]:
    """Tasks waiting in each Celery queue (distributed harness); {} without Redis."""
    if not settings.REDIS_URL:
        return {}
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1)
        return {q: int(client.llen(q)) for q in ("feed", "ingest", "signals", "orders", "default")}
    except redis.RedisError:
        return {}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."},
        **ERRORS,
    },
)
async def metrics(
    request: Request, view: ViewDep, session: SessionDep, account: AccountDep, _key: ReadKey
) -> Response:
    """Prometheus metrics: ticks, orders by state, open positions, the day's P&L and the
    loss-limit headroom, the kill switch, WebSocket clients."""

    def stored() -> tuple[dict[str, int], MetricsSnapshot | None]:
        counts = dict(
            session.execute(
                select(OrderRow.status, func.count())
                .where(OrderRow.account == account)
                .group_by(OrderRow.status)
            ).all()
        )
        rejected.update(
            (str(rule), int(count))
            for rule, count in session.execute(
                select(RiskDecisionRow.rule, func.count())
                .where(
                    RiskDecisionRow.account == account,
                    RiskDecisionRow.approved.is_(False),
                    RiskDecisionRow.rule.is_not(None),
                )
                .group_by(RiskDecisionRow.rule)
            )
        )
        depth.update(queue_depths(request.app.state.settings))
        if view is not None:
            return counts, None
        snap = AccountRepository(session).latest_snapshot(account)
        record = AccountRepository(session).get_or_none(account)
        return counts, MetricsSnapshot(
            ticks=None,
            open_positions=snap.open_positions if snap else 0,
            day_pnl_paise=snap.day_pnl_paise if snap else 0,
            loss_limit_paise=snap.loss_limit_paise if snap else 0,
            kill_switch=record.kill_switch if record else False,
        )

    rejected: dict[str, int] = {}
    depth: dict[str, int] = {}
    counts, from_db = await run_in_threadpool(stored)
    hub = request.app.state.hub
    stats = request.app.state.stats
    if view is not None:
        snap = view.account
        snapshot = MetricsSnapshot(
            ticks=None if stats is None else stats.ticks,
            orders_by_status=counts,
            open_positions=snap.open_positions,
            day_pnl_paise=snap.day_pnl_paise,
            loss_limit_paise=snap.loss_limit_paise,
            kill_switch=snap.kill_switch,
            ws_clients=hub.subscriber_count,
            ws_dropped=hub.dropped,
            rejections_by_rule=rejected,
            feed_lag_s=(
                None
                if stats is None or stats.last_tick_wall is None
                else round(walltime.monotonic() - stats.last_tick_wall, 3)
            ),
            candle_to_order_s=() if stats is None else tuple(stats.candle_to_order_s),
            queue_depth=depth,
        )
    else:
        assert from_db is not None
        snapshot = MetricsSnapshot(
            ticks=None,
            orders_by_status=counts,
            open_positions=from_db.open_positions,
            day_pnl_paise=from_db.day_pnl_paise,
            loss_limit_paise=from_db.loss_limit_paise,
            kill_switch=from_db.kill_switch,
            ws_clients=hub.subscriber_count,
            ws_dropped=hub.dropped,
            rejections_by_rule=rejected,
            queue_depth=depth,
        )
    return Response(render(snapshot), media_type=CONTENT_TYPE)
