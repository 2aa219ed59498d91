"""The paper broker's fill price: the trade price itself without slippage; with slippage, slipped
against the trader, then rounded against the trader (a buy up, a sell down) to the tick when the
trade price is on the tick grid, to the paisa when it is not."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.factories import ist_ms
from upstox_bot.clock import SimClock
from upstox_bot.domain import Side, ms_to_datetime
from upstox_bot.trading.brokers.paper import PaperBroker


def _broker(slippage_bps: str) -> PaperBroker:
    clock = SimClock(ms_to_datetime(ist_ms(10, 0)))
    return PaperBroker(clock=clock, slippage_bps=Decimal(slippage_bps))


@pytest.mark.parametrize(
    ("side", "price", "tick", "want"),
    [
        (Side.BUY, 10_000, 5, 10_000),  # on the grid: the trade price itself
        (Side.SELL, 10_000, 5, 10_000),
        (Side.BUY, 10_001, 5, 10_001),  # off the grid (adjusted history): still the price itself
        (Side.SELL, 10_004, 5, 10_004),
        (Side.SELL, 3, 5, 3),
    ],
)
def test_without_slippage_the_fill_is_the_trade_price_as_given(
    side: Side, price: int, tick: int, want: int
) -> None:
    assert _broker("0").fill_price(side, price, tick) == want


@pytest.mark.parametrize(
    ("side", "price", "want"),
    [
        # 1000.01 rupees is off the 5-paise grid: slipped by 5 bps it is 1000.510005 for a buy,
        # rounded up to the paisa 1000.52, and 999.509995 for a sell, rounded down to 999.50.
        (Side.BUY, 100_001, 100_052),
        (Side.SELL, 100_001, 99_950),
        # 1000.05 is on the grid: 1000.05 x 1.0005 = 1000.550025, just above 1000.55, so up to
        # the next tick 1000.60; a sell 1000.05 x 0.9995 = 999.549975, down to the tick 999.50.
        (Side.BUY, 100_005, 100_060),
        (Side.SELL, 100_005, 99_950),
        # Exactly on the grid after slipping: 1000.00 + 0.50 = 1000.50.
        (Side.BUY, 100_000, 100_050),
        (Side.SELL, 100_000, 99_950),
    ],
)
def test_with_slippage_a_fill_is_never_better_than_the_slipped_price(
    side: Side, price: int, want: int
) -> None:
    broker = _broker("5")
    got = broker.fill_price(side, price, 5)
    assert got == want
    slipped = Decimal(price) * (Decimal(1) + (1 if side is Side.BUY else -1) * Decimal("0.0005"))
    assert got >= slipped if side is Side.BUY else got <= slipped
