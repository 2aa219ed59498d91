"""Contract ticks derived from stock ticks: deterministic, priced like the chain, watched only."""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from tests.support.factories import ist_ms, make_instrument, make_tick
from upstox_bot.clock import NseCalendar
from upstox_bot.domain import Instrument, InstrumentKind, OptionType, Tick
from upstox_bot.feed.derivatives import ChainPricer, DerivativeTicks, WatchSpan
from upstox_bot.feed.sim import SimulatedMarket
from upstox_bot.options.chain import future_price_paise, option_price_paise, simulate_fno_chain
from upstox_bot.trading.routing import ContractBook

CALENDAR = NseCalendar.default()
DAY = date(2026, 11, 25)
SBIN = make_instrument(instrument_key="NSE_EQ|SBIN", trading_symbol="SBIN", tick_size_paise=5)
INFY = make_instrument(instrument_key="NSE_EQ|INFY", trading_symbol="INFY", tick_size_paise=10)
SPOTS = {SBIN.instrument_key: 94_050, INFY.instrument_key: 152_000}


def _book() -> ContractBook:
    book = ContractBook(
        [SBIN, INFY],
        trade=InstrumentKind.OPTION,
        calendar=CALENDAR,
        pricer=ChainPricer(),
        option_min_days_to_expiry=7,
        expiry_exit_sessions=1,
    )
    book.add_contracts(
        simulate_fno_chain(SBIN, SPOTS[SBIN.instrument_key], DAY, CALENDAR, lot_size=750)
    )
    book.add_contracts(
        simulate_fno_chain(INFY, SPOTS[INFY.instrument_key], DAY, CALENDAR, lot_size=400)
    )
    return book


def _pick(
    book: ContractBook,
    stock: Instrument,
    kind: InstrumentKind,
    option_type: OptionType | None = None,
) -> Instrument:
    return next(
        c
        for c in book.contracts_of(stock.instrument_key)
        if c.kind is kind
        and c.option_type is option_type
        and c.expiry == "2026-12-29"
        and (c.strike_paise is None or abs(c.strike_paise - SPOTS[stock.instrument_key]) < 1_000)
    )


def _market_ticks(limit: int = 4_000) -> list[Tick]:
    market = SimulatedMarket(
        [SBIN, INFY], SPOTS, seed=3, trading_date=DAY, calendar=CALENDAR, mean_tick_interval_ms=500
    )
    out = []
    for tick in market.iter_ticks():
        out.append(tick)
        if len(out) >= limit:
            break
    return out


def test_only_watched_contracts_tick_just_before_their_own_stock() -> None:
    book = _book()
    future = _pick(book, SBIN, InstrumentKind.FUTURE)
    call = _pick(book, SBIN, InstrumentKind.OPTION, OptionType.CALL)
    infy_put = _pick(book, INFY, InstrumentKind.OPTION, OptionType.PUT)
    watched = {future.instrument_key, infy_put.instrument_key}
    feed = DerivativeTicks(book, ChainPricer(), lambda: watched)
    out = list(feed.wrap(_market_ticks(2_000)))
    keys = [t.instrument_key for t in out]
    assert call.instrument_key not in keys
    # A contract's tick is its stock's trade, handed out just before that trade itself: an
    # order the trade causes then fills at a later trade, never at its own derived tick.
    for tick, after in itertools.pairwise(out):
        if tick.instrument_key == future.instrument_key:
            assert after.instrument_key == SBIN.instrument_key
            assert tick.ts_ms == after.ts_ms
        if tick.instrument_key == infy_put.instrument_key:
            assert after.instrument_key == INFY.instrument_key
    assert keys.count(future.instrument_key) == keys.count(SBIN.instrument_key)
    assert keys.count(infy_put.instrument_key) == keys.count(INFY.instrument_key)


def test_prices_are_the_chain_pricing_of_the_stock_tick() -> None:
    book = _book()
    future = _pick(book, SBIN, InstrumentKind.FUTURE)
    call = _pick(book, SBIN, InstrumentKind.OPTION, OptionType.CALL)
    pricer = ChainPricer(sigma=0.25)
    feed = DerivativeTicks(book, pricer, lambda: {future.instrument_key, call.instrument_key})
    out = list(feed.wrap(_market_ticks(600)))
    checked = 0
    for i, tick in enumerate(out):
        # the stock trade a contract tick is priced from comes right after its contracts
        spot = next(t.ltp_paise for t in out[i:] if t.instrument_key == SBIN.instrument_key)
        if tick.instrument_key == future.instrument_key:
            assert tick.ltp_paise == future_price_paise(spot, DAY, date(2026, 12, 29))
            assert tick.iv is None
            checked += 1
        elif tick.instrument_key == call.instrument_key:
            assert tick.ltp_paise == option_price_paise(call, spot, tick.ts_ms, sigma=0.25, r=0.07)
            assert tick.iv == 0.25
            assert tick.delta is not None
            assert 0.3 < tick.delta < 0.7  # near the money
            assert tick.theta is not None
            assert tick.theta < 0
            assert tick.bid_paise is not None
            assert tick.bid_paise < tick.ltp_paise
            checked += 1
    assert checked > 100


def test_same_ticks_and_watch_give_the_same_stream() -> None:
    book = _book()
    call = _pick(book, SBIN, InstrumentKind.OPTION, OptionType.CALL)
    ticks = _market_ticks(1_500)
    cut = ticks[700].ts_ms

    def run() -> list[Tick]:
        # the call is watched from the 700th tick on, as if an entry were made there
        state: set[str] = set()
        feed = DerivativeTicks(book, ChainPricer(), lambda: state)
        out = []
        for tick in feed.wrap(ticks):
            out.append(tick)
            if tick.ts_ms >= cut:
                state.add(call.instrument_key)
        return out

    first, second = run(), run()
    assert first == second
    assert any(t.instrument_key == call.instrument_key for t in first)


def test_watched_set_is_read_once_per_millisecond() -> None:
    book = _book()
    future = _pick(book, SBIN, InstrumentKind.FUTURE)
    ms = ist_ms(10, 0)
    same_ms = [make_tick(instrument_key=SBIN.instrument_key, ts_ms=ms, ltp_paise=94_000)] * 2
    later = [make_tick(instrument_key=SBIN.instrument_key, ts_ms=ms + 1, ltp_paise=94_000)]
    state: set[str] = set()
    feed = DerivativeTicks(book, ChainPricer(), lambda: state)
    out = []
    for tick in feed.wrap([*same_ms, *later]):
        out.append(tick.instrument_key)
        state.add(future.instrument_key)  # starts being watched after the first tick
    # not after the second tick of the same millisecond; after the next millisecond's
    assert out == [
        SBIN.instrument_key,
        SBIN.instrument_key,
        future.instrument_key,
        SBIN.instrument_key,
    ]


@pytest.mark.parametrize("restart_at", [600, 1_200])
def test_history_replays_the_watched_set_before_a_restart(restart_at: int) -> None:
    book = _book()
    call = _pick(book, SBIN, InstrumentKind.OPTION, OptionType.CALL)
    ticks = _market_ticks(1_500)
    opened, closed, restart = ticks[300].ts_ms, ticks[900].ts_ms, ticks[restart_at].ts_ms

    def play(feed: DerivativeTicks, state: set[str], recover_after: int | None) -> list[Tick]:
        """The engine's side: an entry at `opened`, the position closed at `closed`."""
        out = []
        for tick in feed.wrap(ticks):
            if recover_after is not None and tick.ts_ms > recover_after:
                recover_after = None  # restart recovery restores what was open at the restart
                if opened <= restart < closed:
                    state.add(call.instrument_key)
            out.append(tick)
            if tick.ts_ms == opened:
                state.add(call.instrument_key)
            if tick.ts_ms == closed:
                state.discard(call.instrument_key)
        return out

    live: set[str] = set()
    expected = play(DerivativeTicks(book, ChainPricer(), lambda: live), live, None)
    assert any(t.instrument_key == call.instrument_key for t in expected)
    # before recovery the engine holds nothing: the recorded history stands in for it
    warm: set[str] = set()
    replay = DerivativeTicks(
        book,
        ChainPricer(),
        lambda: warm,
        history=[WatchSpan(call.instrument_key, opened, None if restart < closed else closed)],
        history_until_ms=restart,
    )
    assert play(replay, warm, restart) == expected
    assert WatchSpan("k", 10, None).covers(11)
    assert not WatchSpan("k", 10, 20).covers(21)
    assert not WatchSpan("k", 10, 20).covers(10)


def test_a_feed_option_tick_gets_its_greeks_filled() -> None:
    book = _book()
    call = _pick(book, SBIN, InstrumentKind.OPTION, OptionType.CALL)
    ms = ist_ms(10, 0)
    feed = DerivativeTicks(book, ChainPricer(), lambda: ())
    premium = option_price_paise(call, 94_050, ms, sigma=0.3)
    stock = make_tick(instrument_key=SBIN.instrument_key, ts_ms=ms, ltp_paise=94_050)
    option = make_tick(instrument_key=call.instrument_key, ts_ms=ms, ltp_paise=premium)
    _, filled = feed.wrap([stock, option])
    assert filled.iv == pytest.approx(0.3, abs=0.01)
    assert filled.delta is not None
    assert filled.gamma is not None
    assert filled.vega is not None


def test_pricer_refuses_a_non_positive_sigma() -> None:
    with pytest.raises(ValueError, match="sigma"):
        ChainPricer(sigma=0)
