"""Black-Scholes-Merton prices, greeks and implied volatility, vectorised over numpy arrays.

Conventions shared by every function here:

* `option_type` is "CE" (call) or "PE" (put): a string, an `OptionType`, or an array of them.
* `spot` and `strike` are in the same currency unit (rupees); the price comes back in that unit.
* `t` is the time to expiry in years, `r` the continuously compounded risk-free rate, `q` the
  continuous dividend yield (Merton) and `sigma` the annual volatility, all as fractions
  (0.2 = 20%).
* The options are European, as NSE stock and index options are.
* Arguments broadcast against each other like numpy arrays. When every argument is a scalar (or a
  0-d array) the result is a Python float; otherwise it is a float64 array of the broadcast shape.
* Degenerate or invalid inputs (non-positive spot or strike, negative time or volatility,
  non-finite numbers) give NaN in their element rather than an exception, so that one bad row
  never sinks a whole option chain. Only an unknown `option_type` raises.

A price is computed as the intrinsic value max(±(S e^-qt - K e^-rt), 0) plus the time value of
the out-of-the-money option of the same strike (put-call parity), so the time value is never the
difference of two large terms and a price never falls below its no-arbitrage lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar, overload

import numpy as np
import numpy.typing as npt
from scipy.special import erfcx, ndtr, ndtri

FloatArray = npt.NDArray[np.float64]
OptionTypeLike = str | Sequence[str] | npt.NDArray[np.str_] | npt.NDArray[np.object_]

ValueT = TypeVar("ValueT", float, FloatArray)

DAYS_PER_YEAR = 365.0  # theta is quoted per calendar day
PER_POINT = 100.0  # vega and rho are quoted per one percentage point of sigma or r

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_LN_SQRT_2PI = math.log(_SQRT_2PI)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)

# Halley's method converges cubically: once a step is this small relative to the iterate, the
# error left after taking it is of order its cube, far below double precision, so it stops there.
_STEP_TOLERANCE = 1e-6
_BRACKET_TOLERANCE = 4e-16  # a bisection bracket this narrow (relative) has converged
_MAX_ITERATIONS = 100  # bisection fallback halves the bracket; 100 steps is far beyond need


class Greeks(NamedTuple, Generic[ValueT]):
    """Sensitivities of one option price (or of each element of an array of them).

    Attributes:
        delta: change of price per unit change of spot.
        gamma: change of delta per unit change of spot.
        theta: change of price per calendar day that passes (annual theta / 365); usually < 0.
        vega: change of price per one percentage point of volatility (per-unit vega / 100).
        rho: change of price per one percentage point of the risk-free rate (per-unit rho / 100).
    """

    delta: ValueT
    gamma: ValueT
    theta: ValueT
    vega: ValueT
    rho: ValueT


@overload
def bs_price(
    option_type: str, spot: float, strike: float, t: float, r: float, sigma: float, q: float = 0.0
) -> float: ...
@overload
def bs_price(
    option_type: OptionTypeLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
    q: npt.ArrayLike = 0.0,
) -> FloatArray: ...
def bs_price(
    option_type: OptionTypeLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
    q: npt.ArrayLike = 0.0,
) -> float | FloatArray:
    """Return the Black-Scholes-Merton price of European options.

    Args:
        option_type: "CE" or "PE", or an array of them.
        spot: underlying price (> 0).
        strike: strike price (> 0), same unit as spot.
        t: time to expiry in years (>= 0; at 0 the price is the payoff at expiry).
        r: continuously compounded risk-free rate, e.g. 0.065.
        sigma: annual volatility (>= 0; at 0 the price is max(±(S e^-qt - K e^-rt), 0)).
        q: continuous dividend yield.

    Returns:
        The price in the unit of spot: a float for scalar inputs, else an array; NaN where an
        input is invalid.

    Raises:
        ValueError: an option type is neither "CE" nor "PE".
    """
    scalar, shape, sign, (s0, k, tt, rr, vol, qq) = _broadcast(
        option_type, spot, strike, t, r, sigma, q
    )
    with np.errstate(all="ignore"):
        valid = _valid_market(s0, k, tt, rr, qq) & (tt >= 0.0) & (vol >= 0.0) & np.isfinite(vol)
        spot_pv, strike_pv, x = _present_values(s0, k, tt, rr, qq)
        intrinsic = np.maximum(sign * (spot_pv - strike_pv), 0.0)
        s = vol * np.sqrt(tt)
        half = 0.5 * s
        h = -np.abs(x) / s
        smaller = np.minimum(spot_pv, strike_pv)
        larger = np.maximum(spot_pv, strike_pv)
        time_value = smaller * ndtr(h + half) - larger * ndtr(h - half)
        time_value = np.where(s > 0.0, np.maximum(time_value, 0.0), 0.0)
        price = np.where(valid, intrinsic + time_value, np.nan)
    return _result(price, scalar, shape)


@overload
def greeks(
    option_type: str, spot: float, strike: float, t: float, r: float, sigma: float, q: float = 0.0
) -> Greeks[float]: ...
@overload
def greeks(
    option_type: OptionTypeLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
    q: npt.ArrayLike = 0.0,
) -> Greeks[FloatArray]: ...
def greeks(
    option_type: OptionTypeLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    sigma: npt.ArrayLike,
    q: npt.ArrayLike = 0.0,
) -> Greeks[float] | Greeks[FloatArray]:
    """Return delta, gamma, theta (per day), vega and rho (per percentage point).

    Args are those of `bs_price`, except that `t` and `sigma` must be > 0: at expiry or at zero
    volatility the greeks are step functions of spot, and this returns NaN for them.

    Returns:
        A `Greeks` of floats for scalar inputs, else of arrays of the broadcast shape.

    Raises:
        ValueError: an option type is neither "CE" nor "PE".
    """
    scalar, shape, sign, (s0, k, tt, rr, vol, qq) = _broadcast(
        option_type, spot, strike, t, r, sigma, q
    )
    with np.errstate(all="ignore"):
        valid = _valid_market(s0, k, tt, rr, qq) & (tt > 0.0) & (vol > 0.0) & np.isfinite(vol)
        sqrt_t = np.sqrt(tt)
        s = vol * sqrt_t
        x = np.log(s0 / k) + (rr - qq) * tt
        d1 = x / s + 0.5 * s
        d2 = d1 - s
        div_discount = np.exp(-qq * tt)
        discount = np.exp(-rr * tt)
        pdf_d1 = np.exp(-0.5 * d1 * d1) / _SQRT_2PI
        cdf_d1 = ndtr(sign * d1)
        cdf_d2 = ndtr(sign * d2)
        spot_pdf = s0 * div_discount * pdf_d1
        delta = sign * div_discount * cdf_d1
        gamma = div_discount * pdf_d1 / (s0 * s)
        vega = spot_pdf * sqrt_t
        theta = (
            -spot_pdf * vol / (2.0 * sqrt_t)
            - sign * rr * k * discount * cdf_d2
            + sign * qq * s0 * div_discount * cdf_d1
        )
        rho = sign * k * tt * discount * cdf_d2
        values = (delta, gamma, theta / DAYS_PER_YEAR, vega / PER_POINT, rho / PER_POINT)
        delta, gamma, theta, vega, rho = (np.where(valid, v, np.nan) for v in values)
    if scalar:
        return Greeks(
            float(delta[0]), float(gamma[0]), float(theta[0]), float(vega[0]), float(rho[0])
        )
    return Greeks(
        delta.reshape(shape),
        gamma.reshape(shape),
        theta.reshape(shape),
        vega.reshape(shape),
        rho.reshape(shape),
    )


@overload
def implied_volatility(
    price: float, option_type: str, spot: float, strike: float, t: float, r: float, q: float = 0.0
) -> float: ...
@overload
def implied_volatility(
    price: npt.ArrayLike,
    option_type: OptionTypeLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike = 0.0,
) -> FloatArray: ...
def implied_volatility(
    price: npt.ArrayLike,
    option_type: OptionTypeLike,
    spot: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    r: npt.ArrayLike,
    q: npt.ArrayLike = 0.0,
) -> float | FloatArray:
    """Return the volatility at which `bs_price` equals `price`.

    A European option's price must lie in [lower, upper): lower is the discounted forward
    intrinsic value max(±(S e^-qt - K e^-rt), 0), reached as sigma -> 0, and upper is S e^-qt for
    a call and K e^-rt for a put, reached as sigma -> infinity. A price that pins no volatility
    gives NaN, not 0: one at the lower bound, or within the float rounding of the bound (a deep
    in-the-money option whose time value is below the resolution of its price, for which every
    small sigma gives the same float), as do a price outside the bounds, a non-finite price, and
    t <= 0.

    The solver works on the normalised time value of the out-of-the-money option of the same
    strike: from an asymptotic initial guess it takes Halley steps on ln(price) (low branch) or on
    ln(upper bound - price) (high branch), over which both are nearly linear, kept inside a
    bisection bracket, two to four steps for most options. Sigma comes back as exactly as the
    price determines it: its error is about the price's rounding error over vega, roughly
    1e-16 * price / vega (per unit of sigma), so ~1e-14 at the money. Where the time value is
    tiny next to the price (deep in or out of the money, hours to expiry) vega is ~0 and many
    sigmas give the same float price; the answer is then one of them, and the price it gives
    back matches the input to rounding.

    Args:
        price: option premium, same unit as spot.
        option_type: "CE" or "PE", or an array of them.
        spot: underlying price (> 0).
        strike: strike price (> 0).
        t: time to expiry in years (> 0).
        r: continuously compounded risk-free rate.
        q: continuous dividend yield.

    Returns:
        The annual implied volatility: a float for scalar inputs, else an array; NaN where
        no volatility reproduces the price.

    Raises:
        ValueError: an option type is neither "CE" nor "PE".
    """
    scalar, shape, sign, (p, s0, k, tt, rr, qq) = _broadcast(
        option_type, price, spot, strike, t, r, q
    )
    sigma = np.full(p.shape, np.nan)
    with np.errstate(all="ignore"):
        spot_pv, strike_pv, x = _present_values(s0, k, tt, rr, qq)
        lower = np.maximum(sign * (spot_pv - strike_pv), 0.0)
        upper = np.where(sign > 0.0, spot_pv, strike_pv)
        valid = (
            _valid_market(s0, k, tt, rr, qq)
            & (tt > 0.0)
            & np.isfinite(p)
            & np.isfinite(upper)
            & (p >= lower)
            & (p < upper)
        )
        # The bound itself comes from S e^-qt - K e^-rt: its rounding error is a few ulps of the
        # larger term. A time value within that pins no volatility (NaN stays).
        resolution = _UNPINNED_ULPS * np.finfo(np.float64).eps * np.maximum(spot_pv, strike_pv)
        pinned = (p - lower) > np.where(lower > 0.0, resolution, 0.0)
        todo = np.flatnonzero(valid & pinned)
        if todo.size:
            scale = np.sqrt(spot_pv[todo]) * np.sqrt(strike_pv[todo])
            beta = (p[todo] - lower[todo]) / scale
            gap = (upper[todo] - p[todo]) / scale
            s = _normalised_volatility(-np.abs(x[todo]), beta, gap)
            sigma[todo] = s / np.sqrt(tt[todo])
    return _result(sigma, scalar, shape)


_UNPINNED_ULPS = 4.0  # a time value within this many ulps of the bound is rounding, not value


def _broadcast(
    option_type: OptionTypeLike, *values: npt.ArrayLike
) -> tuple[bool, tuple[int, ...], FloatArray, tuple[FloatArray, ...]]:
    sign = _option_sign(option_type)
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    scalar = sign.ndim == 0 and all(a.ndim == 0 for a in arrays)
    broadcast = np.broadcast_arrays(sign, *arrays)
    shape = broadcast[0].shape
    flat = tuple(np.ravel(a).astype(np.float64, copy=False) for a in broadcast)
    return scalar, shape, flat[0], flat[1:]


def _option_sign(option_type: OptionTypeLike) -> FloatArray:
    kinds = np.asarray(option_type)
    if kinds.dtype.kind not in "UO":
        raise ValueError(f"option_type must be 'CE' or 'PE', got {option_type!r}")
    is_call = kinds == "CE"
    is_put = kinds == "PE"
    bad = ~(is_call | is_put)
    if bad.any():
        first_bad = kinds[bad].tolist()[0]
        raise ValueError(f"option_type must be 'CE' or 'PE', got {first_bad!r}")
    return np.where(is_call, 1.0, -1.0)


def _result(values: FloatArray, scalar: bool, shape: tuple[int, ...]) -> float | FloatArray:
    if scalar:
        return float(values[0])
    return values.reshape(shape)


def _valid_market(
    spot: FloatArray, strike: FloatArray, t: FloatArray, r: FloatArray, q: FloatArray
) -> npt.NDArray[np.bool_]:
    finite = np.isfinite(spot) & np.isfinite(strike) & np.isfinite(t)
    return finite & np.isfinite(r) & np.isfinite(q) & (spot > 0.0) & (strike > 0.0)


def _present_values(
    spot: FloatArray, strike: FloatArray, t: FloatArray, r: FloatArray, q: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """S e^-qt, K e^-rt and the log-moneyness ln(F/K) (shared by price and IV)."""
    spot_pv = spot * np.exp(-q * t)
    strike_pv = strike * np.exp(-r * t)
    log_moneyness = np.log(spot / strike) + (r - q) * t
    return spot_pv, strike_pv, log_moneyness


def _normalised_volatility(x: FloatArray, beta: FloatArray, gap: FloatArray) -> FloatArray:
    """Total volatility s = sigma * sqrt(t) of out-of-the-money calls in normalised units.

    With x = ln(F/K) <= 0 the normalised call value is b(s) = e^(x/2) N(x/s + s/2) -
    e^(-x/2) N(x/s - s/2), increasing from 0 to b_max = e^(x/2). `beta` is the target b and
    `gap` = b_max - beta, both > 0. b is convex below s_c = sqrt(-2x) and concave above it, so
    the two sides are solved separately, each over its own bracket.
    """
    s_c = np.sqrt(-2.0 * x)
    # b(s_c) through erfcx: at s_c, x/s + s/2 = 0 and (x/s)^2/2 + s^2/8 = -x/2.
    diff_c = 1.0 - erfcx(s_c * _SQRT_HALF)
    b_c = 0.5 * np.exp(0.5 * x) * diff_c
    low = beta < b_c
    s = np.empty_like(x)
    s[low] = _solve_low(x[low], beta[low], diff_c[low])
    s[~low] = _solve_high(x[~low], gap[~low])
    return s


def _solve_low(x: FloatArray, beta: FloatArray, diff_c: FloatArray) -> FloatArray:
    """Solve b(s) = beta for s < s_c, iterating on y = x^2 / (2 s^2).

    In y, ln b(y) = -y - x^2/(16 y) - 1.5 ln(2y) + ln|x| - ln sqrt(2 pi) + O(1/y): nearly linear,
    so Halley's method on ln b(y) - ln beta converges in a few steps. Far below s_c (y > 2) the
    start is that asymptote solved for y; nearer s_c it is the root of the Taylor cubic of b
    about its inflection point, b(s_c + d) ~ b_c + b'(s_c) (d - d^3 / 6). ln b is evaluated
    through erfcx, which neither underflows nor loses the tail. `diff_c` is the erfcx
    difference at s_c (see `_normalised_volatility`).
    """
    abs_x = -x
    ln_beta = np.log(beta)
    y_c = 0.25 * abs_x  # y at s_c
    y_first = -ln_beta
    asymptotic = y_first - abs_x * abs_x / (16.0 * y_first) - 1.5 * np.log(2.0 * y_first)
    asymptotic += np.log(abs_x) - _LN_SQRT_2PI
    s_c = np.sqrt(2.0 * abs_x)
    vega_c = np.exp(0.5 * x) / _SQRT_2PI
    w = beta / vega_c - 0.5 * _SQRT_2PI * diff_c  # (beta - b_c) / b'(s_c), < 0
    d = w
    for _ in range(4):  # Newton on d - d^3/6 = w from d = w; monotone, no special functions
        d = d - (d - d * d * d / 6.0 - w) / (1.0 - 0.5 * d * d)
    s_cubic = s_c + d
    from_cubic = abs_x * abs_x / (2.0 * s_cubic * s_cubic)
    guess = np.where((asymptotic > 2.0) | ~(s_cubic > 0.0), asymptotic, from_cubic)
    y = np.where(np.isfinite(guess) & (guess > y_c), guess, y_c)
    y_lo = y_c.copy()  # b(y_lo) >= beta
    y_hi = np.full_like(y, np.inf)  # b(y_hi) <= beta
    active = np.arange(y.size)
    for _ in range(_MAX_ITERATIONS):
        if active.size == 0:
            break
        ya = y[active]
        xa = x[active]
        s = abs_x[active] / np.sqrt(2.0 * ya)
        half = 0.5 * s
        h = xa / s
        # b = exp(-(h^2 + t^2)/2) * (erfcx(-(h+t)/sqrt2) - erfcx(-(h-t)/sqrt2)) / 2, t = s/2.
        diff = erfcx(-(h + half) * _SQRT_HALF) - erfcx(-(h - half) * _SQRT_HALF)
        ln_b = -ya - 0.5 * half * half + np.log(0.5 * diff)
        d_ln_b = _SQRT_2_OVER_PI / diff  # b'(s)/b
        d2_ln_b = d_ln_b * (xa * xa / (s * s * s) - 0.25 * s) - d_ln_b * d_ln_b
        ds = -s / (2.0 * ya)
        d2s = 3.0 * s / (4.0 * ya * ya)
        f = ln_b - ln_beta[active]
        f1 = d_ln_b * ds
        f2 = d2_ln_b * ds * ds + d_ln_b * d2s
        lo, hi = y_lo[active], y_hi[active]
        # ln b falls as y grows: a value above target means the root lies at larger y.
        lo = np.where(f > 0.0, ya, lo)
        hi = np.where(f < 0.0, ya, hi)
        y_lo[active], y_hi[active] = lo, hi
        bisect = np.where(np.isfinite(hi), 0.5 * (lo + hi), lo + np.maximum(lo, 1.0))
        y_next, done = _halley_step(ya, f, f1, f2, lo, hi, bisect)
        y[active] = y_next
        active = active[~done]
    return abs_x / np.sqrt(2.0 * y)


def _solve_high(x: FloatArray, gap: FloatArray) -> FloatArray:
    """Solve b_max - b(s) = gap for s >= s_c, with Halley's method on ln(b_max - b(s)).

    b_max - b(s) = e^(x/2) N(-x/s - s/2) + e^(-x/2) N(x/s - s/2), a sum of two tails, so it keeps
    full precision up to the upper price bound. At the money (x = 0) it is 2 N(-s/2) and the
    initial guess -2 N^-1(gap / (e^(x/2) + e^(-x/2))) is exact.
    """
    e_plus = np.exp(0.5 * x)
    e_minus = 1.0 / e_plus
    ln_gap = np.log(gap)
    s_c = np.sqrt(-2.0 * x)
    guess = -2.0 * ndtri(gap / (e_plus + e_minus))
    s = np.where(np.isfinite(guess) & (guess > s_c), guess, np.maximum(s_c, 1e-8))
    s_lo = s_c.copy()  # remaining value >= gap
    s_hi = np.full_like(s, np.inf)  # remaining value <= gap
    active = np.arange(s.size)
    for _ in range(_MAX_ITERATIONS):
        if active.size == 0:
            break
        sa = s[active]
        xa = x[active]
        half = 0.5 * sa
        h = xa / sa
        remaining = e_plus[active] * ndtr(-h - half) + e_minus[active] * ndtr(h - half)
        vega = np.exp(-0.5 * (h * h + half * half)) / _SQRT_2PI
        f = np.log(remaining) - ln_gap[active]
        f1 = -vega / remaining
        f2 = -vega * (xa * xa / (sa * sa * sa) - 0.25 * sa) / remaining - f1 * f1
        lo, hi = s_lo[active], s_hi[active]
        # The remaining value falls as s grows: above target means the root lies at larger s.
        lo = np.where(f > 0.0, sa, lo)
        hi = np.where(f < 0.0, sa, hi)
        s_lo[active], s_hi[active] = lo, hi
        bisect = np.where(np.isfinite(hi), 0.5 * (lo + hi), lo + np.maximum(lo, 1.0))
        s_next, done = _halley_step(sa, f, f1, f2, lo, hi, bisect)
        s[active] = s_next
        active = active[~done]
    return s


def _halley_step(
    z: FloatArray,
    f: FloatArray,
    f1: FloatArray,
    f2: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    bisect: FloatArray,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """One safeguarded Halley step: the next iterate and whether the element has converged."""
    newton = -f / f1
    step = newton / (1.0 + 0.5 * newton * f2 / f1)
    step = np.where(np.isfinite(step), step, newton)
    z_next = z + step
    inside = (z_next >= lo) & (z_next <= hi)  # False for NaN
    small = inside & (np.abs(step) <= _STEP_TOLERANCE * np.abs(z))
    done = (f == 0.0) | small | (hi - lo <= _BRACKET_TOLERANCE * np.abs(z))
    z_next = np.where(f == 0.0, z, np.where(inside, z_next, bisect))
    return z_next, done
