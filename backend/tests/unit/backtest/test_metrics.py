"""Each summary metric against values worked out by hand."""

from __future__ import annotations

import math
from datetime import date

import pytest

from tests.support.factories import ist
from upstox_bot.backtest.metrics import summarise
from upstox_bot.backtest.models import BacktestTrade, EquityPoint
from upstox_bot.backtest.report import drawdown_series, monthly_returns

CAPITAL = 10_000_000  # Rs 1,00,000


def _trade(pnl: int, charges: int = 0) -> BacktestTrade:
    return BacktestTrade(
        symbol="X",
        instrument_key="X",
        side="long",
        quantity=1,
        entry_time=ist(10, 0),
        entry_price_paise=10_000,
        exit_time=ist(11, 0),
        exit_price_paise=10_000 + pnl,
        gross_pnl_paise=pnl + charges,
        charges_paise=charges,
        pnl_paise=pnl,
        exit_reason="signal",
    )


# Daily returns +1 %, -1 %, +2 %.
EQUITY = (
    EquityPoint(day=date(2026, 1, 30), equity_paise=10_100_000),
    EquityPoint(day=date(2026, 2, 2), equity_paise=9_999_000),
    EquityPoint(day=date(2026, 2, 3), equity_paise=10_198_980),
)


def test_summary_metrics_match_hand_computed_values() -> None:
    trades = [_trade(500, 20), _trade(-200, 20), _trade(300, 20), _trade(0, 20)]
    s = summarise(capital_paise=CAPITAL, trades=trades, equity=EQUITY, exposure=0.25)
    assert s.net_pnl_paise == 600
    assert s.gross_pnl_paise == 680
    assert s.charges_paise == 80
    assert s.final_equity_paise == 10_198_980
    assert s.return_pct == pytest.approx(1.9898)
    # mean 0.02/3, sample stdev sqrt(0.00046667/2): Sharpe = 4 * sqrt(3) exactly
    assert s.sharpe == pytest.approx(4 * math.sqrt(3))
    # downside deviation sqrt(0.01^2 / 3): Sortino = (0.02/3) / (0.01/sqrt(3)) * sqrt(252)
    assert s.sortino == pytest.approx((0.02 / 3) / (0.01 / math.sqrt(3)) * math.sqrt(252))
    assert s.max_drawdown_pct == pytest.approx(1.0)
    assert s.cagr_pct == pytest.approx((1.019898 ** (252 / 3) - 1) * 100)
    assert s.win_rate_pct == pytest.approx(50.0)  # 2 of 4; a zero trade is not a win
    assert s.profit_factor == pytest.approx(4.0)  # 800 / 200
    assert (s.wins, s.losses, s.trade_count, s.sessions) == (2, 1, 4, 3)
    assert s.exposure_pct == pytest.approx(25.0)


def test_undefined_metrics_are_none() -> None:
    one = (EquityPoint(day=date(2026, 1, 30), equity_paise=10_100_000),)
    s = summarise(capital_paise=CAPITAL, trades=[_trade(500)], equity=one, exposure=0.0)
    assert s.sharpe is None  # one return has no spread
    assert s.sortino is None  # no losing session
    assert s.profit_factor is None  # no losing trade
    empty = summarise(capital_paise=CAPITAL, trades=[], equity=(), exposure=0.0)
    assert (empty.win_rate_pct, empty.cagr_pct, empty.return_pct) == (None, None, 0.0)


def test_monthly_returns_chain_month_end_equity_from_the_capital() -> None:
    months = monthly_returns(CAPITAL, EQUITY)
    assert months[(2026, 1)] == pytest.approx(1.0)
    assert months[(2026, 2)] == pytest.approx((10_198_980 / 10_100_000 - 1) * 100)


def test_drawdown_series_is_zero_at_peaks_and_negative_below() -> None:
    values = [v for _, v in drawdown_series(CAPITAL, EQUITY)]
    assert values == pytest.approx([0.0, -1.0, 0.0])
