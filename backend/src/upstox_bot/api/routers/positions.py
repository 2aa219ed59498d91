"""Open positions: read them (live figures while the bot runs) and close one at market."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import AccountDep, ControlDep, SessionDep, ViewDep
from upstox_bot.api.queries import PathId, symbols_for
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import CommandRead
from upstox_bot.api.schemas.trading import PositionRead
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.errors import NotFound
from upstox_bot.runtime.control import Command, CommandKind, ControlPort, KernelView

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)


def live_positions(view: KernelView) -> list[PositionRead]:
    """The running kernel's positions, as it last committed them."""
    return [
        PositionRead.of(p, view.symbols.get(p.instrument_key, p.instrument_key))
        for p in view.positions
    ]


def stored_positions(session: Session, account: str) -> list[PositionRead]:
    """The open positions as last written to the database."""
    positions = PositionRepository(session, account).open_positions()
    names = symbols_for(session, (p.instrument_key for p in positions))
    return [PositionRead.of(p, names[p.instrument_key]) for p in positions]


@router.get("/positions", response_model=list[PositionRead])
async def list_positions(
    view: ViewDep, session: SessionDep, account: AccountDep
) -> list[PositionRead]:
    """Open positions with their stop state and P&L (live prices while the bot runs)."""
    if view is not None:
        return live_positions(view)
    return await run_in_threadpool(stored_positions, session, account)


@router.get(
    "/positions/{instrument_key}",
    response_model=PositionRead,
    responses={404: {"model": ErrorBody}},
)
async def read_position(
    instrument_key: PathId, view: ViewDep, session: SessionDep, account: AccountDep
) -> PositionRead:
    """The open position in one instrument (key, e.g. NSE_EQ|INE002A01018, or trading symbol)."""
    if view is not None:
        for p in live_positions(view):
            if instrument_key in (p.instrument_key, p.trading_symbol):
                return p
        raise NotFound(f"no open position in {instrument_key!r}")

    def read() -> PositionRead:
        for p in stored_positions(session, account):
            if instrument_key in (p.instrument_key, p.trading_symbol):
                return p
        raise NotFound(f"no open position in {instrument_key!r}")

    return await run_in_threadpool(read)


@router.post(
    "/positions/{instrument_key}/close",
    response_model=CommandRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def close_position(
    instrument_key: PathId, control: ControlDep, actor: TradeActor
) -> CommandRead:
    """Close an open position at market (queued like every exit: never refused, only paced)."""
    return await _close(control, instrument_key, actor)


@router.delete(
    "/positions/{instrument_key}",
    response_model=CommandRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def delete_position(
    instrument_key: PathId, control: ControlDep, actor: TradeActor
) -> CommandRead:
    """Close an open position at market: the same as POST /positions/{key}/close (a key, e.g.
    NSE_EQ|INE002A01018, or a trading symbol)."""
    return await _close(control, instrument_key, actor)


async def _close(control: ControlPort | None, instrument_key: str, actor: str) -> CommandRead:
    result = await send(
        control,
        Command(kind=CommandKind.CLOSE_POSITION, by=actor, args={"instrument_key": instrument_key}),
        "closing a position",
    )
    return CommandRead(status="exit_queued", detail=result.detail)
