"""The charges model follows what is traded (TRADE_INSTRUMENT)."""

from __future__ import annotations

from datetime import date

from upstox_bot.config import Settings
from upstox_bot.domain import Direction
from upstox_bot.runtime.components import charges_model


def _round_trip(trade: str) -> int:
    settings = Settings(_env_file=None, TRADE_INSTRUMENT=trade)  # type: ignore[call-arg]
    return charges_model(settings)(
        direction=Direction.LONG,
        entry_price_paise=94_500,
        exit_price_paise=95_160,
        quantity=750,
        trading_date=date(2026, 11, 25),
    )


def test_futures_are_charged_as_futures() -> None:
    # CHARGES fact sheet 9.4, C1: SBIN FUT 750 x 945.00 -> 951.60 costs Rs 450.77
    assert _round_trip("future") == 45_077


def test_equity_intraday_is_the_default() -> None:
    # the same round trip as equity intraday pays 0.025% STT on the sell only
    assert _round_trip("equity") < _round_trip("future")
