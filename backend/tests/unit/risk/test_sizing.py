from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upstox_bot.domain import RiskRule
from upstox_bot.risk.sizing import size_position, worst_fill_paise


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


def test_worst_fill_is_the_slipped_price_up_to_the_tick_plus_one_tick() -> None:
    # Rs 159.62 slipped by 5 bps: 15,962 x 1.0005 = 15,969.981 paise, up to the 5-paise tick
    # 15,970, plus one tick of room: 15,975.
    assert worst_fill_paise(15_962, slippage_bps=Decimal(5), tick_paise=5) == 15_975
    # no slippage: the price on its tick plus one tick
    assert worst_fill_paise(10_000, slippage_bps=Decimal(0), tick_paise=5) == 10_005
    # an option at Rs 1.20 with a 5-paise tick: 120 x 1.0005 = 120.06, up to 125, plus 5 = 130
    assert worst_fill_paise(120, slippage_bps=Decimal(5), tick_paise=5) == 130


def test_sizing_at_the_fill_keeps_the_cap_the_issue_saw_broken() -> None:
    # The session of the report: 188 x 159.62 = Rs 30,008.56 over a Rs 30,000 cap. Sized at the
    # worst fill 159.75 (above), 30,00,000 // 15,975 = 187 shares: 187 x 159.75 = Rs 29,873.25.
    sizing = size_position(
        price_paise=15_962,
        stop_paise=15_164,  # 5 % below
        lot_size=1,
        risk_budget_paise=500_000,
        max_position_value_paise=3_000_000,
        available_paise=10_000_000,
        fill_paise=15_975,
    )
    assert (sizing.quantity, sizing.binding_rule) == (187, RiskRule.POSITION_SIZE)
    assert sizing.quantity * 15_975 <= 3_000_000


def test_risk_at_the_stop_is_taken_at_the_fill() -> None:
    # Price Rs 100, stop Rs 95 (5 %), worst fill Rs 100.05: the stop moves with the fill, so the
    # risk per share is 500 x 10,005 / 10,000 = 500.25, rounded up to 501 paise; a budget of
    # 50,000 paise then allows 50,000 // 501 = 99 shares (100 at the price alone).
    at_price = size_position(
        price_paise=10_000,
        stop_paise=9_500,
        lot_size=1,
        risk_budget_paise=50_000,
        max_position_value_paise=10**9,
        available_paise=10**9,
    )
    at_fill = size_position(
        price_paise=10_000,
        stop_paise=9_500,
        lot_size=1,
        risk_budget_paise=50_000,
        max_position_value_paise=10**9,
        available_paise=10**9,
        fill_paise=10_005,
    )
    assert (at_price.quantity, at_fill.quantity) == (100, 99)
    assert at_fill.binding_rule is RiskRule.RISK_PER_TRADE


def test_a_future_is_capped_on_its_margin_and_risked_on_its_exposure() -> None:
    # TMPV future, lot 800 at Rs 351.65, worst fill 351.70; margin 10 % of the value.
    # Margin per share: 35,170 x 0.10 = 3,517 paise; a lot blocks 28,13,600 paise, under the
    # 30,00,000 cap (the full value, 2,81,36,000, would be far over it).
    # Risk at a 1 % stop: 352 paise (35,165 - 34,813) x 35,170 / 35,165 = 352.05 -> 353 per share,
    # 2,82,400 a lot, under the 5,00,000 budget: one lot.
    sizing = size_position(
        price_paise=35_165,
        stop_paise=34_813,
        lot_size=800,
        risk_budget_paise=500_000,
        max_position_value_paise=3_000_000,
        available_paise=10_000_000,
        fill_paise=35_170,
        margin_fraction=Decimal("0.10"),
    )
    assert (sizing.lots, sizing.quantity) == (1, 800)
    assert sizing.binding_rule is RiskRule.POSITION_SIZE  # 30,00,000 // 3,517 = 852 shares
    full = size_position(
        price_paise=35_165,
        stop_paise=34_813,
        lot_size=800,
        risk_budget_paise=500_000,
        max_position_value_paise=3_000_000,
        available_paise=10_000_000,
        fill_paise=35_170,
    )
    assert full.lots == 0  # on full notional no lot fits: the defect of the report
    # At a 5 % stop the exposure risks 1,759 x 800 = 14,07,200 paise a lot: over the budget
    # whatever the margin, because the risk rule stays on the full exposure.
    wide = size_position(
        price_paise=35_165,
        stop_paise=33_407,
        lot_size=800,
        risk_budget_paise=500_000,
        max_position_value_paise=3_000_000,
        available_paise=10_000_000,
        fill_paise=35_170,
        margin_fraction=Decimal("0.10"),
    )
    assert (wide.lots, wide.binding_rule) == (0, RiskRule.RISK_PER_TRADE)


def test_worst_fill_with_fractional_basis_points() -> None:
    # 2.5 bps on Rs 100.00: 10,000 x 1.00025 = 10,002.5 paise, up to the tick 10,005, plus one
    # tick: 10,010.
    assert worst_fill_paise(10_000, slippage_bps=Decimal("2.5"), tick_paise=5) == 10_010
