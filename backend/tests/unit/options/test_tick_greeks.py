"""Greeks on option ticks: the feed's values stay, missing ones come from Black-Scholes."""

from __future__ import annotations

import pytest

from tests.support.factories import make_instrument, make_tick
from upstox_bot.domain import InstrumentKind, OptionType, Tick
from upstox_bot.options.greeks import bs_price, greeks
from upstox_bot.options.tick_greeks import greeks_for_tick

KEY = "NSE_FO|SIM_SBIN_20261229_94000_CE"
CALL = make_instrument(
    instrument_key=KEY,
    trading_symbol="SBIN 940 CE 29 DEC 26",
    kind=InstrumentKind.OPTION,
    segment="NSE_FO",
    lot_size=750,
    strike_paise=94_000,
    option_type=OptionType.CALL,
    expiry="2026-12-29",
    underlying_symbol="SBIN",
)
SPOT, T, R = 95_000, 30 / 365, 0.07


def _tick_at_sigma(sigma: float, **fields: object) -> Tick:
    premium = bs_price("CE", SPOT / 100, 940.0, T, R, sigma)
    return make_tick(instrument_key=KEY, ltp_paise=round(premium * 100), **fields)


def test_missing_iv_and_greeks_are_computed_from_the_price() -> None:
    tick = _tick_at_sigma(0.25)
    out = greeks_for_tick(tick, CALL, spot_paise=SPOT, t=T, r=R)
    assert out.iv is not None
    assert out.delta is not None
    assert out.theta is not None
    assert out.vega is not None
    assert out.iv == pytest.approx(0.25, abs=2e-4)  # the premium was rounded to a paisa
    expected = greeks("CE", SPOT / 100, 940.0, T, R, out.iv)
    assert (out.delta, out.gamma, out.theta, out.vega, out.rho) == pytest.approx(
        (expected.delta, expected.gamma, expected.theta, expected.vega, expected.rho)
    )
    assert 0.5 < out.delta < 0.7  # slightly in the money
    assert out.theta < 0 < out.vega
    assert (out.ltp_paise, out.ts_ms) == (tick.ltp_paise, tick.ts_ms)


def test_feed_values_are_kept_and_its_iv_drives_the_missing_greeks() -> None:
    tick = _tick_at_sigma(0.25, iv=0.40, delta=0.123)
    out = greeks_for_tick(tick, CALL, spot_paise=SPOT, t=T, r=R)
    assert (out.iv, out.delta) == (0.40, 0.123)
    assert out.gamma == pytest.approx(greeks("CE", SPOT / 100, 940.0, T, R, 0.40).gamma)


def test_a_complete_tick_is_returned_as_is() -> None:
    tick = _tick_at_sigma(0.25, iv=0.3, delta=0.5, gamma=0.01, theta=-0.4, vega=1.0, rho=0.3)
    assert greeks_for_tick(tick, CALL, spot_paise=SPOT, t=T, r=R) is tick


def test_a_price_below_intrinsic_leaves_the_fields_empty() -> None:
    tick = make_tick(instrument_key=KEY, ltp_paise=100)  # Rs 1 for a Rs 10 in-the-money call
    out = greeks_for_tick(tick, CALL, spot_paise=SPOT, t=T, r=R)
    assert out is tick
    assert out.iv is None
    assert out.delta is None


def test_expired_or_unpriced_ticks_are_left_alone() -> None:
    tick = _tick_at_sigma(0.25)
    assert greeks_for_tick(tick, CALL, spot_paise=SPOT, t=0.0, r=R) is tick
    assert greeks_for_tick(tick, CALL, spot_paise=0, t=T, r=R) is tick


def test_only_option_ticks_are_accepted() -> None:
    stock = make_instrument()
    with pytest.raises(ValueError, match="not an option"):
        greeks_for_tick(make_tick(), stock, spot_paise=SPOT, t=T, r=R)
    with pytest.raises(ValueError, match="given with"):
        greeks_for_tick(make_tick(), CALL, spot_paise=SPOT, t=T, r=R)
