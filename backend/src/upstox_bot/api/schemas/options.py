"""Request and response bodies of the /options routes (option analytics, prices in rupees)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from upstox_bot.domain import OptionType


class GreeksRequest(BaseModel):
    """One European option to price: give `sigma`, or a market `price` to imply it from.

    Prices are rupees as floats: this is an analytics calculation, not an order amount.
    """

    model_config = ConfigDict(extra="forbid")

    option_type: OptionType = Field(description='"CE" (call) or "PE" (put)')
    spot: float = Field(
        gt=0, le=1e9, allow_inf_nan=False, strict=True, description="underlying price, rupees"
    )
    strike: float = Field(
        gt=0, le=1e9, allow_inf_nan=False, strict=True, description="strike price, rupees"
    )
    t_years: float = Field(
        gt=0,
        le=30,
        allow_inf_nan=False,
        strict=True,
        description="time to expiry in years (days / 365)",
    )
    r: float = Field(
        ge=-1,
        le=1,
        allow_inf_nan=False,
        strict=True,
        description="risk-free rate, continuous, 0.065 = 6.5%",
    )
    sigma: float | None = Field(
        default=None,
        gt=0,
        le=10,
        allow_inf_nan=False,
        strict=True,
        description="annual volatility, 0.2 = 20%; when given, `price` is not used",
    )
    price: float | None = Field(
        default=None,
        ge=0,
        le=1e9,
        allow_inf_nan=False,
        strict=True,
        description="option premium in rupees, used to solve the implied volatility when "
        "`sigma` is absent",
    )
    q: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        allow_inf_nan=False,
        strict=True,
        description="continuous dividend yield",
    )


class GreeksResponse(BaseModel):
    """Model price, the volatility used, and the greeks (theta per day, vega and rho per 1%)."""

    price: float = Field(description="Black-Scholes-Merton price at `iv`, rupees")
    iv: float = Field(description="annual volatility used: the given sigma or the implied one")
    delta: float = Field(description="rupees per rupee of spot")
    gamma: float = Field(description="delta per rupee of spot")
    theta: float = Field(description="rupees per calendar day")
    vega: float = Field(description="rupees per volatility percentage point")
    rho: float = Field(description="rupees per rate percentage point")
