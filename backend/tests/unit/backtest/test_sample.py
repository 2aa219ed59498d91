"""`data sample`: simulated 1-minute bars that the backtest reads, the same for the same seed."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from upstox_bot.backtest.data import load_bars
from upstox_bot.backtest.sample import write_sample
from upstox_bot.clock import NseCalendar


def test_the_sample_is_readable_reproducible_and_says_it_is_simulated(tmp_path: Path) -> None:
    calendar = NseCalendar.default()
    first = write_sample(
        tmp_path / "a", calendar=calendar, last=date(2026, 11, 29), days=2, symbols=2
    )
    again = write_sample(
        tmp_path / "b", calendar=calendar, last=date(2026, 11, 29), days=2, symbols=2
    )
    # 29 Nov 2026 is a Sunday: the two sessions before it.
    assert first.sessions == (date(2026, 11, 26), date(2026, 11, 27))
    dataset = load_bars(tmp_path / "a")
    assert dataset.interval_s == 60
    assert len(dataset.series) == 2
    assert dataset.bar_count == first.bars == 2 * 2 * 375
    for name in first.symbols:
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (
            tmp_path / "b" / f"{name}.csv"
        ).read_bytes()
    assert again.bars == first.bars
    readme = (tmp_path / "a" / "README.md").read_text(encoding="utf-8")
    assert "simulated market" in readme
    assert "not NSE prices" in readme
