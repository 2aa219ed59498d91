"""The simulated session: start one on the workers, pause it at a market time, resume, stop.

Starting needs the distributed harness (this API reaches the workers through REDIS_URL); the
embedded bot plays its own sessions (`upstox-bot run`). Pause, resume and stop are controls:
they go through the control port to whichever kernel runs the account, in both harnesses.
"""

from __future__ import annotations

from datetime import date, datetime

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import ControlDep, SettingsDep, ViewDep
from upstox_bot.api.queries import ClockTime, IsoDate
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import CommandRead
from upstox_bot.domain import IST
from upstox_bot.errors import Conflict
from upstox_bot.runtime.control import Command, CommandKind

router = APIRouter(tags=["session"], responses=ERRORS, route_class=GuardedRoute)


class SessionRead(BaseModel):
    running: bool = Field(description="Whether a kernel runs the account now.")
    market: str = Field(description="running, paused, finished, or none (no kernel).")
    market_time: datetime | None = Field(description="The kernel's market time.")
    trading_date: date | None


class SessionStart(BaseModel):
    date: IsoDate | None = Field(None, description="The session (default today, or the next).")
    speed: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        strict=True,
        description="Simulated seconds per wall second (default SIM_SPEED).",
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, strict=True, description="Market seed (default SIM_SEED)."
    )
    minutes: float = Field(
        375, gt=0, le=375, strict=True, description="Simulated minutes from 09:15."
    )
    shards: int = Field(1, ge=1, le=16, strict=True, description="Feed shards.")


class SessionStarted(BaseModel):
    trading_date: date
    shards: list[str]
    seed: int
    speed: float | None


class SessionPause(BaseModel):
    at: ClockTime = Field(description="Market time (IST) at which the market waits, HH:MM.")


@router.get("/session", response_model=SessionRead)
def read_session(view: ViewDep) -> SessionRead:
    """What the account's kernel is doing: running, paused at a market time, finished."""
    if view is None:
        return SessionRead(running=False, market="none", market_time=None, trading_date=None)
    return SessionRead(
        running=True,
        market=view.market,
        market_time=view.at,
        trading_date=date.fromisoformat(view.account.trading_date),
    )


@router.post(
    "/session",
    response_model=SessionStarted,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody}},
)
async def start_session(
    body: SessionStart, request: Request, settings: SettingsDep, actor: TradeActor
) -> SessionStarted:
    """Start a simulated session on the workers (distributed harness), at any hour."""
    if request.app.state.relay_url is None:
        raise Conflict(
            "sessions are started on the distributed workers (REDIS_URL); the embedded bot "
            "plays its own: `upstox-bot run --date ... --speed ...`"
        )
    from upstox_bot.runtime.distributed.sessions import start_sim_session
    from upstox_bot.worker.app import enqueue
    from upstox_bot.worker.state import redis_client

    def start() -> SessionStarted:
        specs = start_sim_session(
            settings,
            redis_client(request.app.state.relay_url),
            enqueue,
            trading_date=body.date,
            speed=body.speed if body.speed is not None else settings.SIM_SPEED,
            seed=body.seed,
            minutes=body.minutes,
            shards=body.shards,
            sessions=request.app.state.sessions,
        )
        return SessionStarted(
            trading_date=specs[0].trading_date,
            shards=[s.shard for s in specs],
            seed=specs[0].seed,
            speed=specs[0].speed,
        )

    return await run_in_threadpool(start)


@router.post(
    "/session/pause",
    response_model=CommandRead,
    responses={409: {"model": ErrorBody}},
)
async def pause_session(
    body: SessionPause, view: ViewDep, control: ControlDep, actor: TradeActor
) -> CommandRead:
    """Pause the simulated market when it reaches a market time (controls then act at a
    known moment; the page and the API keep answering)."""
    if view is None:
        raise Conflict("no session is running")
    day = view.at.astimezone(IST).date()
    at_ms = int(datetime.combine(day, body.at, tzinfo=IST).timestamp() * 1000)
    result = await send(
        control,
        Command(kind=CommandKind.SESSION, by=actor, args={"action": "pause_at", "at_ms": at_ms}),
        "pausing the session",
    )
    return CommandRead(status="pausing", detail=result.detail)


class SessionResume(BaseModel):
    pause_at: ClockTime | None = Field(
        None, description="Pause again at this market time (IST, HH:MM); none: run on."
    )


@router.post("/session/resume", response_model=CommandRead, responses={409: {"model": ErrorBody}})
async def resume_session(
    view: ViewDep, control: ControlDep, actor: TradeActor, body: SessionResume | None = None
) -> CommandRead:
    """Resume a paused simulated market (and pause it again at `pause_at`, if given)."""
    args: dict[str, object] = {"action": "resume"}
    if body is not None and body.pause_at is not None:
        if view is None:
            raise Conflict("no session is running")
        day = view.at.astimezone(IST).date()
        args["pause_at"] = int(datetime.combine(day, body.pause_at, tzinfo=IST).timestamp() * 1000)
    result = await send(
        control, Command(kind=CommandKind.SESSION, by=actor, args=args), "resuming the session"
    )
    return CommandRead(status="resumed", detail=result.detail)


@router.post("/session/stop", response_model=CommandRead, responses={409: {"model": ErrorBody}})
async def stop_session(control: ControlDep, actor: TradeActor) -> CommandRead:
    """End the running session now."""
    result = await send(
        control,
        Command(kind=CommandKind.SESSION, by=actor, args={"action": "stop"}),
        "stopping the session",
    )
    return CommandRead(status="stopping", detail=result.detail)
