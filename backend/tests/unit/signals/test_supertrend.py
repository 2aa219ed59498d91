"""supertrend: the band recursion on hand-worked candles, flips as signals, and its cost."""

from __future__ import annotations

import time

import numpy as np

from tests.support.factories import ist
from tests.unit.signals.scripted_candles import bars, replay, series
from upstox_bot.domain import Direction, SignalType
from upstox_bot.signals.strategies.supertrend import SupertrendStrategy, supertrend

# ATR(2), multiplier 1, every candle 2 wide (close +- 1). Worked by hand:
# flat 100s: ATR 2, bands 98 / 102, trend up (seeded: close at its midpoint).
# 97: TR 4, ATR 3; lower band stays 98 (basic 94 is lower) and 97 < 98 -> flips down.
# 97: TR 2, ATR 2.5; upper band ratchets down from 100 to 99.5; no flip.
# 103: TR 7, ATR 4.75; upper band stays 99.5 and 103 > 99.5 -> flips up.
CLOSES = [100.0, 100.0, 100.0, 100.0, 97.0, 97.0, 103.0, 103.5]


def _rows(closes: list[float]) -> list[tuple[int, float, float, float, int]]:
    return bars(closes, highs=[c + 1 for c in closes], lows=[c - 1 for c in closes])


def test_bands_and_flips_match_the_hand_worked_example() -> None:
    window = series(_rows(CLOSES))
    line, trend, atr = supertrend(window.high, window.low, window.close, 2, 1.0)
    assert trend.tolist() == [0, 0, 1, 1, -1, -1, 1, 1]
    np.testing.assert_allclose(atr[2:7], [2.0, 2.0, 3.0, 2.5, 4.75])
    np.testing.assert_allclose(line[2:6], [98.0, 98.0, 100.0, 99.5])
    assert np.isnan(line[:2]).all()


def test_flip_down_and_up_are_the_only_signals() -> None:
    strategy = SupertrendStrategy(period=2, multiplier=1.0)
    assert replay(strategy, _rows(CLOSES)) == {
        4: [SignalType.ENTRY_SHORT],
        6: [SignalType.ENTRY_LONG],
    }


def test_flips_close_the_open_position_first() -> None:
    strategy = SupertrendStrategy(period=2, multiplier=1.0)
    assert replay(strategy, _rows(CLOSES), position=Direction.LONG)[4] == [
        SignalType.EXIT_LONG,
        SignalType.ENTRY_SHORT,
    ]
    assert replay(strategy, _rows(CLOSES), position=Direction.SHORT)[6] == [
        SignalType.EXIT_SHORT,
        SignalType.ENTRY_LONG,
    ]


def test_silent_before_startup_candles() -> None:
    strategy = SupertrendStrategy(period=2, multiplier=1.0)
    assert strategy.startup_candles == 4
    # A drop on the third candle: the ATR exists only from there, no direction to flip from.
    assert replay(strategy, _rows([100.0, 100.0, 90.0])) == {}


def test_line_stays_on_the_right_side_of_the_close() -> None:
    rng = np.random.default_rng(11)
    closes = 1000 * np.exp(np.cumsum(rng.normal(0, 0.004, 300)))
    window = series(_rows([round(float(c), 2) for c in closes]))
    line, trend, _ = supertrend(window.high, window.low, window.close, 10, 3.0)
    up, down = trend == 1, trend == -1
    assert up.any()
    assert down.any()
    assert (window.close[up] >= line[up]).all()
    assert (window.close[down] <= line[down]).all()


def test_snapshot() -> None:
    window = series(_rows(CLOSES[:7]))
    (signal,) = SupertrendStrategy(period=2, multiplier=1.0).evaluate(
        window, position=None, now=ist(10, 0)
    )
    assert signal.indicators == {"close": 103.0, "supertrend": 98.25, "atr": 4.75, "trend": 1.0}
    assert signal.strength == 1.0  # 4.75 above the line: one ATR or more


def test_recomputing_a_full_window_is_cheap() -> None:
    rng = np.random.default_rng(5)
    closes = 1000 * np.exp(np.cumsum(rng.normal(0, 0.002, 300)))
    window = series(_rows([round(float(c), 2) for c in closes]))
    strategy = SupertrendStrategy()
    runs = 200
    started = time.perf_counter()
    for _ in range(runs):
        strategy.evaluate(window, position=None, now=ist(15, 0))
    per_call = (time.perf_counter() - started) / runs
    # Measured about 0.07 ms; 5 ms would still be 0.5 s a minute for 92 stocks.
    assert per_call < 0.005
