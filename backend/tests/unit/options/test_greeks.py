"""Black-Scholes-Merton price, greeks and implied volatility against textbooks and calculus."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upstox_bot.domain import OptionType
from upstox_bot.options.greeks import Greeks, bs_price, greeks, implied_volatility

ONE_HOUR = 1.0 / (365.0 * 24.0)


def _lower_bound(kind: str, spot: float, strike: float, t: float, r: float, q: float) -> float:
    sign = 1.0 if kind == "CE" else -1.0
    return max(sign * (spot * math.exp(-q * t) - strike * math.exp(-r * t)), 0.0)


def _upper_bound(kind: str, spot: float, strike: float, t: float, r: float, q: float) -> float:
    return spot * math.exp(-q * t) if kind == "CE" else strike * math.exp(-r * t)


# --- Hull, Options, Futures and Other Derivatives -------------------------------------------


def test_price_of_hull_example_matches_textbook() -> None:
    call = bs_price("CE", 42.0, 40.0, 0.5, 0.10, 0.20)
    put = bs_price("PE", 42.0, 40.0, 0.5, 0.10, 0.20)

    assert call == pytest.approx(4.76, abs=0.005)
    assert put == pytest.approx(0.81, abs=0.005)


def test_greeks_of_hull_example_match_textbook_in_quoted_units() -> None:
    g = greeks("CE", 49.0, 50.0, 0.3846, 0.05, 0.20)

    assert g.delta == pytest.approx(0.522, abs=0.0005)
    assert g.gamma == pytest.approx(0.066, abs=0.0005)
    assert g.theta == pytest.approx(-4.31 / 365.0, abs=0.005 / 365.0)  # per calendar day
    assert g.vega == pytest.approx(0.121, abs=0.0005)  # 12.1 per unit of sigma, per point
    assert g.rho == pytest.approx(0.0891, abs=0.00005)  # 8.91 per unit of r, per point


# --- greeks against central finite differences of bs_price ------------------------------------

FD_CASES = [
    # kind, spot, strike, t, r, sigma, q
    ("CE", 49.0, 50.0, 0.3846, 0.05, 0.20, 0.0),
    ("PE", 49.0, 50.0, 0.3846, 0.05, 0.20, 0.0),
    ("CE", 2500.0, 2000.0, 0.1, 0.065, 0.35, 0.02),  # in the money, with dividends
    ("PE", 2500.0, 2000.0, 0.1, 0.065, 0.35, 0.02),  # out of the money
    ("CE", 100.0, 130.0, 1.0, 0.0, 0.8, 0.05),
    ("PE", 100.0, 70.0, 2.0 / 365.0, 0.1, 0.5, 0.0),  # two days, out of the money
    ("CE", 1000.0, 1000.0, 7.0 / 365.0, 0.07, 0.15, 0.01),  # at the money, a week
]


def _central(fn: object, x: float, h: float) -> float:
    assert callable(fn)
    return float((fn(x + h) - fn(x - h)) / (2.0 * h))


@pytest.mark.parametrize(("kind", "spot", "strike", "t", "r", "sigma", "q"), FD_CASES)
def test_greeks_equal_central_differences_of_price(
    kind: str, spot: float, strike: float, t: float, r: float, sigma: float, q: float
) -> None:
    g = greeks(kind, spot, strike, t, r, sigma, q)
    hs = 1e-4 * spot

    def by_spot(x: float) -> float:
        return bs_price(kind, x, strike, t, r, sigma, q)

    def by_t(x: float) -> float:
        return bs_price(kind, spot, strike, x, r, sigma, q)

    def by_sigma(x: float) -> float:
        return bs_price(kind, spot, strike, t, r, x, q)

    def by_r(x: float) -> float:
        return bs_price(kind, spot, strike, t, x, sigma, q)

    gamma_fd = (by_spot(spot + hs) - 2.0 * by_spot(spot) + by_spot(spot - hs)) / (hs * hs)
    scale = max(spot, strike)
    assert g.delta == pytest.approx(_central(by_spot, spot, hs), abs=1e-6)
    assert g.gamma == pytest.approx(gamma_fd, abs=1e-6)
    # Theta is minus the change per unit of time to expiry, per calendar day.
    assert g.theta == pytest.approx(-_central(by_t, t, 1e-5 * t) / 365.0, abs=1e-6 * scale)
    assert g.vega == pytest.approx(_central(by_sigma, sigma, 1e-5) / 100.0, abs=1e-6 * scale)
    assert g.rho == pytest.approx(_central(by_r, r, 1e-5) / 100.0, abs=1e-6 * scale)


def test_greeks_accept_option_type_enum_and_equal_string_form() -> None:
    by_enum = greeks(OptionType.PUT, 49.0, 50.0, 0.3846, 0.05, 0.20)
    by_str = greeks("PE", 49.0, 50.0, 0.3846, 0.05, 0.20)

    assert by_enum == by_str
    assert by_enum.delta < 0.0


# --- prices: parity, bounds and limits --------------------------------------------------------


def test_put_call_parity_holds_across_random_markets() -> None:
    rng = np.random.default_rng(11)
    n = 10_000
    spot = rng.uniform(10.0, 5000.0, n)
    strike = spot * rng.uniform(0.5, 2.0, n)
    t = rng.uniform(ONE_HOUR, 2.0, n)
    r = rng.uniform(0.0, 0.1, n)
    q = rng.uniform(0.0, 0.05, n)
    sigma = rng.uniform(0.05, 1.5, n)

    call = bs_price("CE", spot, strike, t, r, sigma, q)
    put = bs_price("PE", spot, strike, t, r, sigma, q)

    parity = spot * np.exp(-q * t) - strike * np.exp(-r * t)
    np.testing.assert_allclose(call - put, parity, rtol=0, atol=1e-12 * strike.max())


def test_price_at_zero_time_is_the_payoff_and_at_zero_vol_the_forward_intrinsic() -> None:
    assert bs_price("CE", 105.0, 100.0, 0.0, 0.05, 0.3) == 5.0
    assert bs_price("PE", 105.0, 100.0, 0.0, 0.05, 0.3) == 0.0
    assert bs_price("CE", 105.0, 100.0, 0.5, 0.05, 0.0) == pytest.approx(
        105.0 - 100.0 * math.exp(-0.025), rel=1e-14
    )


@pytest.mark.parametrize(
    ("spot", "strike", "t", "sigma"),
    [(0.0, 100.0, 0.5, 0.2), (100.0, -1.0, 0.5, 0.2), (100.0, 100.0, -0.1, 0.2),
     (100.0, 100.0, 0.5, -0.2), (math.nan, 100.0, 0.5, 0.2), (100.0, 100.0, math.inf, 0.2)],
)  # fmt: skip
def test_price_of_invalid_market_is_nan(spot: float, strike: float, t: float, sigma: float) -> None:
    assert math.isnan(bs_price("CE", spot, strike, t, 0.05, sigma))


@pytest.mark.parametrize(("t", "sigma"), [(0.0, 0.2), (0.5, 0.0), (-1.0, 0.2)])
def test_greeks_at_expiry_or_zero_vol_are_nan(t: float, sigma: float) -> None:
    g = greeks("CE", 100.0, 100.0, t, 0.05, sigma)

    assert all(math.isnan(v) for v in g)


# --- option type, shapes, scalars --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["XX", "call", "ce", ""])
def test_unknown_option_type_raises_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        bs_price(bad, 100.0, 100.0, 0.5, 0.05, 0.2)


def test_unknown_option_type_in_an_array_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'call'"):
        implied_volatility([1.0, 1.0], ["CE", "call"], 100.0, 100.0, 0.5, 0.05)
    with pytest.raises(ValueError, match="None"):
        greeks(np.array(["PE", None], dtype=object), 100.0, 100.0, 0.5, 0.05, 0.2)


def test_scalar_inputs_give_python_floats() -> None:
    price = bs_price("CE", 100, 100, 0.5, 0.05, 0.2)
    iv = implied_volatility(price, "CE", 100, 100, 0.5, 0.05)
    g = greeks("CE", 100, 100, 0.5, 0.05, 0.2)

    assert type(price) is float
    assert type(iv) is float
    assert all(type(v) is float for v in g)


def test_arrays_broadcast_to_the_common_shape() -> None:
    spot = np.array([[90.0], [100.0], [110.0]])  # (3, 1)
    strike = np.array([80.0, 95.0, 105.0, 120.0])  # (4,)
    kinds = np.array(["CE", "PE", "CE", "PE"])

    price = bs_price(kinds, spot, strike, 0.25, 0.06, 0.3)
    iv = implied_volatility(price, kinds, spot, strike, 0.25, 0.06)
    g = greeks(kinds, spot, strike, 0.25, 0.06, 0.3)

    assert price.shape == (3, 4)
    assert iv.shape == (3, 4)
    assert isinstance(g, Greeks)
    assert all(v.shape == (3, 4) for v in g)
    assert price[1, 2] == bs_price("CE", 100.0, 105.0, 0.25, 0.06, 0.3)
    assert g.delta[2, 1] == greeks("PE", 110.0, 95.0, 0.25, 0.06, 0.3).delta
    np.testing.assert_allclose(iv, 0.3, rtol=0, atol=1e-12)


def test_one_element_list_gives_an_array_not_a_float() -> None:
    price = bs_price(["CE"], [100.0], 100.0, 0.5, 0.05, 0.2)

    assert isinstance(price, np.ndarray)
    assert price.shape == (1,)


# --- implied volatility ------------------------------------------------------------------------


def test_implied_volatility_of_hull_example_recovers_sigma() -> None:
    price = bs_price("CE", 42.0, 40.0, 0.5, 0.10, 0.20)

    assert implied_volatility(price, "CE", 42.0, 40.0, 0.5, 0.10) == pytest.approx(0.2, abs=1e-12)
    assert implied_volatility(4.76, OptionType.CALL, 42.0, 40.0, 0.5, 0.10) == pytest.approx(
        0.2, abs=5e-4
    )


@pytest.mark.parametrize("kind", ["CE", "PE"])
def test_implied_volatility_is_nan_outside_no_arbitrage_bounds(kind: str) -> None:
    spot, strike, t, r, q = 100.0, 90.0 if kind == "CE" else 110.0, 0.5, 0.06, 0.01
    lower = _lower_bound(kind, spot, strike, t, r, q)
    upper = _upper_bound(kind, spot, strike, t, r, q)
    assert lower > 1.0  # in the money, so below intrinsic means a positive price

    assert math.isnan(implied_volatility(lower - 0.01, kind, spot, strike, t, r, q))
    assert math.isnan(implied_volatility(upper, kind, spot, strike, t, r, q))
    assert math.isnan(implied_volatility(upper + 1.0, kind, spot, strike, t, r, q))
    assert math.isnan(implied_volatility(-1.0, kind, spot, strike, t, r, q))
    assert implied_volatility(upper * 0.999, kind, spot, strike, t, r, q) > 1.0


@pytest.mark.parametrize("price", [math.nan, math.inf])
def test_implied_volatility_of_non_finite_price_is_nan(price: float) -> None:
    assert math.isnan(implied_volatility(price, "CE", 100.0, 100.0, 0.5, 0.05))


@pytest.mark.parametrize("t", [0.0, -0.5])
def test_implied_volatility_without_time_to_expiry_is_nan(t: float) -> None:
    assert math.isnan(implied_volatility(5.0, "CE", 105.0, 100.0, t, 0.05))


def test_a_price_at_the_lower_bound_pins_no_volatility() -> None:
    # At the bound every sigma from 0 up to where the time value shows gives the same price:
    # no volatility is implied, so NaN (a 0.0 would read as a real, calm volatility).
    lower = bs_price("PE", 90.0, 100.0, 0.5, 0.05, 0.0)

    assert math.isnan(implied_volatility(lower, "PE", 90.0, 100.0, 0.5, 0.05))
    assert math.isnan(implied_volatility(0.0, "CE", 90.0, 100.0, 0.5, 0.05))


def test_a_deep_in_the_money_option_whose_time_value_is_below_float_resolution_is_nan() -> None:
    # SBIN at Rs 940 with a Rs 400 call, a day to expiry, sigma 25 %: its time value (the
    # 400 put's value, ~1e-200) is far below the ~1e-13 a price near Rs 540 can hold, so the
    # float price equals the intrinsic value and pins no volatility.
    t = 1.0 / 365.0
    price = bs_price("CE", 940.0, 400.0, t, 0.07, 0.25)
    assert price == 940.0 - 400.0 * math.exp(-0.07 * t)
    assert math.isnan(implied_volatility(price, "CE", 940.0, 400.0, t, 0.07))
    # A deep in-the-money option whose time value still shows is solved: a Rs 800 call a month
    # out at 40 % has ~Rs 0.62 of time value.
    month = 30.0 / 365.0
    held = bs_price("CE", 940.0, 800.0, month, 0.07, 0.40)
    assert implied_volatility(held, "CE", 940.0, 800.0, month, 0.07) == pytest.approx(
        0.40, abs=1e-9
    )


def _assert_round_trip(
    kind: str | np.ndarray,
    spot: float,
    strike: float | np.ndarray,
    t: float | np.ndarray,
    r: float | np.ndarray,
    sigma: float | np.ndarray,
    q: float | np.ndarray,
) -> None:
    """Price -> IV -> sigma where vega makes sigma observable, else price -> IV -> price.

    The price carries a rounding error of a few 1e-16 * max(spot, strike); the IV can only be as
    exact as that error over vega. Where vega per unit sigma is above 1e-7 * scale, that bound is
    under 1e-8 and sigma must come back to 1e-6; elsewhere the recovered IV must reprice the
    option to rounding.
    """
    price = bs_price(kind, spot, strike, t, r, sigma, q)
    iv = implied_volatility(price, kind, spot, strike, t, r, q)
    scale = np.maximum(spot, strike)
    vega_per_unit = np.asarray(greeks(kind, spot, strike, t, r, sigma, q).vega) * 100.0

    # NaN only where the time value is lost in the price's rounding (no sigma is pinned)
    lower = bs_price(kind, spot, strike, t, r, 0.0, q)
    unpinned = np.asarray(price - lower) <= 8 * np.finfo(np.float64).eps * scale
    assert np.all(np.isfinite(iv) | unpinned)
    iv = np.where(np.isfinite(iv), iv, sigma)
    repriced = bs_price(kind, spot, strike, t, r, iv, q)
    np.testing.assert_array_less(np.abs(repriced - price), 1e-13 * scale)
    observable = vega_per_unit > 1e-7 * scale
    err = np.where(observable, np.abs(iv - sigma), 0.0)
    assert np.max(err) <= 1e-6


@settings(max_examples=400)
@given(
    kind=st.sampled_from(["CE", "PE"]),
    moneyness=st.floats(0.5, 2.0),
    t=st.floats(ONE_HOUR, 1.0),
    sigma=st.floats(0.05, 1.5),
    r=st.floats(0.0, 0.1),
    q=st.floats(0.0, 0.05),
)
def test_implied_volatility_round_trips_sigma_or_price(
    kind: str, moneyness: float, t: float, sigma: float, r: float, q: float
) -> None:
    _assert_round_trip(kind, 1000.0, 1000.0 * moneyness, t, r, sigma, q)


def test_implied_volatility_round_trips_a_hundred_thousand_random_options() -> None:
    rng = np.random.default_rng(2024)
    n = 100_000
    kinds = np.where(rng.random(n) < 0.5, "CE", "PE")
    strike = 100.0 * rng.uniform(0.5, 2.0, n)
    t = np.exp(rng.uniform(math.log(ONE_HOUR), 0.0, n))
    sigma = rng.uniform(0.05, 1.5, n)

    _assert_round_trip(
        kinds, 100.0, strike, t, rng.uniform(0.0, 0.1, n), sigma, rng.uniform(0.0, 0.05, n)
    )


def test_implied_volatility_is_exact_where_vega_is_large() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    kinds = np.where(rng.random(n) < 0.5, "CE", "PE")
    strike = 1000.0 * rng.uniform(0.9, 1.1, n)
    t = rng.uniform(7.0 / 365.0, 1.0, n)
    sigma = rng.uniform(0.1, 1.0, n)
    price = bs_price(kinds, 1000.0, strike, t, 0.065, sigma, 0.01)

    iv = implied_volatility(price, kinds, 1000.0, strike, t, 0.065, 0.01)

    np.testing.assert_allclose(iv, sigma, rtol=0, atol=1e-9)


def test_implied_volatility_converges_far_outside_the_usual_range() -> None:
    rng = np.random.default_rng(99)
    n = 50_000
    kinds = np.where(rng.random(n) < 0.5, "CE", "PE")
    strike = 100.0 * np.exp(rng.uniform(-3.0, 3.0, n))
    t = np.exp(rng.uniform(math.log(1.0 / 525_600.0), math.log(30.0), n))  # a minute to 30 y
    sigma = np.exp(rng.uniform(math.log(0.001), math.log(5.0), n))
    price = bs_price(kinds, 100.0, strike, t, 0.05, sigma, 0.02)
    cap = np.where(kinds == "CE", 100.0 * np.exp(-0.02 * t), strike * np.exp(-0.05 * t))
    # With sigma * sqrt(t) above ~16 the price rounds to its cap, where no sigma is implied.
    below_upper = price < cap * (1.0 - 1e-15)

    lower = bs_price(kinds, 100.0, strike, t, 0.05, 0.0, 0.02)
    # With the time value lost in the price's rounding no sigma is pinned either (NaN).
    # (an out-of-the-money option's price is all time value: no rounding of a bound to lose it)
    rounding = 8 * np.finfo(np.float64).eps * np.maximum(100.0, strike)
    shows_time_value = (price > lower) & ((lower == 0.0) | (price - lower > rounding))
    below_upper &= shows_time_value

    iv = implied_volatility(price, kinds, 100.0, strike, t, 0.05, 0.02)

    assert np.all(np.isfinite(iv[below_upper]))
    assert below_upper.sum() > 10_000  # most of this range is priced at a bound (no IV)
    assert np.all(np.isnan(iv[price <= lower]))
    repriced = bs_price(kinds, 100.0, strike, t, 0.05, iv, 0.02)
    scale = np.maximum(100.0, strike)
    np.testing.assert_array_less(np.abs(repriced - price)[below_upper], 1e-13 * scale[below_upper])
