"""Positions, trades, signals, orders and the account: what the bot holds and did."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from upstox_bot.api import account_stats
from upstox_bot.api.auth import TradeActor
from upstox_bot.api.commands import send
from upstox_bot.api.deps import AccountDep, ControlDep, SessionDep, SettingsDep, ViewDep
from upstox_bot.api.queries import Filter, IsoDate, PathId, Since, Until, page
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody, Page
from upstox_bot.api.schemas.control import (
    AccountDayRead,
    AccountStatsRead,
    CommandRead,
    DayPnlRead,
    ManualTradeCreate,
    ManualTradeRead,
    OrderModify,
    PeriodStatsRead,
    PnlDayRead,
    PnlRead,
)
from upstox_bot.api.schemas.trading import (
    AccountRead,
    OrderRead,
    PositionRead,
    SignalRead,
    TradeRead,
    snapshot_fields,
)
from upstox_bot.db.models import OrderRow, RiskDecisionRow, SignalRow, SymbolRow, TradeRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.orders import OrderRepository, order_from_row
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.db.repositories.signals import SignalRecord, SignalRepository, signal_from_row
from upstox_bot.db.repositories.trades import TradeRepository, trade_from_row
from upstox_bot.domain import (
    Direction,
    OrderStatus,
    RiskRule,
    SignalStatus,
    SignalType,
    ms_to_datetime,
    paise_to_rupees,
    rupees_to_paise,
)
from upstox_bot.errors import Conflict, NotFound
from upstox_bot.runtime.control import (
    Command,
    CommandInvalid,
    CommandKind,
    CommandStatus,
    ControlPort,
    KernelView,
)

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)

Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Skip this many items.")]
TOTAL_HEADER = "X-Total-Count"
TOTAL_DOC = {"headers": {TOTAL_HEADER: {"description": "Items matching the filters."}}}
EPOCH = date(1970, 1, 1)


def symbols_for(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Trading symbols of instrument keys (a key without a symbol row maps to itself)."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = session.execute(
        select(SymbolRow.instrument_key, SymbolRow.trading_symbol).where(
            SymbolRow.instrument_key.in_(wanted)
        )
    )
    found: dict[str, str] = dict(rows.all())
    return {key: found.get(key, key) for key in wanted}


# --- positions ---------------------------------------------------------------------------------


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


# --- trades ------------------------------------------------------------------------------------

TRADE_SORT = {
    "exit_at": TradeRow.exit_at,
    "entry_at": TradeRow.entry_at,
    "net_pnl": TradeRow.net_pnl_paise,
    "instrument_key": TradeRow.instrument_key,
}
TradeSort = Literal[
    "exit_at", "-exit_at", "entry_at", "-entry_at", "net_pnl", "-net_pnl", "instrument_key"
]
StartDate = Annotated[
    IsoDate | None, Query(alias="from", description="IST trading date, inclusive (YYYY-MM-DD)")
]
EndDate = Annotated[
    IsoDate | None, Query(alias="to", description="IST trading date, inclusive (YYYY-MM-DD)")
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


# --- signals -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """What came of a signal: the risk refusal, or the order it caused."""

    refusal_rule: RiskRule | None = None
    refusal_reason: str | None = None
    order_id: str | None = None
    order_status: OrderStatus | None = None


def signal_outcomes(
    session: Session, account: str, signal_ids: list[str]
) -> dict[str, SignalOutcome]:
    """The refusal (from the stored risk decision) or the entry order of each signal."""
    if not signal_ids:
        return {}
    refusals = {
        signal_id: (rule, reason)
        for signal_id, rule, reason in session.execute(
            select(RiskDecisionRow.signal_id, RiskDecisionRow.rule, RiskDecisionRow.reason)
            .where(
                RiskDecisionRow.account == account,
                RiskDecisionRow.signal_id.in_(signal_ids),
                RiskDecisionRow.approved.is_(False),
            )
            .order_by(RiskDecisionRow.id)
        )
    }
    orders = {
        signal_id: (order_id, status)
        for signal_id, order_id, status in session.execute(
            select(OrderRow.signal_id, OrderRow.client_order_id, OrderRow.status)
            .where(OrderRow.account == account, OrderRow.signal_id.in_(signal_ids))
            .order_by(OrderRow.id)
        )
    }
    out: dict[str, SignalOutcome] = {}
    for signal_id in signal_ids:
        refusal = refusals.get(signal_id)
        order = orders.get(signal_id)
        out[signal_id] = SignalOutcome(
            refusal_rule=RiskRule(refusal[0]) if refusal and refusal[0] else None,
            refusal_reason=refusal[1] if refusal else None,
            order_id=order[0] if order else None,
            order_status=OrderStatus(order[1]) if order else None,
        )
    return out


def _outcome_text(record: SignalRecord, outcome: SignalOutcome) -> str:
    status = record.status
    if outcome.order_id is not None and outcome.order_status is not None:
        return f"entry order {outcome.order_status.value}"
    if status is SignalStatus.REJECTED:
        rule = outcome.refusal_rule.value if outcome.refusal_rule else "risk"
        return f"refused by {rule}: {outcome.refusal_reason or 'see the audit log'}"
    if status is SignalStatus.IGNORED:
        if record.signal.type.is_entry:
            return "ignored: within SIGNAL_COOLDOWN_MINUTES of the symbol's last entry signal"
        return "ignored: no position in that direction to exit"
    if status is SignalStatus.ACCEPTED:
        return "accepted" if record.signal.type.is_entry else "exit requested"
    return "pending"


def signal_read(
    record: SignalRecord, symbol: str, outcome: SignalOutcome | None = None
) -> SignalRead:
    """The API view of a stored signal (NaN indicators become null) and what came of it."""
    s = record.signal
    outcome = outcome or SignalOutcome()
    return SignalRead(
        signal_id=s.signal_id,
        instrument_key=s.instrument_key,
        trading_symbol=symbol,
        strategy=s.strategy,
        type=s.type,
        strength=s.strength,
        status=record.status,
        reason=s.reason,
        price=paise_to_rupees(s.price_paise),
        candle_start_at=ms_to_datetime(s.candle_start_ms),
        created_at=s.created_at,
        indicators={k: (None if v != v else v) for k, v in s.indicators.items()},
        outcome=_outcome_text(record, outcome),
        refusal_rule=outcome.refusal_rule,
        refusal_reason=outcome.refusal_reason,
        order_id=outcome.order_id,
        order_status=outcome.order_status,
    )


SIGNAL_SORT = {
    "created_at": SignalRow.created_at,
    "strength": SignalRow.strength,
    "instrument_key": SignalRow.instrument_key,
}
SignalSort = Literal["created_at", "-created_at", "strength", "-strength", "instrument_key"]


@router.get("/signals", response_model=list[SignalRead], responses={200: TOTAL_DOC})
def list_signals(
    response: Response,
    session: SessionDep,
    account: AccountDep,
    instrument_key: Filter = None,
    strategy: Filter = None,
    status: SignalStatus | None = None,
    type: SignalType | None = None,
    since: Since = None,
    until: Until = None,
    sort: SignalSort = "-created_at",
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[SignalRead]:
    """Recent signals (newest first by default) with their status and indicator snapshot.
    The X-Total-Count header holds how many match."""
    where: list[ColumnElement[bool]] = [SignalRow.account == account]
    if instrument_key is not None:
        where.append(SignalRow.instrument_key == instrument_key)
    if strategy is not None:
        where.append(SignalRow.strategy == strategy)
    if status is not None:
        where.append(SignalRow.status == status.value)
    if type is not None:
        where.append(SignalRow.type == type.value)
    if since is not None:
        where.append(SignalRow.created_at >= since)
    if until is not None:
        where.append(SignalRow.created_at < until)
    rows, total = page(
        session, SignalRow, where=where, sort=sort, columns=SIGNAL_SORT, limit=limit, offset=offset
    )
    response.headers[TOTAL_HEADER] = str(total)
    records = [signal_from_row(row) for row in rows]
    names = symbols_for(session, (r.signal.instrument_key for r in records))
    outcomes = signal_outcomes(session, account, [r.signal.signal_id for r in records])
    return [
        signal_read(r, names[r.signal.instrument_key], outcomes[r.signal.signal_id])
        for r in records
    ]


@router.get(
    "/signals/{signal_id}", response_model=SignalRead, responses={404: {"model": ErrorBody}}
)
def read_signal(signal_id: PathId, session: SessionDep, account: AccountDep) -> SignalRead:
    """One signal."""
    record = SignalRepository(session, account).get(signal_id)
    key = record.signal.instrument_key
    outcome = signal_outcomes(session, account, [signal_id])[signal_id]
    return signal_read(record, symbols_for(session, [key])[key], outcome)


# --- orders ------------------------------------------------------------------------------------

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


# --- account -----------------------------------------------------------------------------------


@router.get("/account", response_model=AccountRead, responses={404: {"model": ErrorBody}})
async def read_account(
    view: ViewDep, session: SessionDep, account: AccountDep, settings: SettingsDep
) -> AccountRead:
    """The account now: capital, the day's P&L against the loss limit, switches."""
    live = view.account if view is not None else None
    as_of = view.at if view is not None else None
    kill = view.kill_switch.active if view is not None else None

    def read() -> AccountRead:
        accounts = AccountRepository(session)
        record = accounts.get(account)
        snap = live or accounts.latest_snapshot(account)
        fields = snapshot_fields(snap)
        limit_paise = snap.loss_limit_paise if snap else 0
        headroom = max(0, limit_paise + (snap.day_pnl_paise if snap else 0))
        total = TradeRepository(session, account).net_pnl_paise(EPOCH, date(9999, 12, 31))
        return AccountRead(
            account=record.name,
            as_of=as_of,
            mode=record.mode.value,
            starting_capital=paise_to_rupees(record.starting_capital_paise),
            capital=paise_to_rupees(snap.capital_paise if snap else record.starting_capital_paise),
            daily_loss_limit=paise_to_rupees(limit_paise),
            loss_limit_headroom=paise_to_rupees(headroom),
            kill_switch=record.kill_switch if kill is None else kill,
            kill_switch_reason=record.kill_switch_reason,
            paper_trading=settings.PAPER_TRADING,
            total_realised_pnl=paise_to_rupees(total),
            **fields,
        )

    return await run_in_threadpool(read)


@router.get("/account/days", response_model=list[AccountDayRead])
def account_days(
    session: SessionDep,
    account: AccountDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> list[AccountDayRead]:
    """The account's figures per trading date (oldest first), from the daily snapshots."""
    snaps = AccountRepository(session).snapshots(
        account, start_date or EPOCH, end_date or date(9999, 12, 31)
    )
    return [
        AccountDayRead(
            trading_date=date.fromisoformat(s.trading_date),
            capital=paise_to_rupees(s.capital_paise),
            realised_pnl=paise_to_rupees(s.realised_pnl_paise),
            unrealised_pnl=paise_to_rupees(s.unrealised_pnl_paise),
            day_pnl=paise_to_rupees(s.day_pnl_paise),
            charges=paise_to_rupees(s.charges_paise),
            open_positions=s.open_positions,
            trades=s.trades,
            orders=s.orders,
            daily_loss_limit=paise_to_rupees(s.loss_limit_paise),
            loss_limit_hit=s.loss_limit_hit,
            kill_switch=s.kill_switch,
        )
        for s in snaps
    ]


@router.get("/account/pnl", response_model=PnlRead)
def account_pnl(
    session: SessionDep,
    account: AccountDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> PnlRead:
    """Realised P&L of the closed trades in a date range: totals, win rate and per day."""
    where: list[ColumnElement[bool]] = [TradeRow.account == account]
    if start_date is not None:
        where.append(TradeRow.trading_date >= start_date)
    if end_date is not None:
        where.append(TradeRow.trading_date <= end_date)
    rows = session.execute(
        select(
            TradeRow.trading_date,
            func.count(),
            func.coalesce(func.sum(TradeRow.gross_pnl_paise), 0),
            func.coalesce(func.sum(TradeRow.charges_paise), 0),
            func.coalesce(func.sum(TradeRow.net_pnl_paise), 0),
            func.coalesce(func.sum(case((TradeRow.net_pnl_paise > 0, 1), else_=0)), 0),
            func.max(TradeRow.net_pnl_paise),
            func.min(TradeRow.net_pnl_paise),
        )
        .where(*where)
        .group_by(TradeRow.trading_date)
        .order_by(TradeRow.trading_date)
    ).all()
    by_day = [
        PnlDayRead(
            trading_date=day,
            trades=int(n),
            gross_pnl=paise_to_rupees(int(gross)),
            charges=paise_to_rupees(int(charges)),
            net_pnl=paise_to_rupees(int(net)),
        )
        for day, n, gross, charges, net, _wins, _best, _worst in rows
    ]
    trades = sum(int(r[1]) for r in rows)
    wins = sum(int(r[5]) for r in rows)
    losses = session.scalar(
        select(func.count()).select_from(TradeRow).where(*where, TradeRow.net_pnl_paise < 0)
    )
    best = max((int(r[6]) for r in rows), default=None)
    worst = min((int(r[7]) for r in rows), default=None)
    return PnlRead(
        start_date=start_date,
        end_date=end_date,
        trades=trades,
        wins=wins,
        losses=int(losses or 0),
        win_rate=wins / trades if trades else None,
        gross_pnl=paise_to_rupees(sum(int(r[2]) for r in rows)),
        charges=paise_to_rupees(sum(int(r[3]) for r in rows)),
        net_pnl=paise_to_rupees(sum(int(r[4]) for r in rows)),
        best_trade=None if best is None else paise_to_rupees(best),
        worst_trade=None if worst is None else paise_to_rupees(worst),
        by_day=by_day,
    )


def _stats_fields(stats: account_stats.Stats) -> dict[str, object]:
    def rupees(paise: int | None) -> Decimal | None:
        return None if paise is None else paise_to_rupees(paise)

    def average(total: int, count: int) -> Decimal | None:
        return paise_to_rupees(round(total / count)) if count else None

    def day(figure: account_stats.DayFigure | None) -> DayPnlRead | None:
        if figure is None:
            return None
        return DayPnlRead(
            trading_date=figure.trading_date, net_pnl=paise_to_rupees(figure.net_paise)
        )

    return {
        "start_date": stats.start_date,
        "end_date": stats.end_date,
        "trading_days": stats.trading_days,
        "winning_days": stats.winning_days,
        "losing_days": stats.losing_days,
        "trades": stats.trades,
        "wins": stats.wins,
        "losses": stats.losses,
        "win_rate": stats.win_rate,
        "gross_pnl": paise_to_rupees(stats.gross_paise),
        "charges": paise_to_rupees(stats.charges_paise),
        "net_pnl": paise_to_rupees(stats.net_paise),
        "average_win": average(stats.gross_profit_paise, stats.wins),
        "average_loss": average(stats.gross_loss_paise, stats.losses),
        "profit_factor": stats.profit_factor,
        "best_trade": rupees(stats.best_trade_paise),
        "worst_trade": rupees(stats.worst_trade_paise),
        "best_day": day(stats.best_day),
        "worst_day": day(stats.worst_day),
        "days_net_pnl": paise_to_rupees(stats.day_net_paise),
        "max_drawdown": paise_to_rupees(stats.max_drawdown_paise),
        "max_drawdown_pct": (
            None if stats.max_drawdown_ratio is None else stats.max_drawdown_ratio * 100
        ),
    }


@router.get("/account/stats", response_model=AccountStatsRead)
def account_statistics(
    session: SessionDep,
    account: AccountDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
    period: account_stats.Period = account_stats.Period.DAY,
) -> AccountStatsRead:
    """Performance of the account over a date range: trades, win rate, gross and net P&L,
    charges, best and worst trade and day, drawdown; and the same per day, week, month or year.
    Day figures are the daily snapshots' (GET /account/days), trade figures the closed
    trades' (GET /trades)."""
    start, end = start_date or EPOCH, end_date or date(9999, 12, 31)
    snapshots = AccountRepository(session).snapshots(account, start, end)
    rows = session.execute(
        select(
            TradeRow.trading_date,
            TradeRow.gross_pnl_paise,
            TradeRow.charges_paise,
            TradeRow.net_pnl_paise,
        )
        .where(
            TradeRow.account == account,
            TradeRow.trading_date >= start,
            TradeRow.trading_date <= end,
        )
        .order_by(TradeRow.trading_date, TradeRow.id)
    ).all()
    trades = [
        account_stats.TradeFigures(day, gross, charges, net) for day, gross, charges, net in rows
    ]
    whole = account_stats.compute(snapshots, trades, start_date=start_date, end_date=end_date)
    periods = [
        PeriodStatsRead(label=label, **_stats_fields(stats))
        for label, stats in account_stats.by_period(snapshots, trades, period)
    ]
    return AccountStatsRead(
        period=period.value,
        periods=periods,
        **_stats_fields(whole),
    )
