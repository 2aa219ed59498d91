"""Performance statistics of the account (GET /api/v1/account/stats), from the stored records.

Two sources, each the one the rest of the API shows: the closed trades (GET /trades) for the
trade figures, and the daily snapshots (GET /account/days) for the day figures. A day's P&L is
its snapshot's realised P&L, after charges, so the stats of a period agree with /account/days
line for line; the trade totals agree with /trades (and, once a day is closed, with the days).
The drawdown is the largest fall of the end-of-day capital (capital + realised P&L) from its
highest point before, the starting capital included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from upstox_bot.domain import AccountSnapshot


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


@dataclass(frozen=True, slots=True)
class TradeFigures:
    """One closed trade as the stats need it (paise)."""

    trading_date: date
    gross_paise: int
    charges_paise: int
    net_paise: int


@dataclass(frozen=True, slots=True)
class DayFigure:
    trading_date: date
    net_paise: int


@dataclass(frozen=True, slots=True)
class Stats:
    """The statistics of a span of trading dates (money in paise)."""

    start_date: date | None
    end_date: date | None
    trading_days: int
    winning_days: int
    losing_days: int
    trades: int
    wins: int
    losses: int
    gross_paise: int
    charges_paise: int
    net_paise: int
    gross_profit_paise: int  # sum of winning trades' net P&L
    gross_loss_paise: int  # sum of losing trades' net P&L (negative or 0)
    best_trade_paise: int | None
    worst_trade_paise: int | None
    best_day: DayFigure | None
    worst_day: DayFigure | None
    day_net_paise: int  # sum of the days' realised P&L (the snapshots')
    max_drawdown_paise: int
    max_drawdown_ratio: float | None  # of the peak capital

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades if self.trades else None

    @property
    def profit_factor(self) -> float | None:
        if self.gross_loss_paise == 0:
            return None
        return self.gross_profit_paise / -self.gross_loss_paise


def period_of(day: date, period: Period) -> tuple[str, date, date]:
    """The label, first and last calendar date of the period holding `day`."""
    if period is Period.DAY:
        return day.isoformat(), day, day
    if period is Period.WEEK:
        year, week, weekday = day.isocalendar()
        monday = day - timedelta(days=weekday - 1)
        return f"{year}-W{week:02d}", monday, monday + timedelta(days=6)
    if period is Period.MONTH:
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return f"{day:%Y-%m}", first, following - timedelta(days=1)
    return f"{day.year}", date(day.year, 1, 1), date(day.year, 12, 31)


def _drawdown(snapshots: Sequence[AccountSnapshot]) -> tuple[int, float | None]:
    if not snapshots:
        return 0, None
    peak = snapshots[0].capital_paise
    worst, worst_ratio = 0, 0.0
    for snap in snapshots:
        peak = max(peak, snap.capital_paise)
        end = snap.capital_paise + snap.realised_pnl_paise
        fall = peak - end
        if fall > worst:
            worst, worst_ratio = fall, fall / peak if peak > 0 else 0.0
        peak = max(peak, end)
    return worst, worst_ratio


def compute(
    snapshots: Sequence[AccountSnapshot],
    trades: Iterable[TradeFigures],
    *,
    start_date: date | None = None,
    end_date: date | None = None,
) -> Stats:
    """The statistics of `snapshots` (oldest first) and `trades`, both of the same span."""
    trades = list(trades)
    nets = [t.net_paise for t in trades]
    days = [DayFigure(date.fromisoformat(s.trading_date), s.realised_pnl_paise) for s in snapshots]
    drawdown, ratio = _drawdown(snapshots)
    return Stats(
        start_date=start_date,
        end_date=end_date,
        trading_days=len(days),
        winning_days=sum(1 for d in days if d.net_paise > 0),
        losing_days=sum(1 for d in days if d.net_paise < 0),
        trades=len(trades),
        wins=sum(1 for n in nets if n > 0),
        losses=sum(1 for n in nets if n < 0),
        gross_paise=sum(t.gross_paise for t in trades),
        charges_paise=sum(t.charges_paise for t in trades),
        net_paise=sum(nets),
        gross_profit_paise=sum(n for n in nets if n > 0),
        gross_loss_paise=sum(n for n in nets if n < 0),
        best_trade_paise=max(nets, default=None),
        worst_trade_paise=min(nets, default=None),
        best_day=max(days, key=lambda d: d.net_paise, default=None),
        worst_day=min(days, key=lambda d: d.net_paise, default=None),
        day_net_paise=sum(d.net_paise for d in days),
        max_drawdown_paise=drawdown,
        max_drawdown_ratio=ratio if snapshots else None,
    )


def by_period(
    snapshots: Sequence[AccountSnapshot],
    trades: Sequence[TradeFigures],
    period: Period,
) -> list[tuple[str, Stats]]:
    """The statistics of each period (oldest first) that has a snapshot or a trade."""

    def key_of(day: date) -> str:
        return period_of(day, period)[0]

    spans: dict[str, tuple[date, date]] = {}
    for day in sorted(
        {date.fromisoformat(s.trading_date) for s in snapshots} | {t.trading_date for t in trades}
    ):
        label, first, last = period_of(day, period)
        spans.setdefault(label, (first, last))
    out: list[tuple[str, Stats]] = []
    for label, (first, last) in spans.items():
        out.append(
            (
                label,
                compute(
                    [s for s in snapshots if key_of(date.fromisoformat(s.trading_date)) == label],
                    [t for t in trades if key_of(t.trading_date) == label],
                    start_date=first,
                    end_date=last,
                ),
            )
        )
    return out
