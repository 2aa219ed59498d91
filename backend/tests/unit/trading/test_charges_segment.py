"""Charges follow what is actually traded, one contract note per scrip and day: brokerage per
executed order (an entry's once, however many trades close it), STT rounded on the note, and
each order at its exact value. Every expected figure is worked by hand in its comment."""

from __future__ import annotations

from datetime import date

from upstox_bot.config import Settings
from upstox_bot.domain import Direction, InstrumentKind, Side
from upstox_bot.runtime.components import charges_model
from upstox_bot.trading.charges import ChargeSegment, ContractNotes, OrderExecution

DAY = date(2026, 11, 25)
EQUITY = ChargeSegment.EQUITY_INTRADAY


def _buy(order_id: str, quantity: int, price_paise: int) -> OrderExecution:
    return OrderExecution(
        order_id=order_id, side=Side.BUY, quantity=quantity, value_paise=quantity * price_paise
    )


def _sell(order_id: str, quantity: int, price_paise: int) -> OrderExecution:
    return OrderExecution(
        order_id=order_id, side=Side.SELL, quantity=quantity, value_paise=quantity * price_paise
    )


def _round_trip(trade: str, kind: InstrumentKind, entry: int, exit_: int, quantity: int) -> int:
    settings = Settings(_env_file=None, TRADE_INSTRUMENT=trade)
    return charges_model(settings)(
        direction=Direction.LONG,
        entry_price_paise=entry,
        exit_price_paise=exit_,
        quantity=quantity,
        trading_date=DAY,
        kind=kind,
        instrument_key="NSE_X|1",
        entry_order=_buy("in", quantity, entry),
        exit_order=_sell("out", quantity, exit_),
    )


def test_futures_are_charged_as_futures() -> None:
    # CHARGES fact sheet 9.4, C1: SBIN FUT 750 x 945.00 -> 951.60 costs Rs 450.77
    assert _round_trip("future", InstrumentKind.FUTURE, 94_500, 95_160, 750) == 45_077


def test_a_stock_trade_is_charged_as_equity_intraday_whatever_trade_instrument_says() -> None:
    # CHARGES fact sheet 9.4, A1: SBIN 200 x 940.50 -> 948.00, equity intraday, Rs 113.98:
    # brokerage 20 + 20; STT 0.025% x 1,89,600 = 47.40 -> 47; exchange 3,77,700 x 307 / 1e7 =
    # 11.5954 -> 11.60; SEBI 0.3777 -> 0.38; stamp 0.003% x 1,88,100 = 5.643 -> 5.64; GST 18% x
    # (40 + 11.60 + 0.38) = 9.3564 -> 9.36. Charged at option rates it would pay 0.15% STT.
    for trade in ("equity", "future", "option"):
        assert _round_trip(trade, InstrumentKind.EQUITY, 94_050, 94_800, 200) == 11_398


def test_a_part_filled_exit_is_charged_as_one_contract_note() -> None:
    # Buy 300 x 100.00 in one order; sell 100 x 101.00, then the other 200 x 101.50 in a
    # second order: one note (one scrip, one day, equity intraday).
    #   brokerage: buy 30,000 -> min(20, 30.00) = 20; sell 10,100 -> min(20, 10.10) = 10.10;
    #              sell 20,300 -> min(20, 20.30) = 20; total 50.10 (the entry's Rs 20 once)
    #   STT 0.025% x (10,100 + 20,300 = 30,400) = 7.60 -> 8.00
    #   exchange + IPFT: turnover 60,400 x 307 / 1e7 = 1.8543 -> 1.85
    #   SEBI 60,400 x 1e-6 = 0.0604 -> 0.06;  stamp 0.003% x 30,000 = 0.90
    #   GST 18% x (50.10 + 1.85 + 0.06) = 9.3618 -> 9.36
    #   total 50.10 + 8.00 + 1.85 + 0.06 + 0.90 + 9.36 = Rs 70.27
    notes = ContractNotes()
    entry = _buy("in", 300, 10_000)
    first = notes.charge(
        instrument_key="K",
        segment=EQUITY,
        trade_date=DAY,
        orders=(entry, _sell("out-1", 100, 10_100)),
    )
    second = notes.charge(
        instrument_key="K",
        segment=EQUITY,
        trade_date=DAY,
        orders=(entry, _sell("out-2", 200, 10_150)),
    )
    assert first > 0
    assert second > 0
    assert first + second == 7_027


def test_stt_is_rounded_once_per_scrip_and_day_not_per_round_trip() -> None:
    # Two round trips in one stock on one day, each buy 100 x 100.00 and sell 100 x 102.00.
    # Per trip STT 0.025% x 10,200 = 2.55 -> 3 (Rs 6 for two); on the note 0.025% x 20,400 =
    # 5.10 -> 5. The rest of the note: brokerage 4 orders x min(20, 0.1% x ~10,000) = 10.00 +
    # 10.20 + 10.00 + 10.20 = 40.40; exchange 40,400 x 307 / 1e7 = 1.2403 -> 1.24; SEBI 0.0404 ->
    # 0.04; stamp 0.003% x 20,000 = 0.60; GST 18% x (40.40 + 1.24 + 0.04) = 7.5024 -> 7.50.
    # Note total 40.40 + 5.00 + 1.24 + 0.04 + 0.60 + 7.50 = Rs 54.78.
    notes = ContractNotes()
    charged = [
        notes.charge(
            instrument_key="K",
            segment=EQUITY,
            trade_date=DAY,
            orders=(_buy(f"in-{n}", 100, 10_000), _sell(f"out-{n}", 100, 10_200)),
        )
        for n in (1, 2)
    ]
    assert sum(charged) == 5_478
    # A new day starts new notes: the same trip again is charged alone.
    # Alone: brokerage 20.20; STT 2.55 -> 3; exchange 20,200 x 307 / 1e7 = 0.6201 -> 0.62;
    # SEBI 0.0202 -> 0.02; stamp 0.30; GST 18% x (20.20 + 0.62 + 0.02) = 3.7512 -> 3.75.
    # Total 20.20 + 3 + 0.62 + 0.02 + 0.30 + 3.75 = Rs 27.89.
    alone = notes.charge(
        instrument_key="K",
        segment=EQUITY,
        trade_date=date(2026, 11, 26),
        orders=(_buy("in-3", 100, 10_000), _sell("out-3", 100, 10_200)),
    )
    assert alone == 2_789


def test_an_order_is_charged_at_its_exact_value() -> None:
    # 150 at 100.00 and 150 at 100.05 in one buy order: value 15,000.00 + 15,007.50 =
    # 30,007.50 (average 100.025, which rounds to 100.03 and would make 30,009.00).
    # Sell 300 x 101.00 = 30,300. Brokerage 20 + 20 = 40; STT 0.025% x 30,300 = 7.575 -> 8;
    # exchange (30,007.50 + 30,300 = 60,307.50) x 307 / 1e7 = 1.8514 -> 1.85; SEBI 0.0603 ->
    # 0.06; stamp 0.003% x 30,007.50 = 0.9002 -> 0.90; GST 18% x (40 + 1.85 + 0.06) = 7.5438 ->
    # 7.54. Total 40 + 8 + 1.85 + 0.06 + 0.90 + 7.54 = Rs 58.35.
    notes = ContractNotes()
    entry = OrderExecution(order_id="in", side=Side.BUY, quantity=300, value_paise=3_000_750)
    charged = notes.charge(
        instrument_key="K",
        segment=EQUITY,
        trade_date=DAY,
        orders=(entry, _sell("out", 300, 10_100)),
    )
    assert charged == 5_835
