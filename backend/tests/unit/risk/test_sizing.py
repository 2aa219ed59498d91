from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upstox_bot.domain import RiskRule
from upstox_bot.risk.sizing import size_position


def test_size_when_stop_is_tight_caps_at_30_pct() -> None:
    sizing = size_position(
        price_paise=10_000,
        stop_paise=9_500,
        lot_size=1,
        risk_budget_paise=500_000,
        max_position_value_paise=3_000_000,
        available_paise=10_000_000,
    )
    assert (sizing.quantity, sizing.binding_rule) == (300, RiskRule.POSITION_SIZE)


def test_stop_equal_to_price_is_an_error() -> None:
    with pytest.raises(ValueError, match="stop"):
        size_position(
            price_paise=100,
            stop_paise=100,
            lot_size=1,
            risk_budget_paise=1,
            max_position_value_paise=1,
            available_paise=1,
        )


@given(
    price=st.integers(100, 5_000_000),
    stop_gap=st.integers(1, 1_000_000),
    lot=st.integers(1, 5_000),
    budget=st.integers(0, 10_000_000),
    cap=st.integers(0, 50_000_000),
    cash=st.integers(-1_000, 50_000_000),
)
def test_size_never_breaks_a_cap(
    price: int, stop_gap: int, lot: int, budget: int, cap: int, cash: int
) -> None:
    stop = max(price - stop_gap, 1) if price - stop_gap != price else price - 1
    if stop == price:
        return
    sizing = size_position(
        price_paise=price,
        stop_paise=stop,
        lot_size=lot,
        risk_budget_paise=budget,
        max_position_value_paise=cap,
        available_paise=cash,
    )
    assert sizing.quantity == sizing.lots * lot
    assert sizing.quantity * abs(price - stop) <= budget
    assert sizing.quantity * price <= cap
    assert sizing.quantity * price <= max(cash, 0)
