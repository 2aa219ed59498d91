"""Positions, trades, signals, orders and the account: what the bot holds and did."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from upstox_bot import __version__
from upstox_bot.api.deps import AccountDep, BotDep, SessionDep, SettingsDep
from upstox_bot.api.schemas.common import ErrorBody, Page
from upstox_bot.api.schemas.trading import (
    AccountRead,
    OrderRead,
    PositionRead,
    SignalRead,
    TradeRead,
    snapshot_fields,
)
from upstox_bot.db.models import SymbolRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.orders import OrderRepository
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.db.repositories.signals import SignalRecord, SignalRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.domain import (
    OrderStatus,
    SignalStatus,
    SignalType,
    paise_to_rupees,
)

router = APIRouter(tags=["trading"])

Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, description="Skip this many items.")]


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


@router.get("/positions", response_model=list[PositionRead])
async def list_positions(
    bot: BotDep, session: SessionDep, account: AccountDep
) -> list[PositionRead]:
    """Open positions with their stop state and P&L (live prices when the bot runs here)."""
    if bot is not None:
        return [
            PositionRead.of(p, bot.instruments[p.instrument_key].trading_symbol)
            for p in bot.engine.positions.values()
        ]

    def read() -> list[PositionRead]:
        positions = PositionRepository(session, account).open_positions()
        names = symbols_for(session, (p.instrument_key for p in positions))
        return [PositionRead.of(p, names[p.instrument_key]) for p in positions]

    return await run_in_threadpool(read)


@router.get("/trades", response_model=Page[TradeRead])
def list_trades(
    session: SessionDep,
    account: AccountDep,
    instrument_key: str | None = None,
    strategy: str | None = None,
    start_date: Annotated[date | None, Query(alias="from", description="IST trading date")] = None,
    end_date: Annotated[date | None, Query(alias="to", description="IST trading date")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[TradeRead]:
    """Closed trades, newest exit first, with gross P&L, charges and net P&L."""
    repo = TradeRepository(session, account)
    trades = repo.find(
        instrument_key=instrument_key,
        strategy=strategy,
        start_date=start_date,
        end_date=end_date,
        limit=limit,
        offset=offset,
    )
    total = repo.count(
        instrument_key=instrument_key, strategy=strategy, start_date=start_date, end_date=end_date
    )
    names = symbols_for(session, (t.instrument_key for t in trades))
    return Page(
        items=[TradeRead.of(t, names[t.instrument_key]) for t in trades],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/trades/{trade_id}", response_model=TradeRead, responses={404: {"model": ErrorBody}})
def read_trade(trade_id: str, session: SessionDep, account: AccountDep) -> TradeRead:
    """One closed trade."""
    trade = TradeRepository(session, account).get(trade_id)
    return TradeRead.of(trade, symbols_for(session, [trade.instrument_key])[trade.instrument_key])


def _signal_read(record: SignalRecord, symbol: str) -> SignalRead:
    s = record.signal
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
        candle_start_at=datetime.fromtimestamp(s.candle_start_ms / 1000, tz=s.created_at.tzinfo),
        created_at=s.created_at,
        indicators={k: (None if v != v else v) for k, v in s.indicators.items()},
    )


@router.get("/signals", response_model=list[SignalRead])
def list_signals(
    session: SessionDep,
    account: AccountDep,
    instrument_key: str | None = None,
    strategy: str | None = None,
    status: SignalStatus | None = None,
    type: SignalType | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[SignalRead]:
    """Recent signals, newest first, with their status and indicator snapshot."""
    records = SignalRepository(session, account).recent(
        instrument_key=instrument_key,
        strategy=strategy,
        status=status,
        signal_type=type,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    names = symbols_for(session, (r.signal.instrument_key for r in records))
    return [_signal_read(r, names[r.signal.instrument_key]) for r in records]


@router.get(
    "/signals/{signal_id}", response_model=SignalRead, responses={404: {"model": ErrorBody}}
)
def read_signal(signal_id: str, session: SessionDep, account: AccountDep) -> SignalRead:
    """One signal."""
    record = SignalRepository(session, account).get(signal_id)
    key = record.signal.instrument_key
    return _signal_read(record, symbols_for(session, [key])[key])


@router.get("/orders", response_model=list[OrderRead])
def list_orders(
    session: SessionDep,
    account: AccountDep,
    instrument_key: str | None = None,
    status: OrderStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[OrderRead]:
    """Orders, newest first."""
    orders = OrderRepository(session, account).find(
        instrument_key=instrument_key,
        status=status,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    names = symbols_for(session, (o.instrument_key for o in orders))
    return [OrderRead.of(o, names[o.instrument_key]) for o in orders]


@router.get(
    "/orders/{client_order_id}", response_model=OrderRead, responses={404: {"model": ErrorBody}}
)
def read_order(client_order_id: str, session: SessionDep, account: AccountDep) -> OrderRead:
    """One order by its client id (the Upstox tag)."""
    order = OrderRepository(session, account).get(client_order_id)
    key = order.instrument_key
    return OrderRead.of(order, symbols_for(session, [key])[key])


@router.get("/account", response_model=AccountRead, responses={404: {"model": ErrorBody}})
async def read_account(
    bot: BotDep, session: SessionDep, account: AccountDep, settings: SettingsDep
) -> AccountRead:
    """The account now: capital, the day's P&L against the loss limit, switches."""
    live = bot.engine.snapshot() if bot is not None else None

    def read() -> AccountRead:
        accounts = AccountRepository(session)
        record = accounts.get(account)
        snap = live or accounts.latest_snapshot(account)
        fields = snapshot_fields(snap)
        limit_paise = snap.loss_limit_paise if snap else 0
        headroom = max(0, limit_paise + (snap.day_pnl_paise if snap else 0))
        total = TradeRepository(session, account).net_pnl_paise(date(1970, 1, 1))
        return AccountRead(
            account=record.name,
            mode=record.mode.value,
            starting_capital=paise_to_rupees(record.starting_capital_paise),
            capital=paise_to_rupees(snap.capital_paise if snap else record.starting_capital_paise),
            daily_loss_limit=paise_to_rupees(limit_paise),
            loss_limit_headroom=paise_to_rupees(headroom),
            kill_switch=bot.engine.risk.kill_switch.active if bot else record.kill_switch,
            kill_switch_reason=record.kill_switch_reason,
            paper_trading=settings.PAPER_TRADING,
            total_realised_pnl=paise_to_rupees(total),
            **fields,
        )

    return await run_in_threadpool(read)


__all__ = ["__version__", "router"]
