"""Implied volatility throughput and accuracy: ours against py_vollib_vectorized and brentq.

Run from backend/: `python benchmarks/bench_implied_volatility.py`. It builds 100,000 seeded
random European options, prices them with `bs_price`, and solves their volatility back with
`implied_volatility` (best of 5 runs, one thread), with py_vollib_vectorized (Jaeckel's "Let's be
rational", numba-compiled; an optional install, only for this benchmark) and with
scipy.optimize.brentq one option at a time on a 2,000-option subset, whose per-option rate is
extrapolated. Errors are against the true sigma, over the options whose sigma the price pins down
(vega per unit sigma above 1e-7 * max(spot, strike)); elsewhere many sigmas give the same float
price and "the" volatility is not defined to 1e-6.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq

try:
    from upstox_bot.options.greeks import bs_price, greeks, implied_volatility
except ImportError:  # not installed: run from the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from upstox_bot.options.greeks import bs_price, greeks, implied_volatility

FloatArray = npt.NDArray[np.float64]

N_OPTIONS = 100_000
N_BRENTQ = 2_000
SEED = 20_240_601
ONE_HOUR = 1.0 / (365.0 * 24.0)
REFERENCE_INSTALL = (
    "pip install py_vollib_vectorized==0.1.1 py_vollib==1.0.1 py_lets_be_rational==1.0.1"
)


@dataclass(frozen=True, slots=True)
class Options:
    """A batch of options with their true volatility and model price."""

    kinds: npt.NDArray[np.str_]
    spot: FloatArray
    strike: FloatArray
    t: FloatArray
    r: FloatArray
    q: FloatArray
    sigma: FloatArray
    price: FloatArray
    observable: npt.NDArray[np.bool_]


def make_options(scenario: str, n: int, rng: np.random.Generator) -> Options:
    """Build `n` random options: "wide" is the test suite's range, "chain" a near-money chain."""
    kinds = np.where(rng.random(n) < 0.5, "CE", "PE")
    spot = rng.uniform(100.0, 5000.0, n)
    if scenario == "wide":
        strike = spot * rng.uniform(0.5, 2.0, n)
        t = np.exp(rng.uniform(math.log(ONE_HOUR), 0.0, n))
        sigma = rng.uniform(0.05, 1.5, n)
    else:
        strike = spot * rng.uniform(0.8, 1.2, n)
        t = rng.uniform(1.0 / 365.0, 0.25, n)
        sigma = rng.uniform(0.1, 0.8, n)
    r = rng.uniform(0.0, 0.1, n)
    q = rng.uniform(0.0, 0.05, n)
    price = bs_price(kinds, spot, strike, t, r, sigma, q)
    vega_per_unit = greeks(kinds, spot, strike, t, r, sigma, q).vega * 100.0
    observable = vega_per_unit > 1e-7 * np.maximum(spot, strike)
    return Options(kinds, spot, strike, t, r, q, sigma, price, observable)


def best_rate(solve: Callable[[], FloatArray], n: int, repeats: int) -> tuple[float, FloatArray]:
    """Options per second of the fastest of `repeats` runs, and the last result."""
    best = math.inf
    result = solve()
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve()
        best = min(best, time.perf_counter() - start)
    return n / best, result


def ours(options: Options) -> Callable[[], FloatArray]:
    """Our vectorised solver over the whole batch."""
    o = options
    return lambda: implied_volatility(o.price, o.kinds, o.spot, o.strike, o.t, o.r, o.q)


def vollib(options: Options) -> Callable[[], FloatArray] | None:
    """py_vollib_vectorized over the whole batch, or None when it is not installed."""
    try:
        import py_vollib_vectorized as pvv  # type: ignore[import-not-found]
    except ImportError:
        return None
    o = options
    flags = np.where(o.kinds == "CE", "c", "p")

    def solve() -> FloatArray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns for every price at its bounds
            iv = pvv.vectorized_implied_volatility(
                o.price, o.spot, o.strike, o.t, o.r, flags, q=o.q,
                model="black_scholes_merton", return_as="numpy", on_error="ignore",
            )  # fmt: skip
        return np.asarray(iv, dtype=np.float64).ravel()

    return solve


def scalar_bsm_price(
    kind: str, s: float, k: float, t: float, r: float, vol: float, q: float
) -> float:
    """Textbook Black-Scholes-Merton price of one option with `math` only (brentq's model)."""
    root_t = vol * math.sqrt(t)
    d1 = (math.log(s / k) + (r - q + 0.5 * vol * vol) * t) / root_t
    d2 = d1 - root_t
    sign = 1.0 if kind == "CE" else -1.0
    spot_pv = s * math.exp(-q * t) * 0.5 * math.erfc(-sign * d1 / math.sqrt(2.0))
    strike_pv = k * math.exp(-r * t) * 0.5 * math.erfc(-sign * d2 / math.sqrt(2.0))
    return sign * (spot_pv - strike_pv)


def brentq_one_by_one(options: Options, n: int) -> Callable[[], FloatArray]:
    """scipy's brentq on each of the first `n` options, between sigma 1e-6 and 10."""
    o = options
    rows: list[tuple[str, float, float, float, float, float, float]] = [
        (str(o.kinds[i]), float(o.spot[i]), float(o.strike[i]), float(o.t[i]), float(o.r[i]),
         float(o.q[i]), float(o.price[i]))
        for i in range(n)
    ]  # fmt: skip

    def solve() -> FloatArray:
        out = np.full(n, np.nan)
        for i, (kind, s, k, t, r, q, target) in enumerate(rows):

            def f(vol: float) -> float:
                return scalar_bsm_price(kind, s, k, t, r, vol, q) - target  # noqa: B023

            with contextlib.suppress(ValueError):  # no sign change: price doesn't pin sigma
                out[i] = brentq(f, 1e-6, 10.0, xtol=1e-12, rtol=1e-15)
        return out

    return solve


def report(name: str, iv: FloatArray, options: Options, n: int) -> str:
    """Accuracy line of one solver against the true sigma."""
    observable = options.observable[:n]
    err = np.abs(iv - options.sigma[:n])[observable]
    failed = int(np.count_nonzero(~np.isfinite(err)))
    worst = float(np.nanmax(err)) if err.size else math.nan
    return (
        f"  {name}: max |iv - sigma| {worst:.2e} over {observable.sum():,} options whose price "
        f"pins sigma; {failed} of those failed (NaN)"
    )


def main() -> None:
    """Run both scenarios and print the figures."""
    rng = np.random.default_rng(SEED)
    print(f"implied volatility of {N_OPTIONS:,} options, one core, best of 5")
    for scenario in ("wide", "chain"):
        options = make_options(scenario, N_OPTIONS, rng)
        our_rate, our_iv = best_rate(ours(options), N_OPTIONS, repeats=5)
        brent_rate, brent_iv = best_rate(brentq_one_by_one(options, N_BRENTQ), N_BRENTQ, 1)
        print(f"[{scenario}]")
        ref = vollib(options)
        if ref is None:
            print(f"  baseline py_vollib_vectorized is not installed: {REFERENCE_INSTALL}")
        else:
            ref_rate, ref_iv = best_rate(ref, N_OPTIONS, repeats=3)
            print(
                f"  ours: {our_rate:,.0f}/s, baseline py_vollib_vectorized: {ref_rate:,.0f}/s, "
                f"ratio {our_rate / ref_rate:.2f}"
            )
        print(
            f"  ours: {our_rate:,.0f}/s, baseline scipy brentq per option "
            f"({N_BRENTQ:,} options, extrapolated): {brent_rate:,.0f}/s, "
            f"ratio {our_rate / brent_rate:.0f}"
        )
        print(report("ours", our_iv, options, N_OPTIONS))
        if ref is not None:
            print(report("py_vollib_vectorized", ref_iv, options, N_OPTIONS))
        print(report("brentq", brent_iv, options, N_BRENTQ))


if __name__ == "__main__":
    main()
