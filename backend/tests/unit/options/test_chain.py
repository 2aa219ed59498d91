"""The simulated F&O chain: last-Tuesday expiries off holidays, strikes around the spot, quotes."""

from __future__ import annotations

from datetime import date

import pytest

from tests.support.factories import ist_ms, make_instrument
from upstox_bot.clock import NseCalendar
from upstox_bot.domain import InstrumentKind, OptionType
from upstox_bot.feed.sim import load_universe
from upstox_bot.options.chain import (
    future_price_paise,
    monthly_expiries,
    monthly_expiry,
    option_price_paise,
    shipped_strike_steps,
    simulate_fno_chain,
    strike_step_paise,
    years_to_expiry,
)

CALENDAR = NseCalendar.default()


@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2026, 12, date(2026, 12, 29)),  # last Tuesday
        (2026, 10, date(2026, 10, 27)),
        (2026, 11, date(2026, 11, 23)),  # Tuesday 24th is Guru Nanak Jayanti: Monday
        (2026, 3, date(2026, 3, 30)),  # Tuesday 31st is Mahavir Jayanti: Monday
        (2026, 6, date(2026, 6, 30)),  # the last day of the month is itself a Tuesday
        # 31 Jan 2027 is a Sunday, so the last Tuesday is the 26th, Republic Day (a provisional
        # holiday of the shipped calendar): the expiry moves to Monday 25 January.
        (2027, 1, date(2027, 1, 25)),
    ],
)
def test_monthly_expiry_is_the_last_tuesday_or_the_trading_day_before(
    year: int, month: int, expected: date
) -> None:
    assert monthly_expiry(year, month, CALENDAR) == expected


def test_monthly_expiries_start_from_the_current_month_until_its_expiry() -> None:
    assert monthly_expiries(date(2026, 11, 25), CALENDAR) == [
        date(2026, 12, 29),
        date(2027, 1, 25),  # not Tuesday 26 January, Republic Day
        date(2027, 2, 23),
    ]
    assert monthly_expiries(date(2026, 12, 29), CALENDAR, 1) == [date(2026, 12, 29)]


@pytest.mark.parametrize(
    ("spot_paise", "step"),
    [(94_050, 500), (133_450, 1_000), (5_000, 50), (3_000, 50), (12_000_000, 50_000)],
)
def test_strike_step_is_about_one_percent(spot_paise: int, step: int) -> None:
    assert strike_step_paise(spot_paise) == step


def test_chain_of_a_shipped_stock_uses_its_lot_size_and_centres_on_the_spot() -> None:
    sbin = next(i for i, _ in load_universe() if i.trading_symbol == "SBIN")
    chain = simulate_fno_chain(sbin, 94_050, date(2026, 11, 25), CALENDAR)
    futures = [c for c in chain if c.kind is InstrumentKind.FUTURE]
    options = [c for c in chain if c.kind is InstrumentKind.OPTION]
    assert [f.expiry for f in futures] == ["2026-12-29", "2027-01-25", "2027-02-23"]
    assert futures[0].trading_symbol == "SBIN FUT 29 DEC 26"
    assert futures[0].instrument_key == "NSE_FO|SIM_SBIN_20261229_FUT"
    assert len(options) == 3 * 21 * 2
    assert {c.lot_size for c in chain} == {sbin.lot_size} == {750}
    assert len({c.instrument_key for c in chain}) == len(chain)
    assert all(c.underlying_symbol == "SBIN" and c.segment == "NSE_FO" for c in chain)
    strikes = sorted({c.strike_paise for c in options if c.strike_paise is not None})
    assert strikes[10] == 94_000  # the ATM strike in the middle
    assert (strikes[0], strikes[-1]) == (89_000, 99_000)
    call = next(c for c in options if c.strike_paise == 94_000 and c.option_type is OptionType.CALL)
    assert call.trading_symbol == "SBIN 940 CE 29 DEC 26"
    assert call.tick_size_paise == 5


def test_a_shipped_stock_uses_its_own_nse_strike_step_not_one_percent() -> None:
    # INFY at Rs 1,138.70: NSE lists its strikes Rs 20 apart (the shipped `strike_step_paise`),
    # where 1 % of the price would give Rs 10.
    infy = next(i for i, _ in load_universe() if i.trading_symbol == "INFY")
    assert shipped_strike_steps()["INFY"] == 2_000
    assert strike_step_paise(113_870) == 1_000
    chain = simulate_fno_chain(infy, 113_870, date(2026, 11, 25), CALENDAR, strikes_each_side=2)
    strikes = sorted({c.strike_paise for c in chain if c.strike_paise is not None})
    # ATM: 1,138.70 rounded to the Rs 20 grid is 1,140
    assert strikes == [110_000, 112_000, 114_000, 116_000, 118_000]
    # every shipped stock has a step, and a stock outside the universe falls back to the rule
    assert len(shipped_strike_steps()) == len(load_universe())
    other = make_instrument(instrument_key="NSE_EQ|ZZZ", trading_symbol="ZZZ")
    wide = simulate_fno_chain(other, 113_870, date(2026, 11, 25), CALENDAR, strikes_each_side=1)
    assert sorted({c.strike_paise for c in wide if c.strike_paise is not None}) == [
        113_000,
        114_000,
        115_000,
    ]


def test_symbols_with_punctuation_make_valid_keys() -> None:
    mm = next(i for i, _ in load_universe() if "&" in i.trading_symbol)
    chain = simulate_fno_chain(mm, 300_000, date(2026, 11, 25), CALENDAR, strikes_each_side=1)
    assert all("&" not in c.instrument_key for c in chain)
    assert all(c.trading_symbol.startswith(mm.trading_symbol) for c in chain)


def test_low_strikes_never_go_to_zero() -> None:
    chain = simulate_fno_chain(
        next(i for i, _ in load_universe()), 120, date(2026, 11, 25), CALENDAR, lot_size=1000
    )
    assert min(c.strike_paise for c in chain if c.strike_paise is not None) > 0


def test_future_carries_the_spot_forward() -> None:
    price = future_price_paise(100_000, date(2026, 11, 25), date(2026, 12, 30), carry_rate=0.07)
    assert price == 100_675  # 100000 x e^(0.07 x 35 / 365) = 100673.5, on the 5-paise grid
    assert future_price_paise(100_000, date(2026, 12, 30), date(2026, 12, 30)) == 100_000


def test_option_quotes_respect_parity_and_expire_at_intrinsic() -> None:
    sbin = next(i for i, _ in load_universe() if i.trading_symbol == "SBIN")
    chain = simulate_fno_chain(sbin, 94_050, date(2026, 11, 25), CALENDAR)
    call, put = (
        next(
            c
            for c in chain
            if c.strike_paise == 94_000 and c.option_type is t and c.expiry == "2026-12-29"
        )
        for t in (OptionType.CALL, OptionType.PUT)
    )
    at = ist_ms(10, 0)
    c = option_price_paise(call, 94_050, at, sigma=0.25)
    p = option_price_paise(put, 94_050, at, sigma=0.25)
    t = years_to_expiry(date(2026, 12, 29), at)
    forward_gap = 94_050 - 94_000 * 2.718281828459045 ** (-0.07 * t)
    assert abs((c - p) - forward_gap) <= 10  # two roundings to 5 paise
    assert c > 1_000  # an ATM month-out option is worth several rupees
    after_expiry = ist_ms(16, 0, day=date(2026, 12, 29))
    assert option_price_paise(call, 95_000, after_expiry, sigma=0.25) == 1_000
    assert option_price_paise(put, 95_000, after_expiry, sigma=0.25) == 5  # one tick floor


def test_years_to_expiry_counts_to_the_close_of_expiry_day() -> None:
    assert years_to_expiry(date(2026, 11, 26), ist_ms(15, 30)) == pytest.approx(1 / 365)
    assert years_to_expiry(date(2026, 11, 25), ist_ms(15, 45)) == 0.0
