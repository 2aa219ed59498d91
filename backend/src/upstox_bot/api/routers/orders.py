"""Orders: list and read them, cancel or modify one through the bot's broker."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy import ColumnElement

from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import AccountDep, ControlDep, SessionDep, ViewDep
from upstox_bot.api.queries import (
    TOTAL_DOC,
    TOTAL_HEADER,
    Filter,
    Limit,
    Offset,
    PathId,
    Since,
    Until,
    page,
    symbols_for,
)
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import CommandRead, OrderModify
from upstox_bot.api.schemas.trading import OrderRead
from upstox_bot.db.models import OrderRow
from upstox_bot.db.repositories.orders import OrderRepository, order_from_row
from upstox_bot.domain import OrderStatus, rupees_to_paise
from upstox_bot.errors import Conflict, NotFound
from upstox_bot.runtime.control import Command, CommandInvalid, CommandKind, CommandStatus

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)


ORDER_SORT = {
    "created_at": OrderRow.created_at,
    "updated_at": OrderRow.updated_at,
    "instrument_key": OrderRow.instrument_key,
    "status": OrderRow.status,
}
OrderSort = Literal[
    "created_at", "-created_at", "updated_at", "-updated_at", "instrument_key", "status"
]


@router.get("/orders", response_model=list[OrderRead], responses={200: TOTAL_DOC})
def list_orders(
    response: Response,
    session: SessionDep,
    account: AccountDep,
    instrument_key: Filter = None,
    status: OrderStatus | None = None,
    since: Since = None,
    until: Until = None,
    sort: OrderSort = "-created_at",
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[OrderRead]:
    """Orders (newest first by default); X-Total-Count holds how many match."""
    where: list[ColumnElement[bool]] = [OrderRow.account == account]
    if instrument_key is not None:
        where.append(OrderRow.instrument_key == instrument_key)
    if status is not None:
        where.append(OrderRow.status == status.value)
    if since is not None:
        where.append(OrderRow.created_at >= since)
    if until is not None:
        where.append(OrderRow.created_at < until)
    rows, total = page(
        session, OrderRow, where=where, sort=sort, columns=ORDER_SORT, limit=limit, offset=offset
    )
    response.headers[TOTAL_HEADER] = str(total)
    orders = [order_from_row(row) for row in rows]
    names = symbols_for(session, (o.instrument_key for o in orders))
    return [OrderRead.of(o, names[o.instrument_key]) for o in orders]


@router.get(
    "/orders/{client_order_id}", response_model=OrderRead, responses={404: {"model": ErrorBody}}
)
def read_order(client_order_id: PathId, session: SessionDep, account: AccountDep) -> OrderRead:
    """One order by its client id (the Upstox tag)."""
    order = OrderRepository(session, account).get(client_order_id)
    key = order.instrument_key
    return OrderRead.of(order, symbols_for(session, [key])[key])


@router.post(
    "/orders/{client_order_id}/cancel",
    response_model=CommandRead,
    responses={
        202: {"model": CommandRead, "description": "Sent to Upstox; confirmed later."},
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "Upstox could not be asked."},
    },
)
async def cancel_order(
    client_order_id: PathId,
    control: ControlDep,
    view: ViewDep,
    session: SessionDep,
    account: AccountDep,
    actor: TradeActor,
    response: Response,
) -> CommandRead:
    """Cancel a working entry order through the bot's broker. A finished order or an exit
    answers 409.

    Paper: cancelled at once (200, ``cancelled``). Upstox: the cancel is sent (202,
    ``cancel_requested``) and the order changes only when Upstox confirms it; a part filled
    before stays the position, and an order that filled first stays filled."""
    order = await run_in_threadpool(OrderRepository(session, account).get_or_none, client_order_id)
    if order is None and (view is None or client_order_id not in view.orders_in_flight):
        raise NotFound(f"order {client_order_id!r} not found")
    if order is not None and order.status.is_terminal:
        raise Conflict(f"order {client_order_id!r} is already {order.status.value}")
    result = await send(
        control,
        Command(kind=CommandKind.CANCEL_ORDER, by=actor, args={"client_order_id": client_order_id}),
        "cancelling an order",
    )
    if result.status is CommandStatus.REQUESTED:
        response.status_code = status.HTTP_202_ACCEPTED
        return CommandRead(status="cancel_requested", detail=result.detail)
    return CommandRead(status="cancelled", detail=result.detail)


@router.put(
    "/orders/{client_order_id}",
    response_model=CommandRead,
    responses={
        202: {"model": CommandRead, "description": "Sent to Upstox; confirmed later."},
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},
    },
)
async def modify_order(
    client_order_id: str,
    body: OrderModify,
    control: ControlDep,
    actor: TradeActor,
    response: Response,
) -> CommandRead:
    """Change a working order's price, quantity or trigger price through the bot's broker,
    audited with who and why.

    Paper: changed at once (200, ``modified``). Upstox: the modify is sent (202,
    ``modify_requested``) and the order changes when Upstox confirms it. A price off the tick
    answers 422; an order not working or not acknowledged yet, an exit's quantity, or an
    entry's quantity above the one the risk checks approved answer 409."""
    args = {
        "client_order_id": client_order_id,
        "price_paise": rupees_to_paise(body.price) if body.price is not None else None,
        "quantity": body.quantity,
        "trigger_price_paise": (
            rupees_to_paise(body.trigger_price) if body.trigger_price is not None else None
        ),
    }
    command = Command(kind=CommandKind.MODIFY_ORDER, by=actor, reason=body.reason, args=args)
    try:
        result = await send(control, command, "modifying an order")
    except CommandInvalid as exc:
        field = "price" if body.price is not None else "trigger_price"
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": str(exc), "input": None}]
        ) from None
    if result.status is CommandStatus.DONE:
        return CommandRead(status="modified", detail=result.detail)
    response.status_code = status.HTTP_202_ACCEPTED
    return CommandRead(status="modify_requested", detail=result.detail)
