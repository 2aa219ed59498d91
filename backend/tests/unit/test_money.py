"""The one money format: Indian digit grouping, the sign first, two decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from upstox_bot.money import format_amount, format_rupees


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (0, "₹0.00"),
        (5, "₹0.05"),
        (-5, "-₹0.05"),
        (99_999, "₹999.99"),
        (100_000, "₹1,000.00"),
        (10_000_000, "₹1,00,000.00"),
        (12_345_678_901, "₹12,34,56,789.01"),
        (-1_124_069, "-₹11,240.69"),
    ],
)
def test_paise_read_with_indian_grouping_and_the_sign_first(paise: int, text: str) -> None:
    assert format_rupees(paise) == text


def test_a_signed_amount_marks_gains_and_losses() -> None:
    assert format_rupees(150, signed=True) == "+₹1.50"
    assert format_rupees(-150, signed=True) == "-₹1.50"
    assert format_rupees(0, signed=True) == "₹0.00"


def test_rupee_amounts_round_half_up_to_the_paisa() -> None:
    assert format_amount(Decimal("-2224.415")) == "-₹2,224.42"
    assert format_amount(Decimal("100000")) == "₹1,00,000.00"
    assert format_amount(12.5, signed=True) == "+₹12.50"
