"""The bar path: trade order inside a bar, repeats, and the replay market's merge."""

from __future__ import annotations

import pytest

from tests.support.factories import ist_ms, make_instrument
from tests.unit.backtest.conftest import bar, make_series
from upstox_bot.feed.replay import ReplayMarket, bar_path, bar_ticks, path_offsets


def test_up_bar_goes_open_low_high_close_with_repeats() -> None:
    path = bar_path(10_000, 10_300, 9_900, 10_200, 60_000)
    assert path == [
        (0, 10_000, False),
        (1, 10_000, True),
        (20_000, 9_900, False),
        (20_001, 9_900, True),
        (40_000, 10_300, False),
        (40_001, 10_300, True),
        (59_000, 10_200, False),
    ]


def test_down_bar_goes_open_high_low_close() -> None:
    prices = [p for _, p, _ in bar_path(10_000, 10_300, 9_900, 9_950, 60_000)]
    assert prices == [10_000, 10_000, 10_300, 10_300, 9_900, 9_900, 9_950]


def test_flat_bar_is_its_open_and_repeat_only() -> None:
    assert bar_path(10_000, 10_000, 10_000, 10_000, 300_000) == [
        (0, 10_000, False),
        (1, 10_000, True),
    ]


def test_extreme_equal_to_open_is_left_out() -> None:
    prices = [p for _, p, _ in bar_path(10_000, 10_100, 10_000, 10_100, 60_000)]
    assert prices == [10_000, 10_000, 10_100, 10_100]


def test_offsets_stay_inside_the_bar_and_never_cross_a_minute_with_a_repeat() -> None:
    for span in (60_000, 300_000, 3_600_000, 22_500_000):
        offsets = path_offsets(span)
        assert list(offsets) == sorted(offsets)
        assert offsets[-1] < span
        for slot in (0, 2, 4):
            assert offsets[slot] // 60_000 == offsets[slot + 1] // 60_000


def test_bar_ticks_put_the_volume_on_the_open() -> None:
    ticks = bar_ticks("K", ist_ms(10, 0), 60_000, 10_000, 10_300, 9_900, 10_200, 500)
    assert [t.ltq for t in ticks] == [500, 0, 0, 0, 0, 0, 0]
    assert [t.ts_ms - ist_ms(10, 0) for t in ticks] == [
        0,
        1,
        20_000,
        20_001,
        40_000,
        40_001,
        59_000,
    ]


def test_replay_market_merges_instruments_in_time_order_and_knows_closes() -> None:
    a = make_series([bar(10, 0, 100, 101, 99, 100.5), bar(10, 1, 100.5, 100.5, 100.5, 100.5)])
    other = make_instrument(instrument_key="NSE_EQ|B", trading_symbol="B")
    b = make_series([bar(10, 0, 50, 51, 49, 49.5)], instrument=other)
    market = ReplayMarket([a, b])
    ticks = list(market.iter_ticks())
    stamps = [(t.ts_ms, t.instrument_key) for t in ticks]
    assert stamps == sorted(stamps, key=lambda s: (s[0], s[1] != "NSE_EQ|INE062A01020"))
    assert ticks[0].instrument_key == "NSE_EQ|INE062A01020"
    assert ticks[1].instrument_key == "NSE_EQ|B"
    assert market.finished
    assert market.closing_prices() == {"NSE_EQ|INE062A01020": 10_050, "NSE_EQ|B": 4_950}


def test_replay_market_for_one_date_keeps_that_date() -> None:
    from datetime import date

    day2 = date(2026, 11, 26)
    s = make_series([bar(10, 0, 100, 100, 100, 100), bar(10, 0, 101, 101, 101, 101, day=day2)])
    market = ReplayMarket([s], trading_date=day2)
    assert {t.ltp_paise for t in market.iter_ticks()} == {10_100}
    assert ReplayMarket([s]).trading_dates() == [date(2026, 11, 25), day2]


def test_replay_market_refuses_repeated_keys() -> None:
    s = make_series([bar(10, 0, 100, 100, 100, 100)])
    with pytest.raises(ValueError, match="distinct"):
        ReplayMarket([s, s])
