"""Backtests fill at the next bar's open exactly as the data gives it: split-adjusted daily bars
with six decimals keep them (no rounding to the paisa or to the tick without slippage)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

from tests.support.factories import ScriptedStrategy, ist_ms
from tests.unit.backtest.conftest import settings
from upstox_bot.backtest.data import load_bars
from upstox_bot.backtest.models import BacktestRequest, BacktestTrade
from upstox_bot.backtest.runner import Backtest
from upstox_bot.backtest.service import build_config
from upstox_bot.domain import SignalType

DAYS = [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]
# Split-adjusted prices (a 1:48 split of a Rs 68.50 stock reads 1.427083...).
CSV = """date,open,high,low,close,volume
2026-11-23,1.402500,1.440000,1.390000,1.431250,1000
2026-11-24,1.427083,1.500000,1.420000,1.489583,1000
2026-11-25,1.495000,1.530000,1.480000,1.520833,1000
2026-11-26,1.514286,1.540000,1.500000,1.531250,1000
"""


def _run(path: Path, **request: object) -> tuple[BacktestTrade, int]:
    dataset = load_bars(path, exact_prices=True)
    values: dict[str, object] = {
        "data": str(path),
        "strategy": "scripted",
        "quantity": 100,
        "charges": "none",
        "timeframe": "1d",
        "slippage_bps": Decimal(0),
        **request,
    }
    config, _ = build_config(BacktestRequest(**values), settings(), dataset)  # type: ignore[arg-type]
    script = {
        ist_ms(9, 15, day=DAYS[0]): [SignalType.ENTRY_LONG],
        ist_ms(9, 15, day=DAYS[2]): [SignalType.EXIT_LONG],
    }
    out = Backtest(dataset, ScriptedStrategy(script), replace(config)).run()
    (trade,) = out.trades
    return trade, dataset.price_scale


def test_six_decimal_daily_bars_fill_at_the_exact_next_opens(tmp_path: Path) -> None:
    path = tmp_path / "ADJ.csv"
    path.write_text(CSV, encoding="utf-8")
    trade, scale = _run(path)
    assert scale == 10_000  # a millionth of a rupee is 1/10,000 of a paisa
    # entry decided at the 23rd's close, filled at the 24th's open; exit at the 26th's open
    assert trade.entry_price_paise == Decimal("142.7083")
    assert trade.exit_price_paise == Decimal("151.4286")
    assert trade.to_dict()["entry_price"] == 1.427083
    assert trade.to_dict()["exit_price"] == 1.514286
    # gross (1.514286 - 1.427083) x 100 = Rs 8.7203 -> 872 paise (half up)
    assert trade.gross_pnl_paise == 872
    assert trade.pnl_paise == 872  # no charges


def test_slippage_moves_an_off_grid_open_against_the_trader_to_the_millionth(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ADJ.csv"
    path.write_text(CSV, encoding="utf-8")
    trade, _ = _run(path, slippage_bps=Decimal(10))
    # Off the 5-paise grid, so no tick rounding: 1.427083 x 1.001 = 1.428510083 -> up to
    # 1.428511 for the buy; 1.514286 x 0.999 = 1.512771714 -> down to 1.512771 for the sell.
    assert trade.entry_price_paise == Decimal("142.8511")
    assert trade.exit_price_paise == Decimal("151.2771")


def test_the_replayed_market_still_reads_prices_to_the_paisa(tmp_path: Path) -> None:
    path = tmp_path / "ADJ.csv"
    path.write_text(CSV, encoding="utf-8")
    dataset = load_bars(path)
    assert dataset.price_scale == 1
    assert int(dataset.series[0].open[1]) == 143  # 1.427083 half up to 1.43


def test_prices_on_the_paisa_keep_the_paisa_scale(tmp_path: Path) -> None:
    path = tmp_path / "P.csv"
    path.write_text("date,open,high,low,close\n2026-11-23,100.05,101,99.5,100.25\n", "utf-8")
    dataset = load_bars(path, exact_prices=True)
    assert dataset.price_scale == 1
    assert int(dataset.series[0].open[0]) == 10_005
