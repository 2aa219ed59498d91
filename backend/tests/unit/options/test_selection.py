"""What to trade on a signal: the stock, its current future or its ATM option, in whole lots."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from tests.support.factories import make_instrument, make_limits
from upstox_bot.clock import NseCalendar
from upstox_bot.domain import Direction, Instrument, InstrumentKind, OptionType, RiskRule
from upstox_bot.options.chain import simulate_fno_chain
from upstox_bot.options.selection import (
    ContractChoice,
    check_smallest_lot,
    expiry_exit_date,
    select_contract,
)

CALENDAR = NseCalendar.default()
SBIN = make_instrument(lot_size=750)
SPOT = 94_050


def _chain(day: date, underlying: Instrument = SBIN, spot: int = SPOT) -> list[Instrument]:
    return simulate_fno_chain(underlying, spot, day, CALENDAR)


def _select(
    day: date,
    trade: InstrumentKind,
    direction: Direction = Direction.LONG,
    *,
    contracts: list[Instrument] | None = None,
    spot: int = SPOT,
    min_days: int = 7,
    sessions: int = 1,
) -> ContractChoice:
    return select_contract(
        underlying=SBIN,
        contracts=_chain(day) if contracts is None else contracts,
        spot_paise=spot,
        direction=direction,
        trading_date=day,
        calendar=CALENDAR,
        trade=trade,
        option_min_days_to_expiry=min_days,
        expiry_exit_sessions=sessions,
    )


def test_equity_is_the_stock_itself() -> None:
    choice = _select(date(2026, 11, 25), InstrumentKind.EQUITY, Direction.SHORT)
    assert choice.instrument is SBIN
    assert choice.direction is Direction.SHORT
    assert choice.expiry is None


def test_future_is_the_current_month_in_the_signal_direction() -> None:
    choice = _select(date(2026, 11, 25), InstrumentKind.FUTURE, Direction.SHORT)
    assert choice.instrument is not None
    assert choice.instrument.trading_symbol == "SBIN FUT 29 DEC 26"
    assert choice.direction is Direction.SHORT
    assert (choice.expiry, choice.exit_date) == (date(2026, 12, 29), date(2026, 12, 28))


def test_future_rolls_to_next_month_on_its_exit_date() -> None:
    day = date(2026, 12, 28)  # the session before the 29 Dec expiry
    chain = _chain(date(2026, 12, 24))  # listed before: still holds the December future
    choice = _select(day, InstrumentKind.FUTURE, contracts=chain)
    assert choice.instrument is not None
    assert choice.expiry == date(2027, 1, 25)  # Tuesday 26 January 2027 is Republic Day
    earlier = _select(date(2026, 12, 24), InstrumentKind.FUTURE, contracts=chain)
    assert earlier.expiry == date(2026, 12, 29)


def test_long_buys_the_atm_call_short_buys_the_atm_put() -> None:
    day = date(2026, 11, 25)
    long_choice = _select(day, InstrumentKind.OPTION, Direction.LONG)
    short_choice = _select(day, InstrumentKind.OPTION, Direction.SHORT)
    assert long_choice.instrument is not None
    assert short_choice.instrument is not None
    assert long_choice.instrument.trading_symbol == "SBIN 940 CE 29 DEC 26"
    assert short_choice.instrument.trading_symbol == "SBIN 940 PE 29 DEC 26"
    assert short_choice.instrument.option_type is OptionType.PUT
    # Options are always bought: the position on the contract is long either way.
    assert long_choice.direction is short_choice.direction is Direction.LONG
    assert long_choice.instrument.lot_size == 750


def test_a_spot_halfway_between_strikes_takes_the_lower_one() -> None:
    choice = _select(date(2026, 11, 25), InstrumentKind.OPTION, spot=94_250)
    assert choice.instrument is not None
    assert choice.instrument.strike_paise == 94_000
    nearer_above = _select(date(2026, 11, 25), InstrumentKind.OPTION, spot=94_300)
    assert nearer_above.instrument is not None
    assert nearer_above.instrument.strike_paise == 94_500


def test_an_expiry_with_too_few_days_left_is_skipped() -> None:
    day = date(2026, 10, 21)  # October expires on the 27th: 6 days left
    choice = _select(day, InstrumentKind.OPTION, min_days=7)
    assert choice.expiry == date(2026, 11, 23)  # November's last Tuesday is a holiday
    assert choice.instrument is not None
    assert choice.instrument.expiry == "2026-11-23"
    assert _select(day, InstrumentKind.OPTION, min_days=5).expiry == date(2026, 10, 27)
    # Exactly the minimum is not "more than" it.
    assert _select(day, InstrumentKind.OPTION, min_days=6).expiry == date(2026, 11, 23)


def test_no_contract_is_a_value_with_the_reason() -> None:
    day = date(2026, 11, 25)
    other = replace(SBIN, trading_symbol="OTHER", instrument_key="NSE_EQ|OTHER")
    foreign = _chain(day, underlying=other)
    choice = _select(day, InstrumentKind.OPTION, contracts=foreign)
    assert choice.instrument is None
    assert choice.direction is None
    assert "no SBIN CE with more than 7 days" in choice.reason
    assert _select(day, InstrumentKind.FUTURE, contracts=[]).instrument is None
    far = _select(day, InstrumentKind.OPTION, min_days=90)
    assert far.instrument is None


def test_expiry_exit_date_skips_holidays_and_weekends() -> None:
    # Tuesday 15 Sep 2026: Monday 14th is Ganesh Chaturthi, so one session before is Friday.
    assert expiry_exit_date(date(2026, 9, 15), 1, CALENDAR) == date(2026, 9, 11)
    assert expiry_exit_date(date(2026, 9, 15), 2, CALENDAR) == date(2026, 9, 10)
    # November 2026 expires Monday 23rd (Tuesday holiday): exit the Friday before.
    assert expiry_exit_date(date(2026, 11, 23), 1, CALENDAR) == date(2026, 11, 20)
    with pytest.raises(ValueError, match="at least 1"):
        expiry_exit_date(date(2026, 11, 23), 0, CALENDAR)


def test_smallest_lot_over_the_position_cap_is_refused_with_that_rule() -> None:
    limits = make_limits()  # Rs 1,00,000: cap Rs 30,000, risk Rs 5,000
    future = _select(date(2026, 11, 25), InstrumentKind.FUTURE).instrument
    assert future is not None
    decision = check_smallest_lot(
        contract=future, price_paise=94_700, stop_paise=89_965, limits=limits
    )
    assert not decision.approved
    assert decision.rule is RiskRule.POSITION_SIZE
    assert "lot 750" in decision.reason
    assert (decision.lots, decision.quantity) == (0, 0)


def test_smallest_lot_over_the_risk_budget_is_refused_with_that_rule() -> None:
    option = _select(date(2026, 11, 25), InstrumentKind.OPTION).instrument
    assert option is not None
    # One lot: 750 x Rs 20 = Rs 15,000 (under the cap), but Rs 10 x 750 = Rs 7,500 at risk.
    decision = check_smallest_lot(
        contract=option, price_paise=2_000, stop_paise=1_000, limits=make_limits()
    )
    assert not decision.approved
    assert decision.rule is RiskRule.RISK_PER_TRADE


def test_an_option_that_fits_is_sized_in_whole_lots() -> None:
    option = _select(date(2026, 11, 25), InstrumentKind.OPTION).instrument
    assert option is not None
    decision = check_smallest_lot(
        contract=option, price_paise=2_000, stop_paise=1_900, limits=make_limits()
    )
    assert decision.approved
    assert decision.rule is None
    # Cap Rs 30,000 / Rs 20 = 1,500 shares = 2 lots of 750 exactly.
    assert (decision.lots, decision.quantity) == (2, 1_500)
    assert decision.quantity % option.lot_size == 0
    odd = check_smallest_lot(
        contract=option, price_paise=1_700, stop_paise=1_615, limits=make_limits()
    )
    assert (odd.lots, odd.quantity) == (2, 1_500)  # 1,764 shares fit: whole lots round down
