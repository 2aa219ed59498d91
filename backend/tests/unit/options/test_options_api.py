"""POST /api/v1/options/greeks through a real FastAPI app and test client."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from upstox_bot.api.errors import install_error_handlers
from upstox_bot.api.routers.options import router
from upstox_bot.options.greeks import bs_price, greeks

with warnings.catch_warnings():
    # Starlette's test client warns at import while it runs on httpx rather than httpx2; the
    # warning is about the test tool, not about the code under test.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

URL = "/api/v1/options/greeks"
HULL = {"option_type": "CE", "spot": 42.0, "strike": 40.0, "t_years": 0.5, "r": 0.10}


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)  # the API's one error body, as create_app installs it
    app.include_router(router, prefix="/api/v1")
    return TestClient(app)


def _locs(response: Any) -> list[list[str]]:
    return [error["loc"] for error in response.json()["errors"]]


def test_greeks_with_sigma_returns_price_and_greeks(client: TestClient) -> None:
    response = client.post(URL, json={**HULL, "sigma": 0.2})

    assert response.status_code == 200
    body = response.json()
    assert body["price"] == pytest.approx(4.76, abs=0.005)
    assert body["iv"] == 0.2
    expected = greeks("CE", 42.0, 40.0, 0.5, 0.10, 0.2)
    assert [body[k] for k in ("delta", "gamma", "theta", "vega", "rho")] == list(expected)


def test_greeks_with_price_only_solves_implied_volatility_first(client: TestClient) -> None:
    market = bs_price("PE", 49.0, 50.0, 0.3846, 0.05, 0.27, 0.01)
    request = {"option_type": "PE", "spot": 49.0, "strike": 50.0, "t_years": 0.3846, "r": 0.05}

    response = client.post(URL, json={**request, "price": market, "q": 0.01})

    assert response.status_code == 200
    body = response.json()
    assert body["iv"] == pytest.approx(0.27, abs=1e-10)
    assert body["price"] == pytest.approx(market, abs=1e-12)
    assert body["delta"] == pytest.approx(greeks("PE", 49.0, 50.0, 0.3846, 0.05, 0.27, 0.01).delta)


def test_sigma_takes_precedence_over_price(client: TestClient) -> None:
    response = client.post(URL, json={**HULL, "sigma": 0.2, "price": 10.0})

    assert response.status_code == 200
    assert response.json()["iv"] == 0.2


def test_greeks_without_sigma_or_price_is_422_naming_both(client: TestClient) -> None:
    response = client.post(URL, json=HULL)

    assert response.status_code == 422
    assert _locs(response) == [["body", "sigma"], ["body", "price"]]


@pytest.mark.parametrize("price", [1.0, 42.0, 50.0])  # below intrinsic 3.95, at and above S
def test_price_outside_no_arbitrage_bounds_is_422_naming_price(
    client: TestClient, price: float
) -> None:
    response = client.post(URL, json={**HULL, "price": price})

    assert response.status_code == 422
    detail = response.json()["errors"]
    assert detail[0]["loc"] == ["body", "price"]
    assert "no-arbitrage bounds 3.9508 and 42.0000" in detail[0]["msg"]


def test_price_at_the_lower_bound_is_422_since_greeks_need_volatility(client: TestClient) -> None:
    lower = 42.0 - 40.0 * math.exp(-0.05)

    response = client.post(URL, json={**HULL, "price": lower})

    assert response.status_code == 422
    assert _locs(response) == [["body", "price"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [("option_type", "CALL"), ("spot", 0.0), ("strike", -5.0), ("t_years", 0.0), ("sigma", 0.0),
     ("price", -1.0), ("r", 5.0)],
)  # fmt: skip
def test_invalid_field_is_422_naming_it(client: TestClient, field: str, value: object) -> None:
    response = client.post(URL, json={**HULL, "sigma": 0.2, field: value})

    assert response.status_code == 422
    assert ["body", field] in _locs(response)


def test_unknown_field_is_rejected(client: TestClient) -> None:
    response = client.post(URL, json={**HULL, "sigma": 0.2, "vol": 0.3})

    assert response.status_code == 422
    assert ["body", "vol"] in _locs(response)
