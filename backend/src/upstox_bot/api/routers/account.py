"""The account: its state now, its figures per day, its P&L and its statistics."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, case, func, select

from upstox_bot.api import account_stats
from upstox_bot.api.deps import AccountDep, SessionDep, SettingsDep, ViewDep
from upstox_bot.api.queries import EPOCH, EndDate, StartDate
from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.common import ERRORS, ErrorBody
from upstox_bot.api.schemas.control import (
    AccountDayRead,
    AccountStatsRead,
    DayPnlRead,
    PeriodStatsRead,
    PnlDayRead,
    PnlRead,
)
from upstox_bot.api.schemas.trading import AccountRead, snapshot_fields
from upstox_bot.db.models import TradeRow
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.repositories.trades import TradeRepository
from upstox_bot.domain import paise_to_rupees

router = APIRouter(tags=["trading"], responses=ERRORS, route_class=GuardedRoute)


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
