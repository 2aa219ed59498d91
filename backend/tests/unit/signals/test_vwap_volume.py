"""vwap_volume over scripted candles: entries when "beyond VWAP on a surge" starts, exits on the
cross back, a VWAP that restarts each IST day."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from tests.support.factories import ist, ist_ms
from tests.unit.signals.scripted_candles import bars, day_start_ms, replay, series
from upstox_bot.domain import Direction, SignalType
from upstox_bot.signals.session import session_complete, session_start_index, session_vwap
from upstox_bot.signals.strategies.vwap_volume import VwapVolumeStrategy

# Candles with high = low = close, so the typical price is the close.
CLOSES = [100.0, 100.0, 100.0, 100.0, 101.0, 102.0, 101.0, 100.0, 99.0]
VOLUMES = [100, 100, 100, 100, 300, 400, 100, 100, 1000]
# VWAP after each: 100, 100, 100, 100, 100.43, 101.0 (exactly: 121200 / 1200 at index 6),
# 100.92 after the 100 close (index 7): the close crosses below it there.


def _strategy() -> VwapVolumeStrategy:
    return VwapVolumeStrategy(volume_period=3, volume_factor=2.0)


def test_surge_above_vwap_enters_long_once_while_it_lasts() -> None:
    said = replay(_strategy(), bars(CLOSES, volumes=VOLUMES))
    # Index 4: 300 > 2 x 100 and 101 > VWAP. Index 5 still surges above VWAP: no repeat.
    # Index 8: 1000 > 2 x 200 and 99 < VWAP: a short entry.
    assert said == {4: [SignalType.ENTRY_LONG], 8: [SignalType.ENTRY_SHORT]}


def test_long_is_closed_when_the_close_crosses_back_below_vwap() -> None:
    said = replay(_strategy(), bars(CLOSES, volumes=VOLUMES), position=Direction.LONG)
    # Index 8 is already below VWAP: no second exit, only the short entry.
    assert said == {
        4: [SignalType.ENTRY_LONG],
        7: [SignalType.EXIT_LONG],
        8: [SignalType.ENTRY_SHORT],
    }


def test_short_is_closed_when_the_close_crosses_back_above_vwap() -> None:
    closes = [100.0] * 4 + [99.0, 98.0, 101.0]
    volumes = [100] * 4 + [300, 100, 100]
    said = replay(_strategy(), bars(closes, volumes=volumes), position=Direction.SHORT)
    assert said == {4: [SignalType.ENTRY_SHORT], 6: [SignalType.EXIT_SHORT]}


def test_volume_at_exactly_the_factor_is_no_surge() -> None:
    closes = [100.0] * 4 + [101.0]
    assert replay(_strategy(), bars(closes, volumes=[100] * 4 + [200])) == {}
    assert replay(_strategy(), bars(closes, volumes=[100] * 4 + [201])) == {
        4: [SignalType.ENTRY_LONG]
    }


def test_silent_before_startup_candles() -> None:
    strategy = _strategy()
    assert strategy.startup_candles == 5
    # A surge on the fourth candle has too little history to be judged.
    assert replay(strategy, bars([100.0] * 3 + [101.0], volumes=[100] * 3 + [900])) == {}


def test_silent_when_the_day_is_not_wholly_in_the_window() -> None:
    rows = bars(CLOSES, volumes=VOLUMES, start_ms=ist_ms(11, 0))
    assert replay(_strategy(), rows) == {}


def test_vwap_restarts_each_ist_day() -> None:
    day1 = bars([100.0, 110.0], volumes=[100, 100], start_ms=ist_ms(15, 28))
    day2 = bars([200.0, 210.0], volumes=[100, 300], start_ms=day_start_ms(date(2026, 11, 26)))
    window = series(day1 + day2)
    vwap = session_vwap(window.high, window.low, window.close, window.volume, window.start_ms)
    np.testing.assert_allclose(vwap, [100.0, 105.0, 200.0, 207.5])
    assert session_start_index(window.start_ms) == 2
    assert session_complete(window.start_ms)


def test_vwap_is_nan_until_the_day_trades_volume() -> None:
    window = series(bars([100.0, 101.0], volumes=[0, 50]))
    vwap = session_vwap(window.high, window.low, window.close, window.volume, window.start_ms)
    assert np.isnan(vwap[0])
    assert vwap[1] == pytest.approx(101.0)


def test_snapshot_names_the_surge() -> None:
    window = series(bars(CLOSES[:5], volumes=VOLUMES[:5]))
    (signal,) = _strategy().evaluate(window, position=None, now=ist(9, 20))
    assert signal.indicators == {
        "close": 101.0,
        "vwap": pytest.approx(100.4286, abs=1e-4),
        "volume": 300.0,
        "average_volume": 100.0,
    }
    assert signal.strength == 0.75  # 3x against a factor of 2: 0.5 + 0.5 * (3 - 2) / 2
