"""Closed trades, and a manual entry vetted by the same risk rules as a strategy's."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, status
from sqlalchemy import ColumnElement

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import AccountDep, ControlDep, SessionDep
from upstox_bot.api.queries import (
    EndDate,
    Filter,
    Limit,
    Offset,
    PathId,
    StartDate,
    page,
    symbols_for,
)
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody, Page
from upstox_bot.api.schemas.control import ManualTradeCreate, ManualTradeRead
from upstox_bot.api.schemas.trading import TradeRead
from upstox_bot.db.models import TradeRow
from upstox_bot.db.repositories.trades import TradeRepository, trade_from_row
from upstox_bot.domain import Direction, paise_to_rupees
from upstox_bot.runtime.control import Command, CommandKind

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)


TRADE_SORT = {
    "exit_at": TradeRow.exit_at,
    "entry_at": TradeRow.entry_at,
    "net_pnl": TradeRow.net_pnl_paise,
    "instrument_key": TradeRow.instrument_key,
}
TradeSort = Literal[
    "exit_at", "-exit_at", "entry_at", "-entry_at", "net_pnl", "-net_pnl", "instrument_key"
]


@router.get("/trades", response_model=Page[TradeRead])
def list_trades(
    session: SessionDep,
    account: AccountDep,
    instrument_key: Filter = None,
    strategy: Filter = None,
    start_date: StartDate = None,
    end_date: EndDate = None,
    sort: TradeSort = "-exit_at",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[TradeRead]:
    """Closed trades (newest exit first by default) with gross P&L, charges and net P&L."""
    where: list[ColumnElement[bool]] = [TradeRow.account == account]
    if instrument_key is not None:
        where.append(TradeRow.instrument_key == instrument_key)
    if strategy is not None:
        where.append(TradeRow.strategy == strategy)
    if start_date is not None:
        where.append(TradeRow.trading_date >= start_date)
    if end_date is not None:
        where.append(TradeRow.trading_date <= end_date)
    rows, total = page(
        session, TradeRow, where=where, sort=sort, columns=TRADE_SORT, limit=limit, offset=offset
    )
    trades = [trade_from_row(row) for row in rows]
    names = symbols_for(session, (t.instrument_key for t in trades))
    return Page(
        items=[TradeRead.of(t, names[t.instrument_key]) for t in trades],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/trades/{trade_id}", response_model=TradeRead, responses={404: {"model": ErrorBody}})
def read_trade(trade_id: PathId, session: SessionDep, account: AccountDep) -> TradeRead:
    """One closed trade."""
    trade = TradeRepository(session, account).get(trade_id)
    return TradeRead.of(trade, symbols_for(session, [trade.instrument_key])[trade.instrument_key])


@router.post(
    "/trades",
    response_model=ManualTradeRead,
    status_code=status.HTTP_201_CREATED,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def submit_trade(
    body: ManualTradeCreate, control: ControlDep, actor: TradeActor
) -> ManualTradeRead:
    """Enter a position by hand: sized and vetted by the same risk rules as a strategy's entry,
    sent at market and managed by the same exits. 409 names the rule that refused it."""
    result = await send(
        control,
        Command(
            kind=CommandKind.MANUAL_ENTRY,
            by=actor,
            reason=body.reason,
            args={"instrument_key": body.instrument_key, "direction": body.direction.value},
        ),
        "a manual trade",
    )
    data = result.data
    return ManualTradeRead(
        accepted=True,
        client_order_id=str(data["client_order_id"]),
        instrument_key=str(data["instrument_key"]),
        direction=Direction(str(data["direction"])),
        quantity=int(data["quantity"]),
        price=paise_to_rupees(int(data["price_paise"])),
        stop=paise_to_rupees(int(data["stop_paise"])),
        target=paise_to_rupees(int(data["target_paise"])),
    )
