"""What happened on a day: the equity curve minute by minute and the performance per strategy.

Both are computed from the database (trades, open positions, candles, the daily account
snapshot), so they read the same in the embedded and the distributed harness; when the engine
runs in this process its figures give the curve's last point, as GET /account does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from upstox_bot.api.deps import AccountDep, SessionDep, SettingsDep, ViewDep
from upstox_bot.api.queries import EPOCH, EndDate, IsoDate, StartDate
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.reports import (
    EquityCurveRead,
    EquityPointRead,
    StrategyPerformanceList,
    StrategyPerformanceRead,
)
from upstox_bot.clock import NseCalendar
from upstox_bot.config import Settings
from upstox_bot.db.models import TradeRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.candles import CandleRepository
from upstox_bot.db.repositories.positions import PositionRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.domain import IST, AccountSnapshot, Direction, Position, Trade, paise_to_rupees

if TYPE_CHECKING:
    from upstox_bot.runtime.control import KernelView

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _Holding:
    """A quantity held from `entry_at` until `exit_at` (None: still open)."""

    instrument_key: str
    sign: int  # +1 long, -1 short
    quantity: int
    entry_price_paise: int
    entry_at: datetime
    exit_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Live:
    """The running engine's figures, read on the loop thread."""

    snapshot: AccountSnapshot
    as_of: datetime
    positions: list[Position]


def _calendar(settings: Settings) -> NseCalendar:
    if settings.HOLIDAYS_FILE:
        return NseCalendar.from_csv(settings.HOLIDAYS_FILE)
    return NseCalendar.default()


def _session_bounds(calendar: NseCalendar, day: date) -> tuple[datetime, datetime]:
    if calendar.is_trading_day(day):
        return calendar.session_open(day), calendar.session_close(day)
    return (
        datetime.combine(day, calendar.session_open_time, tzinfo=IST),
        datetime.combine(day, calendar.session_close_time, tzinfo=IST),
    )


def _holdings(trades: Sequence[Trade], positions: Sequence[Position]) -> list[_Holding]:
    def sign(direction: Direction) -> int:
        return 1 if direction is Direction.LONG else -1

    held = [
        _Holding(
            t.instrument_key,
            sign(t.direction),
            t.quantity,
            t.entry_price_paise,
            t.entry_at,
            t.exit_at,
        )
        for t in trades
    ]
    held += [
        _Holding(
            p.instrument_key, sign(p.direction), p.quantity, p.entry_price_paise, p.entry_at, None
        )
        for p in positions
    ]
    return held


def equity_points(
    *,
    capital_paise: int,
    opens_at: datetime,
    as_of: datetime,
    trades: Sequence[Trade],
    positions: Sequence[Position],
    closes: dict[str, list[tuple[datetime, int]]],
    final_day_pnl_paise: int,
) -> list[EquityPointRead]:
    """The day's equity at each minute from `opens_at` to `as_of`, and at `as_of` itself.

    Realised P&L counts a trade from its exit on; unrealised P&L marks each quantity held at
    the close of its instrument's last finished 1-minute candle (no candle yet: at its entry
    price). The last point is `capital + final_day_pnl`, the account's own figure.

    Args:
        closes: per instrument, (candle end, close in paise) in time order.
    """
    holdings = _holdings(trades, positions)
    exits = sorted((t.exit_at, t.net_pnl_paise) for t in trades)
    points: list[EquityPointRead] = []
    at = opens_at
    next_exit = 0
    realised = 0
    cursor = dict.fromkeys(closes, 0)
    last_close: dict[str, int] = {}
    while at < as_of:
        while next_exit < len(exits) and exits[next_exit][0] <= at:
            realised += exits[next_exit][1]
            next_exit += 1
        for key, series in closes.items():
            i = cursor[key]
            while i < len(series) and series[i][0] <= at:
                last_close[key] = series[i][1]
                i += 1
            cursor[key] = i
        unrealised = 0
        for h in holdings:
            if h.entry_at <= at and (h.exit_at is None or at < h.exit_at):
                price = last_close.get(h.instrument_key, h.entry_price_paise)
                unrealised += h.sign * h.quantity * (price - h.entry_price_paise)
        points.append(
            EquityPointRead(
                at=at,
                equity=paise_to_rupees(capital_paise + realised + unrealised),
                realised_pnl=paise_to_rupees(realised),
                unrealised_pnl=paise_to_rupees(unrealised),
            )
        )
        at += MINUTE
    realised_final = sum(t.net_pnl_paise for t in trades)
    points.append(
        EquityPointRead(
            at=as_of,
            equity=paise_to_rupees(capital_paise + final_day_pnl_paise),
            realised_pnl=paise_to_rupees(realised_final),
            unrealised_pnl=paise_to_rupees(final_day_pnl_paise - realised_final),
        )
    )
    return points


def _closes(
    session: Session, keys: set[str], since: datetime, until: datetime
) -> dict[str, list[tuple[datetime, int]]]:
    candles = CandleRepository(session)
    out: dict[str, list[tuple[datetime, int]]] = {}
    for key in sorted(keys):
        found = candles.find(key, 60, since=since, until=until)
        out[key] = [
            (datetime.fromtimestamp((c.start_ms + 60_000) / 1000, tz=UTC), c.close_paise)
            for c in found
        ]
    return out


def _curve(
    session: Session,
    account: str,
    settings: Settings,
    day: date | None,
    live: _Live | None,
) -> EquityCurveRead:
    accounts = AccountRepository(session)
    record = accounts.get(account)
    stored = accounts.latest_snapshot(account, on_or_before=day)
    if day is None:
        if live is not None:
            day = date.fromisoformat(live.snapshot.trading_date)
        elif stored is not None:
            day = date.fromisoformat(stored.trading_date)
        else:
            day = datetime.now(IST).date()
    if stored is not None and stored.trading_date != day.isoformat():
        stored = None
    from_engine = live is not None and live.snapshot.trading_date == day.isoformat()
    snapshot = live.snapshot if live is not None and from_engine else stored
    if snapshot is not None:
        capital = snapshot.capital_paise
    else:
        # The first representable date has no day before it (and no trades before it).
        earlier = (
            0
            if day == date.min
            else TradeRepository(session, account).net_pnl_paise(EPOCH, day - timedelta(days=1))
        )
        capital = record.starting_capital_paise + earlier
    opens_at, closes_at = _session_bounds(_calendar(settings), day)
    trades = TradeRepository(session, account).find(start_date=day, end_date=day, limit=100_000)
    if live is not None and from_engine:
        positions = live.positions
    else:
        positions = [
            p
            for p in PositionRepository(session, account).open_positions()
            if opens_at <= p.entry_at < closes_at
        ]
    keys = {t.instrument_key for t in trades} | {p.instrument_key for p in positions}
    closes = _closes(session, keys, opens_at, closes_at)
    if live is not None and from_engine:
        as_of = min(max(live.as_of, opens_at), closes_at)
    else:
        marks = [t.exit_at for t in trades] + [s[-1][0] for s in closes.values() if s]
        as_of = min(max(marks, default=opens_at), closes_at)
    day_pnl = (
        snapshot.day_pnl_paise if snapshot is not None else sum(t.net_pnl_paise for t in trades)
    )
    return EquityCurveRead(
        trading_date=day,
        capital=paise_to_rupees(capital),
        as_of=as_of,
        day_pnl=paise_to_rupees(day_pnl),
        source="engine" if from_engine else "database",
        points=equity_points(
            capital_paise=capital,
            opens_at=opens_at,
            as_of=as_of,
            trades=trades,
            positions=positions,
            closes=closes,
            final_day_pnl_paise=day_pnl,
        ),
    )


def _live(view: KernelView | None) -> _Live | None:
    if view is None:
        return None
    return _Live(view.account, view.at, list(view.positions))


@router.get(
    "/account/equity",
    response_model=EquityCurveRead,
    responses={404: {"model": ErrorBody}},
)
async def account_equity(
    view: ViewDep,
    session: SessionDep,
    account: AccountDep,
    settings: SettingsDep,
    day: Annotated[
        IsoDate | None,
        Query(alias="date", description="IST trading date; default the account's current one."),
    ] = None,
) -> EquityCurveRead:
    """The equity of one trading date, minute by minute (capital at the open plus realised
    and unrealised P&L), ending at the account's figure now (or at the day's close)."""
    live = _live(view)  # the running kernel's last committed figures
    return await run_in_threadpool(_curve, session, account, settings, day, live)


@router.get("/account/performance", response_model=StrategyPerformanceList)
def strategy_performance(
    session: SessionDep,
    account: AccountDep,
    start_date: StartDate = None,
    end_date: EndDate = None,
) -> StrategyPerformanceList:
    """Closed trades per strategy in a date range (default all): count, win rate, P&L."""
    where: list[ColumnElement[bool]] = [TradeRow.account == account]
    if start_date is not None:
        where.append(TradeRow.trading_date >= start_date)
    if end_date is not None:
        where.append(TradeRow.trading_date <= end_date)
    rows = session.execute(
        select(
            TradeRow.strategy,
            func.count(),
            func.coalesce(func.sum(case((TradeRow.net_pnl_paise > 0, 1), else_=0)), 0),
            func.coalesce(func.sum(case((TradeRow.net_pnl_paise < 0, 1), else_=0)), 0),
            func.coalesce(func.sum(TradeRow.gross_pnl_paise), 0),
            func.coalesce(func.sum(TradeRow.charges_paise), 0),
            func.coalesce(func.sum(TradeRow.net_pnl_paise), 0),
            func.max(TradeRow.net_pnl_paise),
            func.min(TradeRow.net_pnl_paise),
        )
        .where(*where)
        .group_by(TradeRow.strategy)
    ).all()
    strategies = [
        StrategyPerformanceRead(
            strategy=name or "(none)",
            trades=int(n),
            wins=int(wins),
            losses=int(losses),
            win_rate=int(wins) / int(n) if n else None,
            gross_pnl=paise_to_rupees(int(gross)),
            charges=paise_to_rupees(int(charges)),
            net_pnl=paise_to_rupees(int(net)),
            best_trade=None if best is None else paise_to_rupees(int(best)),
            worst_trade=None if worst is None else paise_to_rupees(int(worst)),
        )
        for name, n, wins, losses, gross, charges, net, best, worst in rows
    ]
    strategies.sort(key=lambda s: s.net_pnl, reverse=True)
    return StrategyPerformanceList(start_date=start_date, end_date=end_date, strategies=strategies)
