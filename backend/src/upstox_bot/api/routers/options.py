"""Option analytics routes: Black-Scholes-Merton price, greeks and implied volatility."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, status

from upstox_bot.api.routing import GuardedRoute
from upstox_bot.api.schemas.options import GreeksRequest, GreeksResponse
from upstox_bot.options.greeks import bs_price, greeks, implied_volatility

router = APIRouter(prefix="/options", tags=["options"], route_class=GuardedRoute)

_UNPROCESSABLE = status.HTTP_422_UNPROCESSABLE_CONTENT


@router.post("/greeks", response_model=GreeksResponse)
def post_greeks(body: GreeksRequest) -> GreeksResponse:
    """Price one option and return its greeks, implying the volatility from `price` if needed.

    Raises:
        HTTPException: 422 naming `sigma` and `price` when neither is given, naming `price` when
            it lies outside the no-arbitrage bounds, or naming the body when the inputs are too
            extreme to give finite numbers.
    """
    kind = body.option_type.value
    sigma = body.sigma
    if sigma is None:
        if body.price is None:
            msg = "give sigma, or price to solve the implied volatility from"
            raise HTTPException(
                _UNPROCESSABLE,
                detail=[
                    {"loc": ["body", field], "msg": msg, "type": "missing"}
                    for field in ("sigma", "price")
                ],
            )
        sigma = implied_volatility(
            body.price, kind, body.spot, body.strike, body.t_years, body.r, body.q
        )
        if not sigma > 0.0:  # NaN: outside the bounds, or a price that pins no volatility
            raise HTTPException(_UNPROCESSABLE, detail=[_price_bounds_error(body, body.price)])
    price = bs_price(kind, body.spot, body.strike, body.t_years, body.r, sigma, body.q)
    g = greeks(kind, body.spot, body.strike, body.t_years, body.r, sigma, body.q)
    values = (price, sigma, *g)
    if not all(math.isfinite(v) for v in values):
        raise HTTPException(
            _UNPROCESSABLE,
            detail=[
                {
                    "loc": ["body"],
                    "msg": "inputs too extreme to give finite price and greeks",
                    "type": "value_error",
                }
            ],
        )
    return GreeksResponse(
        price=price,
        iv=sigma,
        delta=g.delta,
        gamma=g.gamma,
        theta=g.theta,
        vega=g.vega,
        rho=g.rho,
    )


def _price_bounds_error(body: GreeksRequest, price: float) -> dict[str, object]:
    kind = body.option_type.value
    # At zero volatility the price is its lower bound, the discounted forward intrinsic value.
    lower = bs_price(kind, body.spot, body.strike, body.t_years, body.r, 0.0, body.q)
    if kind == "CE":
        upper = body.spot * math.exp(-body.q * body.t_years)
    else:
        upper = body.strike * math.exp(-body.r * body.t_years)
    msg = (
        f"price {price:.4f} must lie strictly between the no-arbitrage bounds "
        f"{lower:.4f} and {upper:.4f} for these inputs"
    )
    if lower < price < upper:
        msg = (
            f"price {price:.4f} is its intrinsic value {lower:.4f} to within the precision of "
            "the numbers: no volatility is implied (deep in the money, its time value is lost)"
        )
    return {"loc": ["body", "price"], "msg": msg, "type": "value_error"}
