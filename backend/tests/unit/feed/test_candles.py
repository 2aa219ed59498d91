"""Candle aggregation from ticks, at session edges and over gaps."""

from __future__ import annotations

from tests.support.factories import TRADING_DATE, ist_ms, make_candle, make_tick
from upstox_bot.feed.candles import CandleResampler, TickAggregator


def _tick(h: int, m: int, s: int, price: int, volume: int = 0, ltq: int = 1, key: str = "K"):  # type: ignore[no-untyped-def]
    return make_tick(
        instrument_key=key, ts_ms=ist_ms(h, m, s), ltp_paise=price, volume=volume, ltq=ltq
    )


def test_one_minute_candle_ohlcv_closes_on_next_minute_tick() -> None:
    agg = TickAggregator(60)
    for s, price in ((0, 100), (10, 105), (20, 98), (59, 101)):
        assert agg.on_tick(_tick(9, 15, s, price)) is None
    candle = agg.on_tick(_tick(9, 16, 0, 102))
    assert candle is not None
    assert (candle.open_paise, candle.high_paise, candle.low_paise, candle.close_paise) == (
        100,
        105,
        98,
        101,
    )
    assert candle.volume == 4  # sum of ltq without cumulative volume
    assert candle.start_ms == ist_ms(9, 15)
    assert candle.ticks == 4


def test_volume_from_cumulative_day_volume() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(9, 15, 1, 100, volume=1_000))
    agg.on_tick(_tick(9, 15, 30, 100, volume=1_500))
    candle = agg.on_tick(_tick(9, 16, 1, 100, volume=1_800))
    assert candle is not None
    assert candle.volume == 1_500  # first tick's cumulative counts from zero
    follow = agg.flush(ist_ms(9, 17))
    assert follow[0].volume == 300


def test_ticks_outside_the_session_are_not_candled() -> None:
    agg = TickAggregator(60)
    assert agg.on_tick(_tick(9, 10, 0, 100)) is None  # pre-open
    assert agg.on_tick(_tick(15, 30, 0, 100)) is None  # at the close
    assert agg.flush(ist_ms(16, 0)) == []
    assert agg.stats.outside_session == 2


def test_last_candle_of_the_session_closes_on_the_timer() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(15, 29, 30, 100))
    assert agg.flush(ist_ms(15, 29, 59)) == []
    closed = agg.flush(ist_ms(15, 30))
    assert [c.start_ms for c in closed] == [ist_ms(15, 29)]


def test_gap_minutes_produce_no_candle() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(10, 0, 5, 100))
    candle = agg.on_tick(_tick(10, 5, 5, 110))  # nothing traded 10:01-10:04
    assert candle is not None
    assert candle.start_ms == ist_ms(10, 0)
    assert agg.open_candle("K").start_ms == ist_ms(10, 5)  # type: ignore[union-attr]


def test_late_tick_is_counted_not_applied() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(10, 1, 0, 100))
    agg.on_tick(_tick(10, 0, 59, 500))
    assert agg.stats.late == 1
    assert agg.open_candle("K").high_paise == 100  # type: ignore[union-attr]


def test_flushed_candle_is_not_emitted_twice() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(10, 0, 0, 100))
    assert len(agg.flush(ist_ms(10, 1))) == 1
    assert agg.on_tick(_tick(10, 1, 1, 100)) is None
    assert agg.flush(ist_ms(10, 1, 30)) == []


def test_instruments_are_candled_independently() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(10, 0, 0, 100, key="A"))
    agg.on_tick(_tick(10, 0, 1, 200, key="B"))
    closed = agg.flush(ist_ms(10, 1))
    assert sorted((c.instrument_key, c.close_paise) for c in closed) == [("A", 100), ("B", 200)]


def test_next_day_starts_fresh() -> None:
    agg = TickAggregator(60)
    agg.on_tick(_tick(15, 29, 0, 100, volume=5_000))
    agg.flush(ist_ms(15, 30))
    next_day = TRADING_DATE.replace(day=TRADING_DATE.day + 1)
    agg.on_tick(
        make_tick(
            instrument_key="K", ts_ms=ist_ms(9, 15, 0, day=next_day), ltp_paise=120, volume=200
        )
    )
    closed = agg.flush(ist_ms(9, 16, 0, day=next_day))
    assert closed[0].start_ms == ist_ms(9, 15, 0, day=next_day)
    assert closed[0].volume == 200


def test_five_minute_candles_align_to_session_open_and_roll_up() -> None:
    roller = CandleResampler(300)
    out = []
    for minute, price in zip(range(15, 20), (100, 104, 97, 101, 103), strict=True):
        out += roller.on_candle(
            make_candle(
                instrument_key="K",
                start_ms=ist_ms(9, minute),
                open_paise=price,
                high_paise=price + 1,
                low_paise=price - 1,
                close_paise=price,
                volume=10,
            )
        )
    assert len(out) == 1
    five = out[0]
    assert five.start_ms == ist_ms(9, 15)
    assert (five.open_paise, five.high_paise, five.low_paise, five.close_paise, five.volume) == (
        100,
        105,
        96,
        103,
        50,
    )


def test_multiple_closes_when_a_later_bucket_arrives_after_a_gap() -> None:
    roller = CandleResampler(300)
    assert roller.on_candle(make_candle(instrument_key="K", start_ms=ist_ms(9, 15))) == []
    out = roller.on_candle(make_candle(instrument_key="K", start_ms=ist_ms(9, 31)))
    assert [c.start_ms for c in out] == [ist_ms(9, 15)]
    assert [c.start_ms for c in roller.flush(ist_ms(9, 35))] == [ist_ms(9, 30)]


def test_thirty_minute_buckets_start_at_nine_fifteen() -> None:
    roller = CandleResampler(1800)
    out = roller.on_candle(make_candle(instrument_key="K", start_ms=ist_ms(9, 44)))
    assert [c.start_ms for c in out] == [ist_ms(9, 15)]
