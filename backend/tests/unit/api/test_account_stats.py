"""Account statistics over several days: totals, best and worst, drawdown, periods."""

from __future__ import annotations

from datetime import date

from upstox_bot.api.account_stats import Period, TradeFigures, by_period, compute, period_of
from upstox_bot.domain import AccountSnapshot

START = 100_000_00  # Rs 1,00,000 in paise


def snapshot(day: str, capital: int, realised: int, trades: int = 1) -> AccountSnapshot:
    return AccountSnapshot(
        trading_date=day,
        capital_paise=capital,
        realised_pnl_paise=realised,
        unrealised_pnl_paise=0,
        charges_paise=0,
        open_positions=0,
        trades=trades,
        orders=2 * trades,
        loss_limit_paise=2000_00,
        loss_limit_hit=False,
        kill_switch=False,
    )


# Four trading days across two weeks and two months: +1,000, -3,000, -500, +4,000 (rupees).
SNAPSHOTS = [
    snapshot("2026-11-26", START, 1000_00),
    snapshot("2026-11-27", START + 1000_00, -3000_00, trades=2),
    snapshot("2026-11-30", START - 2000_00, -500_00),
    snapshot("2026-12-01", START - 2500_00, 4000_00),
]
TRADES = [
    TradeFigures(date(2026, 11, 26), 1050_00, 50_00, 1000_00),
    TradeFigures(date(2026, 11, 27), -1950_00, 50_00, -2000_00),
    TradeFigures(date(2026, 11, 27), -950_00, 50_00, -1000_00),
    TradeFigures(date(2026, 11, 30), -450_00, 50_00, -500_00),
    TradeFigures(date(2026, 12, 1), 4050_00, 50_00, 4000_00),
]


def test_totals_best_worst_and_the_drawdown_of_the_days() -> None:
    stats = compute(SNAPSHOTS, TRADES)
    assert (stats.trades, stats.wins, stats.losses) == (5, 2, 3)
    assert stats.win_rate == 0.4
    assert stats.net_paise == stats.day_net_paise == 1500_00
    assert stats.charges_paise == 250_00
    assert (stats.best_trade_paise, stats.worst_trade_paise) == (4000_00, -2000_00)
    assert stats.profit_factor == 5000_00 / 3500_00
    assert stats.best_day is not None
    assert stats.worst_day is not None
    assert (stats.best_day.trading_date, stats.best_day.net_paise) == (date(2026, 12, 1), 4000_00)
    assert (stats.worst_day.trading_date, stats.worst_day.net_paise) == (
        date(2026, 11, 27),
        -3000_00,
    )
    assert (stats.winning_days, stats.losing_days) == (2, 2)
    # Peak Rs 1,01,000 (after the 26th), trough Rs 97,500 (after the 30th).
    assert stats.max_drawdown_paise == 3500_00
    assert stats.max_drawdown_ratio == 3500_00 / 101_000_00


def test_periods_split_the_same_figures() -> None:
    weeks = by_period(SNAPSHOTS, TRADES, Period.WEEK)
    assert [label for label, _ in weeks] == ["2026-W48", "2026-W49"]
    assert [s.net_paise for _, s in weeks] == [-2000_00, 3500_00]
    assert sum(s.trades for _, s in weeks) == 5
    months = by_period(SNAPSHOTS, TRADES, Period.MONTH)
    assert [(label, s.start_date, s.end_date) for label, s in months] == [
        ("2026-11", date(2026, 11, 1), date(2026, 11, 30)),
        ("2026-12", date(2026, 12, 1), date(2026, 12, 31)),
    ]
    days = by_period(SNAPSHOTS, TRADES, Period.DAY)
    assert [s.net_paise for _, s in days] == [s.realised_pnl_paise for s in SNAPSHOTS]
    assert period_of(date(2026, 12, 31), Period.YEAR) == (
        "2026",
        date(2026, 1, 1),
        date(2026, 12, 31),
    )


def test_no_trades_no_days() -> None:
    stats = compute([], [])
    assert (stats.trades, stats.trading_days, stats.max_drawdown_paise) == (0, 0, 0)
    assert stats.win_rate is None
    assert stats.profit_factor is None
    assert stats.best_day is None
    assert stats.max_drawdown_ratio is None
