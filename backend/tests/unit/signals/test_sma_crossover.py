"""sma_crossover over scripted closes: fires on the crossing candle only, never before startup."""

from __future__ import annotations

import pytest

from tests.support.factories import ist
from tests.unit.signals.scripted_candles import bars, replay, series
from upstox_bot.domain import Direction, SignalType
from upstox_bot.errors import ConfigError
from upstox_bot.signals.strategies.sma_crossover import SmaCrossoverStrategy

FLAT = [100.0] * 6
UP = [101.0, 102.0, 103.0, 104.0]
DOWN = [103.0, 101.0, 99.0, 97.0, 95.0]


def test_long_entry_on_the_cross_above_and_only_there() -> None:
    strategy = SmaCrossoverStrategy(fast=2, slow=4)
    said = replay(strategy, bars(FLAT + UP))
    # SMA2 = 100.5 > SMA4 = 100.25 on the first rising candle; after that fast stays above.
    assert said == {6: [SignalType.ENTRY_LONG]}


def test_cross_below_exits_a_long_and_mirrors_as_short_entry() -> None:
    strategy = SmaCrossoverStrategy(fast=2, slow=4)
    said = replay(strategy, bars(FLAT + UP + DOWN), position=Direction.LONG)
    # Closes ...103, 104, 103, 101: SMA2 102 < SMA4 102.75 on the 101 candle (index 11).
    assert said[11] == [SignalType.EXIT_LONG, SignalType.ENTRY_SHORT]
    assert [i for i in said if i > 6] == [11]


def test_cross_above_closes_a_short_first() -> None:
    said = replay(SmaCrossoverStrategy(fast=2, slow=4), bars(FLAT + UP), position=Direction.SHORT)
    assert said == {6: [SignalType.EXIT_SHORT, SignalType.ENTRY_LONG]}


def test_no_exit_signal_without_the_matching_position() -> None:
    said = replay(SmaCrossoverStrategy(fast=2, slow=4), bars(FLAT + UP + DOWN))
    assert said[11] == [SignalType.ENTRY_SHORT]


def test_silent_before_startup_candles() -> None:
    strategy = SmaCrossoverStrategy(fast=2, slow=4)
    assert strategy.startup_candles == 5
    # The first candle that can fire is the fifth: four flat, then a rise.
    assert replay(strategy, bars([100.0] * 4 + [101.0])) == {4: [SignalType.ENTRY_LONG]}
    assert replay(strategy, bars([100.0] * 3 + [101.0])) == {}


def test_flat_market_says_nothing() -> None:
    assert replay(SmaCrossoverStrategy(), bars([100.0] * 60)) == {}


def test_snapshot_holds_both_averages_and_strength_grows_with_the_gap() -> None:
    strategy = SmaCrossoverStrategy(fast=2, slow=4)
    window = series(bars(FLAT + UP[:1]))
    (signal,) = strategy.evaluate(window, position=None, now=ist(10, 0))
    assert signal.indicators == {"close": 101.0, "sma_fast": 100.5, "sma_slow": 100.25}
    # gap 0.25 / 101 = 0.25 %: past the 0.1 % that earns full strength.
    assert signal.strength == 1.0
    (gentle,) = strategy.evaluate(series(bars([*FLAT, 100.1])), position=None, now=ist(10, 0))
    assert 0.5 < gentle.strength < 1.0


def test_fast_must_be_below_slow() -> None:
    with pytest.raises(ConfigError, match="fast"):
        SmaCrossoverStrategy(fast=30, slow=30)
