"""Implied volatility and greeks on option ticks: the feed's when present, computed otherwise."""

from __future__ import annotations

import math
from dataclasses import replace

from upstox_bot.domain import Instrument, InstrumentKind, Tick
from upstox_bot.options.greeks import greeks, implied_volatility


def greeks_for_tick(
    tick: Tick,
    option: Instrument,
    *,
    spot_paise: int,
    t: float,
    r: float,
    q: float = 0.0,
) -> Tick:
    """Return `tick` with its missing IV and greeks filled in from Black-Scholes.

    Values the feed sent are kept as they are; only None fields are filled. When the tick has no
    IV, it is implied from the last price; the greeks use the feed's IV when it has one. Fields
    that cannot be computed (no price or spot, expired, a price outside the no-arbitrage bounds)
    stay None. The units are those of `options.greeks`: IV a fraction (0.2 = 20 %), theta per
    calendar day, vega and rho per percentage point, in rupees per share.

    Args:
        tick: a tick of `option`.
        option: the option instrument (strike and type).
        spot_paise: the underlying's last price.
        t: years to expiry (see `options.chain.years_to_expiry`).
        r: continuously compounded risk-free rate (0.07 = 7 %).
        q: continuous dividend yield.

    Returns:
        The same tick object when nothing was missing or nothing could be computed, else a copy.

    Raises:
        ValueError: `option` is not an option with a strike and type, or is not the tick's.
    """
    if (
        option.kind is not InstrumentKind.OPTION
        or option.strike_paise is None
        or option.option_type is None
    ):
        raise ValueError(f"{option.instrument_key} is not an option with a strike and type")
    if option.instrument_key != tick.instrument_key:
        raise ValueError(f"tick of {tick.instrument_key} given with {option.instrument_key}")
    missing = [
        name
        for name in ("iv", "delta", "gamma", "theta", "vega", "rho")
        if getattr(tick, name) is None
    ]
    if not missing or tick.ltp_paise <= 0 or spot_paise <= 0 or not t > 0:
        return tick
    kind = option.option_type.value
    spot = spot_paise / 100
    strike = option.strike_paise / 100
    sigma = tick.iv
    if sigma is None:
        sigma = implied_volatility(tick.ltp_paise / 100, kind, spot, strike, t, r, q)
    if not math.isfinite(sigma) or sigma <= 0:
        return tick
    computed = greeks(kind, spot, strike, t, r, sigma, q)
    values: dict[str, float] = {"iv": sigma, **computed._asdict()}
    filled = {name: values[name] for name in missing if math.isfinite(values[name])}
    return replace(tick, **filled) if filled else tick  # type: ignore[arg-type]
