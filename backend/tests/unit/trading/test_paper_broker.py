"""The paper broker's fill price: slipped against the trader, then aligned to the tick so that a
fill is never better than the slipped price (a buy rounds up, a sell rounds down)."""

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
        (Side.BUY, 10_001, 5, 10_005),  # off the grid: up for a buy...
        (Side.SELL, 10_004, 5, 10_000),  # ...down for a sell
        (Side.SELL, 3, 5, 5),  # never below one tick
    ],
)
def test_without_slippage_the_price_is_aligned_against_the_trader(
    side: Side, price: int, tick: int, want: int
) -> None:
    assert _broker("0").fill_price(side, price, tick) == want


@pytest.mark.parametrize(
    ("side", "price", "want"),
    [
        # 1000.01 rupees slipped by 5 bps: 1000.510005 for a buy, 999.510005 for a sell.
        (Side.BUY, 100_001, 100_055),
        (Side.SELL, 100_001, 99_950),
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
