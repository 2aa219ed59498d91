"""Summary metrics of a backtest, from its trades and its equity at each session's close.

Formulas (docs/backtesting.md): E0 is the starting capital and E1..En the equity at the close of
each of the n sessions; r_i = E_i / E_(i-1) - 1 are the daily returns; a year is 252 sessions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from upstox_bot.backtest.models import BacktestTrade, EquityPoint, Summary

TRADING_DAYS_PER_YEAR = 252


def daily_returns(capital_paise: int, equity: Sequence[EquityPoint]) -> list[float]:
    """r_i = E_i / E_(i-1) - 1 for each session, E0 being the capital."""
    values = [capital_paise, *(p.equity_paise for p in equity)]
    return [b / a - 1 if a > 0 else 0.0 for a, b in itertools.pairwise(values)]


def sharpe_ratio(returns: Sequence[float]) -> float | None:
    """mean(r) / stdev(r) (sample, n-1) x sqrt(252); None below two returns or with no spread."""
    if len(returns) < 2:
        return None
    mean = math.fsum(returns) / len(returns)
    var = math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if var <= 0:
        return None
    return mean / math.sqrt(var) * math.sqrt(TRADING_DAYS_PER_YEAR)


def sortino_ratio(returns: Sequence[float]) -> float | None:
    """mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(252); None without a losing session."""
    if not returns:
        return None
    downside = math.fsum(min(r, 0.0) ** 2 for r in returns) / len(returns)
    if downside <= 0:
        return None
    return (
        math.fsum(returns) / len(returns) / math.sqrt(downside) * math.sqrt(TRADING_DAYS_PER_YEAR)
    )


def max_drawdown_pct(capital_paise: int, equity: Sequence[EquityPoint]) -> float:
    """The largest fall from a running peak, in percent of that peak (E0 counts as a peak)."""
    peak = capital_paise
    worst = 0.0
    for point in equity:
        peak = max(peak, point.equity_paise)
        if peak > 0:
            worst = max(worst, (peak - point.equity_paise) / peak)
    return worst * 100


def cagr_pct(capital_paise: int, final_paise: int, sessions: int) -> float | None:
    """(En / E0) ^ (252 / n) - 1, in percent; None without sessions or with En <= 0."""
    if sessions <= 0 or final_paise <= 0 or capital_paise <= 0:
        return None
    years = sessions / TRADING_DAYS_PER_YEAR
    try:
        growth: float = (final_paise / capital_paise) ** (1 / years)
        return (growth - 1) * 100
    except OverflowError:
        return None


def summarise(
    *,
    capital_paise: int,
    trades: Sequence[BacktestTrade],
    equity: Sequence[EquityPoint],
    exposure: float,
) -> Summary:
    """The summary of a run.

    Args:
        capital_paise: the starting capital (E0).
        trades: the closed trades.
        equity: equity at each session's close, in date order.
        exposure: the fraction (0-1) of market time with at least one position open.
    """
    final = equity[-1].equity_paise if equity else capital_paise
    returns = daily_returns(capital_paise, equity)
    wins = [t.pnl_paise for t in trades if t.pnl_paise > 0]
    losses = [t.pnl_paise for t in trades if t.pnl_paise < 0]
    return Summary(
        start_capital_paise=capital_paise,
        final_equity_paise=final,
        net_pnl_paise=sum(t.pnl_paise for t in trades),
        gross_pnl_paise=sum(t.gross_pnl_paise for t in trades),
        charges_paise=sum(t.charges_paise for t in trades),
        return_pct=(final / capital_paise - 1) * 100,
        cagr_pct=cagr_pct(capital_paise, final, len(equity)),
        sharpe=sharpe_ratio(returns),
        sortino=sortino_ratio(returns),
        max_drawdown_pct=max_drawdown_pct(capital_paise, equity),
        win_rate_pct=len(wins) / len(trades) * 100 if trades else None,
        profit_factor=sum(wins) / -sum(losses) if losses else None,
        exposure_pct=exposure * 100,
        trade_count=len(trades),
        wins=len(wins),
        losses=len(losses),
        sessions=len(equity),
    )
