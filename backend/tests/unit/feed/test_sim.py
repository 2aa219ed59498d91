"""The simulated market: reproducible, ordered, tick-rounded sessions with trends and a U shape."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable
from datetime import date, time
from pathlib import Path

import numpy as np
import pytest

from upstox_bot.clock import NseCalendar, SpecialSession
from upstox_bot.domain import Instrument, Tick
from upstox_bot.feed import sim
from upstox_bot.feed.candles import TickAggregator
from upstox_bot.feed.sim import SimulatedMarket, load_universe
from upstox_bot.signals import indicators

CAL = NseCalendar.default()
DAY = date(2026, 6, 16)  # a Tuesday, not a holiday
UNIVERSE = load_universe()
INSTRUMENTS = [instrument for instrument, _ in UNIVERSE]
PRICES = {instrument.instrument_key: price for instrument, price in UNIVERSE}


def market(
    count: int = 12,
    *,
    seed: int = 7,
    day: date = DAY,
    interval_ms: int = 1000,
    instruments: list[Instrument] | None = None,
    calendar: NseCalendar = CAL,
) -> SimulatedMarket:
    chosen = instruments if instruments is not None else INSTRUMENTS[:count]
    return SimulatedMarket(
        chosen,
        PRICES,
        seed=seed,
        trading_date=day,
        calendar=calendar,
        mean_tick_interval_ms=interval_ms,
    )


_ALL_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(Tick)))


def rows(ticks: Iterable[Tick]) -> list[tuple[object, ...]]:
    return [_ALL_FIELDS(t) for t in ticks]


@dataclasses.dataclass(frozen=True)
class Session:
    market: SimulatedMarket
    keys: np.ndarray  # instrument index per tick
    ts: np.ndarray
    ltp: np.ndarray
    ltq: np.ndarray
    volume: np.ndarray
    close: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    bid_qty: np.ndarray
    ask_qty: np.ndarray

    def of(self, index: int) -> np.ndarray:
        return np.nonzero(self.keys == index)[0]


def play(m: SimulatedMarket) -> Session:
    index = {i.instrument_key: n for n, i in enumerate(m.instruments)}
    fields = [
        (index[t.instrument_key], t.ts_ms, t.ltp_paise, t.ltq, t.volume, t.close_paise,
         t.bid_paise, t.ask_paise, t.bid_qty, t.ask_qty)
        for t in m.iter_ticks()
    ]  # fmt: skip
    columns = np.array(fields, dtype=np.int64).T
    return Session(m, *columns)


@pytest.fixture(scope="module")
def day12() -> Session:
    """Twelve stocks, one full session at the default tick rate."""
    return play(market(12))


# --- universe -------------------------------------------------------------------------------


def test_packaged_universe_has_the_92_sample_stocks() -> None:
    assert len(UNIVERSE) == 92
    reliance, price = UNIVERSE[0]
    assert reliance.instrument_key == "NSE_EQ|INE002A01018"
    assert (reliance.trading_symbol, reliance.lot_size, reliance.tick_size_paise) == (
        "RELIANCE",
        500,
        5,
    )
    assert price == 133_450
    assert reliance.segment == "NSE_EQ"
    for instrument, approx in UNIVERSE:
        assert instrument.instrument_key == f"NSE_EQ|{instrument.isin}"
        # NSE cash tick: Rs 0.01 below Rs 250, Rs 0.05 from Rs 250.
        assert instrument.tick_size_paise == (1 if approx < 25_000 else 5)
    idea = next(i for i, _ in UNIVERSE if i.trading_symbol == "IDEA")
    assert (idea.tick_size_paise, idea.lot_size) == (1, 71_475)
    assert [i for i, _ in load_universe(limit=5)] == INSTRUMENTS[:5]


def test_load_universe_rejects_a_file_without_prices(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("instrument_key,trading_symbol\nNSE_EQ|X,X\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing columns"):
        load_universe(path)


def test_load_universe_rejects_a_non_positive_lot(tmp_path: Path) -> None:
    header = ",".join(sim.UNIVERSE_COLUMNS)
    path = tmp_path / "u.csv"
    path.write_text(f"{header}\nNSE_EQ|INE1,A,A Ltd,INE1,0,5,X,10000\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: lot_size"):
        load_universe(path)


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_ticks_and_replays() -> None:
    first = market(4)
    expected = rows(market(4).iter_ticks())
    assert len(expected) > 80_000
    assert rows(first.iter_ticks()) == expected
    assert rows(first.iter_ticks()) == expected  # a second play of the same market


def test_different_seed_or_day_gives_different_ticks() -> None:
    base = rows(market(3, interval_ms=5000).iter_ticks())
    assert rows(market(3, seed=8, interval_ms=5000).iter_ticks()) != base
    assert rows(market(3, day=date(2026, 6, 17), interval_ms=5000).iter_ticks()) != base


def test_an_instruments_ticks_do_not_depend_on_the_others() -> None:
    target = INSTRUMENTS[5]
    alone = rows(market(instruments=[target], interval_ms=2000).iter_ticks())
    crowd = [
        r for r in rows(market(8, interval_ms=2000).iter_ticks()) if r[0] == target.instrument_key
    ]
    assert alone == crowd


# --- shape of the session -------------------------------------------------------------------


def test_ticks_are_time_ordered_within_the_session(day12: Session) -> None:
    opens, closes = CAL.session_bounds_ms(DAY)
    assert (np.diff(day12.ts) >= 0).all()
    assert day12.ts.min() >= opens
    assert day12.ts.max() < closes
    assert day12.ts.min() - opens < 5_000  # trading starts at the open
    assert closes - day12.ts.max() < 5_000


def test_each_instrument_ticks_about_once_per_mean_interval(day12: Session) -> None:
    for index in range(12):
        assert 21_500 <= day12.of(index).size <= 23_500  # 22,500 s at 1 tick/s, Poisson


def test_prices_are_positive_and_on_the_tick_grid(day12: Session) -> None:
    ticks = np.array([i.tick_size_paise for i in day12.market.instruments])[day12.keys]
    for column in (day12.ltp, day12.bid, day12.ask):
        assert (column > 0).all()
        assert (column % ticks == 0).all()
    spread = (day12.ask - day12.bid) // ticks
    assert set(np.unique(spread).tolist()) == {1, 2}
    assert ((day12.ltp == day12.bid) | (day12.ltp == day12.ask)).all()
    assert (day12.bid_qty > 0).all()
    assert (day12.ask_qty > 0).all()


def test_volume_is_the_running_sum_of_trade_quantities(day12: Session) -> None:
    assert (day12.ltq > 0).all()
    for index in range(12):
        at = day12.of(index)
        assert (np.diff(day12.volume[at]) > 0).all()
        assert (day12.volume[at] == np.cumsum(day12.ltq[at])).all()


def test_trade_sizes_scale_with_the_lot(day12: Session) -> None:
    lots = [i.lot_size for i in day12.market.instruments]
    for index, lot in enumerate(lots):
        median = float(np.median(day12.ltq[day12.of(index)]))
        assert 0.2 * lot <= median <= 1.5 * lot


def test_close_field_is_the_previous_close(day12: Session) -> None:
    for index, instrument in enumerate(day12.market.instruments):
        assert (day12.close[day12.of(index)] == PRICES[instrument.instrument_key]).all()


def test_activity_is_u_shaped(day12: Session) -> None:
    opens, closes = CAL.session_bounds_ms(DAY)
    half_hour = 30 * 60_000
    midday = opens + (closes - opens) // 2
    first = np.count_nonzero(day12.ts < opens + half_hour)
    last = np.count_nonzero(day12.ts >= closes - half_hour)
    middle = np.count_nonzero(np.abs(day12.ts - midday) < half_hour // 2)
    assert first > 1.5 * middle
    assert last > 1.3 * middle


def test_the_day_opens_with_a_gap_against_the_previous_close() -> None:
    session = play(market(40, interval_ms=5000))
    gaps = []
    for index, instrument in enumerate(session.market.instruments):
        first = session.of(index)[0]
        gaps.append(abs(session.ltp[first] / PRICES[instrument.instrument_key] - 1))
    assert np.median(gaps) > 0.001  # typically a few tenths of a percent
    assert max(gaps) < 0.1


def test_closing_prices_are_the_last_trades_after_a_full_play() -> None:
    m = market(3)
    assert m.closing_prices() == {
        i.instrument_key: PRICES[i.instrument_key] for i in INSTRUMENTS[:3]
    }
    last: dict[str, int] = {}
    for tick in m.iter_ticks():
        last[tick.instrument_key] = tick.ltp_paise
    assert m.finished
    assert m.closing_prices() == last
    assert m.closing_prices() != {k: PRICES[k] for k in last}


def test_closing_prices_after_stopping_early_are_the_prices_so_far() -> None:
    m = market(3)
    last = {i.instrument_key: PRICES[i.instrument_key] for i in INSTRUMENTS[:3]}
    stop_ms = m.session_open_ms + 3 * 3_600_000
    for tick in m.iter_ticks():  # stops in the middle of a generation chunk
        last[tick.instrument_key] = tick.ltp_paise
        if tick.ts_ms >= stop_ms:
            break
    assert not m.finished
    assert m.closing_prices() == last


def test_closing_prices_seed_the_next_day() -> None:
    today = market(3)
    for _ in today.iter_ticks():
        pass
    closes = today.closing_prices()
    tomorrow = SimulatedMarket(
        today.instruments,
        closes,
        seed=7,
        trading_date=CAL.next_trading_day(DAY),
        calendar=CAL,
    )
    first = next(tomorrow.iter_ticks())
    assert first.close_paise == closes[first.instrument_key]


# --- price dynamics -------------------------------------------------------------------------


def _minute_closes(m: SimulatedMarket) -> dict[str, np.ndarray]:
    aggregator = TickAggregator(60)
    closes: dict[str, list[float]] = {i.instrument_key: [] for i in m.instruments}
    for tick in m.iter_ticks():
        candle = aggregator.on_tick(tick)
        if candle is not None:
            closes[candle.instrument_key].append(candle.close_paise)
    for candle in aggregator.flush(m.session_close_ms):
        closes[candle.instrument_key].append(candle.close_paise)
    return {key: np.array(values, dtype=np.float64) for key, values in closes.items()}


def test_ema_9_21_crossovers_fire_on_one_minute_candles_across_40_stocks() -> None:
    closes = _minute_closes(market(40, interval_ms=4000))
    crossings = 0
    trending = 0
    for series in closes.values():
        assert len(series) > 360  # nearly every minute of 375 has a trade
        fast, slow = indicators.ema(series, 9), indicators.ema(series, 21)
        above = (fast > slow)[21:]
        crossings += int(np.count_nonzero(above[1:] != above[:-1]))
        hourly_move = np.abs(series[60:] / series[:-60] - 1)
        trending += bool(hourly_move.max() >= 0.02)
    assert crossings >= 200  # several per stock on an ordinary day
    assert trending >= 5  # clear trends: 2 % within an hour


def _excursions(seed: int) -> list[float]:
    """Per stock: the largest move away from the open, as a fraction of the open."""
    session = play(market(40, seed=seed, interval_ms=10_000))
    out = []
    for index in range(40):
        prices = session.ltp[session.of(index)].astype(np.float64)
        out.append(max(prices.max() / prices[0] - 1, 1 - prices.min() / prices[0]))
    return out


def test_some_stocks_move_4_pct_intraday_but_most_do_not() -> None:
    excursions = np.array([_excursions(seed) for seed in (1, 2, 3)])
    assert (excursions >= 0.04).any(axis=1).sum() >= 2  # on most of the days
    assert (excursions >= 0.04).mean() < 0.3
    assert np.median(excursions) < 0.03
    assert np.median(excursions) > 0.005  # the stocks do move


# --- calendars and arguments ----------------------------------------------------------------


@pytest.mark.parametrize("day", [date(2026, 1, 15), date(2026, 6, 20)])
def test_a_non_trading_date_is_refused(day: date) -> None:
    with pytest.raises(ValueError, match="not an NSE trading day"):
        market(2, day=day)


def test_a_special_session_trades_its_own_hours() -> None:
    muhurat = date(2025, 10, 21)
    calendar = NseCalendar(
        CAL.holidays, special_sessions={muhurat: SpecialSession(time(13, 45), time(14, 45))}
    )
    session = play(market(2, day=muhurat, calendar=calendar))
    opens, closes = calendar.session_bounds_ms(muhurat)
    assert closes - opens == 3_600_000
    assert session.ts.min() >= opens
    assert session.ts.max() < closes
    assert 6_000 < session.ts.size < 8_400


def test_bad_arguments_are_refused() -> None:
    two = INSTRUMENTS[:2]
    with pytest.raises(ValueError, match="start price"):
        SimulatedMarket(two, {}, seed=1, trading_date=DAY, calendar=CAL)
    with pytest.raises(ValueError, match="distinct"):
        SimulatedMarket([two[0], two[0]], PRICES, seed=1, trading_date=DAY, calendar=CAL)
    with pytest.raises(ValueError, match="no instruments"):
        SimulatedMarket([], PRICES, seed=1, trading_date=DAY, calendar=CAL)
    with pytest.raises(ValueError, match="mean_tick_interval_ms"):
        market(2, interval_ms=0)


# --- the fast Tick constructor --------------------------------------------------------------


def test_fast_tick_construction_equals_the_dataclass_constructor() -> None:
    fast = sim._fast_tick_factory()
    # Tick is still a slots dataclass without __post_init__, or a compiled one (native fields
    # with setters): either way it is built field by field.
    assert fast is not None
    assert sim._make_tick is not sim._plain_tick
    args = ("NSE_EQ|INE002A01018", 1_781_000_000_000, 133_450, 500, 9_000, 133_000, 133_445,
            133_450, 1_000, 1_500)  # fmt: skip
    built = fast(*args)
    plain = sim._plain_tick(*args)
    assert built == plain
    assert dataclasses.asdict(built) == dataclasses.asdict(plain)
    assert built.oi is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.ltp_paise = 1  # type: ignore[misc]
