"""orb over scripted 5-minute candles: the first close outside the opening range, once per side."""

from __future__ import annotations

from datetime import date

from tests.support.factories import ist, ist_ms
from tests.unit.signals.scripted_candles import bars, day_start_ms, replay, series
from upstox_bot.domain import Direction, SignalType
from upstox_bot.signals.strategies.orb import OpeningRangeBreakoutStrategy

FIVE_MIN = 300
NEXT_DAY = date(2026, 11, 26)

# 09:15, 09:20, 09:25 form the 15-minute range: high 101, low 99.
RANGE_CLOSES = [100.0, 100.8, 99.5]
RANGE_HIGHS = [100.5, 101.0, 100.0]
RANGE_LOWS = [99.5, 100.0, 99.0]
# 09:30 inside, 09:35 breaks up, 09:40 back in, 09:45 breaks up again, 09:50 breaks down,
# 09:55 stays below, 10:00 back inside, 10:05 below again.
AFTER = [100.5, 101.5, 100.0, 102.0, 98.5, 98.0, 100.0, 98.2]


def _day(day: date = date(2026, 11, 25)) -> list[tuple[int, float, float, float, int]]:
    closes = RANGE_CLOSES + AFTER
    return bars(
        closes,
        highs=RANGE_HIGHS + AFTER,
        lows=RANGE_LOWS + AFTER,
        start_ms=day_start_ms(day),
        interval_s=FIVE_MIN,
    )


def _replay(
    rows: list[tuple[int, float, float, float, int]], position: Direction | None = None
) -> dict[int, list[SignalType]]:
    strategy = OpeningRangeBreakoutStrategy(range_minutes=15)
    return replay(strategy, rows, position=position, interval_s=FIVE_MIN)


def test_first_close_beyond_each_side_is_the_only_entry_of_the_day() -> None:
    said = _replay(_day())
    assert said == {4: [SignalType.ENTRY_LONG], 7: [SignalType.ENTRY_SHORT]}


def test_a_long_is_closed_when_the_close_crosses_back_below_the_range_low() -> None:
    said = _replay(_day(), position=Direction.LONG)
    # 09:50 crosses below (exit and first short); 10:05 crosses below again after 10:00 came
    # back inside: exit only, the short side already had its entry today.
    assert said == {
        4: [SignalType.ENTRY_LONG],
        7: [SignalType.EXIT_LONG, SignalType.ENTRY_SHORT],
        10: [SignalType.EXIT_LONG],
    }


def test_a_short_is_closed_on_the_close_back_above_the_range_high() -> None:
    said = _replay(_day(), position=Direction.SHORT)
    assert said[4] == [SignalType.EXIT_SHORT, SignalType.ENTRY_LONG]
    assert said[6] == [SignalType.EXIT_SHORT]


def test_nothing_while_the_range_is_forming() -> None:
    # A close far above the first candle's high at 09:25 is still part of the range.
    rows = bars(
        [100.0, 100.0, 105.0],
        highs=[100.0, 100.0, 105.0],
        lows=[99.0, 99.0, 104.0],
        start_ms=day_start_ms(),
        interval_s=FIVE_MIN,
    )
    assert _replay(rows) == {}


def test_each_day_has_its_own_range_and_its_own_entries() -> None:
    said = _replay(_day() + _day(NEXT_DAY))
    offset = len(RANGE_CLOSES + AFTER)
    assert said == {
        4: [SignalType.ENTRY_LONG],
        7: [SignalType.ENTRY_SHORT],
        offset + 4: [SignalType.ENTRY_LONG],
        offset + 7: [SignalType.ENTRY_SHORT],
    }


def test_silent_when_the_window_does_not_reach_the_open() -> None:
    # Started at 09:30 with no history: the range is unknown, so no breakout can be judged.
    rows = bars([100.0, 103.0, 97.0], start_ms=ist_ms(9, 30), interval_s=FIVE_MIN)
    assert _replay(rows) == {}
    # A window too short for the day (capacity 6) loses the range and goes quiet.
    said = replay(
        OpeningRangeBreakoutStrategy(range_minutes=15), _day(), interval_s=FIVE_MIN, capacity=6
    )
    assert said == {4: [SignalType.ENTRY_LONG]}


def test_silent_before_startup_candles() -> None:
    strategy = OpeningRangeBreakoutStrategy()
    assert strategy.startup_candles == 2
    assert _replay(_day()[:1]) == {}


def test_snapshot_and_strength() -> None:
    window = series(_day()[:5], interval_s=FIVE_MIN)
    (signal,) = OpeningRangeBreakoutStrategy().evaluate(window, position=None, now=ist(9, 40))
    assert signal.indicators == {"close": 101.5, "range_high": 101.0, "range_low": 99.0}
    assert signal.strength == 0.625  # 0.5 beyond a 2.0 wide range: 0.5 + 0.5 * 0.25
