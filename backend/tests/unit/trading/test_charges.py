"""Tests of the charges engine against the CHARGES fact sheet's formulas and worked examples."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from upstox_bot.domain import Side
from upstox_bot.trading.charges import (
    DEFAULT_PLAN,
    EARLIEST_RATE_DATE,
    NO_CHARGES,
    BrokeragePlan,
    ChargeBreakdown,
    ChargeSegment,
    ExecutedOrder,
    contract_note_charges,
    round_trip_charges,
    segment_rates,
)

INTRADAY = ChargeSegment.EQUITY_INTRADAY
DELIVERY = ChargeSegment.EQUITY_DELIVERY
FUTURES = ChargeSegment.FUTURES
OPTIONS = ChargeSegment.OPTIONS

NOV_2 = date(2026, 11, 2)
NOV_16 = date(2026, 11, 16)
MAR_16 = date(2026, 3, 16)


def d(text: str | int) -> Decimal:
    return Decimal(text)


def buy(price: str, quantity: int) -> ExecutedOrder:
    return ExecutedOrder(side=Side.BUY, price=d(price), quantity=quantity)


def sell(price: str, quantity: int) -> ExecutedOrder:
    return ExecutedOrder(side=Side.SELL, price=d(price), quantity=quantity)


def breakdown(
    brokerage: str, stt: str, exchange: str, sebi: str, stamp: str, dp: str, gst: str
) -> ChargeBreakdown:
    return ChargeBreakdown(
        brokerage=d(brokerage),
        stt=d(stt),
        exchange=d(exchange),
        sebi=d(sebi),
        stamp=d(stamp),
        dp=d(dp),
        gst=d(gst),
    )


@dataclass(frozen=True, kw_only=True)
class WorkedExample:
    """One row of the fact sheet's worked examples (section 9.4), prices in paise."""

    name: str
    segment: ChargeSegment
    entry_side: Side
    entry_paise: int
    exit_paise: int
    quantity: int
    trade_date: date
    exit_date: date | None
    expected: ChargeBreakdown
    total: str
    gross: str
    net: str


def example(
    name: str,
    segment: ChargeSegment,
    entry_side: Side,
    entry_paise: int,
    exit_paise: int,
    quantity: int,
    lines: tuple[str, str, str, str, str, str, str],
    total: str,
    gross: str,
    net: str,
    *,
    trade_date: date = NOV_2,
    exit_date: date | None = None,
) -> WorkedExample:
    return WorkedExample(
        name=name,
        segment=segment,
        entry_side=entry_side,
        entry_paise=entry_paise,
        exit_paise=exit_paise,
        quantity=quantity,
        trade_date=trade_date,
        exit_date=exit_date,
        expected=breakdown(*lines),
        total=total,
        gross=gross,
        net=net,
    )


# Lines: brokerage, STT, exchange incl. IPFT, SEBI, stamp, DP, GST.
WORKED_EXAMPLES = [
    # Equity intraday (MIS)
    example("A1", INTRADAY, Side.BUY, 94050, 94800, 200,
            ("40.00", "47.00", "11.60", "0.38", "5.64", "0.00", "9.36"),
            "113.98", "1500.00", "1386.02"),
    example("A2", INTRADAY, Side.BUY, 30850, 31000, 40,
            ("24.74", "3.00", "0.76", "0.02", "0.37", "0.00", "4.59"),
            "33.48", "60.00", "26.52"),
    example("A3", INTRADAY, Side.BUY, 194550, 193200, 100,
            ("40.00", "48.00", "11.90", "0.39", "5.84", "0.00", "9.41"),
            "115.54", "-1350.00", "-1465.54"),
    example("A4", INTRADAY, Side.BUY, 77200, 77525, 1300,
            ("40.00", "252.00", "61.75", "2.01", "30.11", "0.00", "18.68"),
            "404.55", "4225.00", "3820.45"),
    # Equity delivery (CNC): buy on 2 Nov, sell on 16 Nov, two contract notes.
    example("B1", DELIVERY, Side.BUY, 133450, 140200, 30,
            ("40.00", "82.00", "2.52", "0.08", "6.01", "20.00", "11.27"),
            "161.88", "2025.00", "1863.12", exit_date=NOV_16),
    example("B2", DELIVERY, Side.BUY, 1274, 1350, 50,
            ("32.81", "2.00", "0.04", "0.00", "0.10", "20.00", "9.51"),
            "64.46", "38.00", "-26.46", exit_date=NOV_16),
    example("B3", DELIVERY, Side.BUY, 414300, 439000, 10,
            ("40.00", "85.00", "2.62", "0.08", "6.21", "20.00", "11.29"),
            "165.20", "2470.00", "2304.80", exit_date=NOV_16),
    # The fact sheet's B4 row gives GST 11.85 (total 276.81): 18% of the two days' lines added
    # up. Section 9.1 computes each day's note on its own, and GST per note is
    # 4.14 (18% x 22.98 = 4.1364) + 7.72 (18% x 42.87 = 7.7166) = 11.86, one paisa more.
    example("B4", DELIVERY, Side.BUY, 94050, 90525, 100,
            ("40.00", "185.00", "5.67", "0.18", "14.11", "20.00", "11.86"),
            "276.82", "-3525.00", "-3801.82", exit_date=NOV_16),
    # Futures
    example("C1", FUTURES, Side.BUY, 94500, 95160, 750,
            ("40.00", "357.00", "26.03", "1.42", "14.18", "0.00", "12.14"),
            "450.77", "4950.00", "4499.23"),
    example("C2", FUTURES, Side.SELL, 115000, 114130, 400,
            ("40.00", "230.00", "16.77", "0.92", "9.13", "0.00", "10.38"),
            "307.20", "3480.00", "3172.80"),
    example("C3", FUTURES, Side.BUY, 125000, 123840, 1400,
            ("40.00", "867.00", "63.75", "3.48", "35.00", "0.00", "19.30"),
            "1028.53", "-16240.00", "-17268.53"),
    example("C4", FUTURES, Side.BUY, 94500, 95160, 750,
            ("40.00", "143.00", "26.03", "1.42", "14.18", "0.00", "12.14"),
            "236.77", "4950.00", "4713.23", trade_date=MAR_16),
    # Options (premium)
    example("D1", OPTIONS, Side.BUY, 2140, 2790, 750,
            ("40.00", "31.00", "13.14", "0.04", "0.48", "0.00", "9.57"),
            "94.23", "4875.00", "4780.77"),
    example("D2", OPTIONS, Side.BUY, 4800, 3155, 175,
            ("40.00", "8.00", "4.95", "0.01", "0.25", "0.00", "8.09"),
            "61.30", "-2878.75", "-2940.05"),
    example("D3", OPTIONS, Side.SELL, 1520, 905, 700,
            ("40.00", "16.00", "6.03", "0.02", "0.19", "0.00", "8.29"),
            "70.53", "4305.00", "4234.47"),
    example("D4", OPTIONS, Side.BUY, 2140, 2790, 750,
            ("40.00", "21.00", "13.14", "0.04", "0.48", "0.00", "9.57"),
            "84.23", "4875.00", "4790.77", trade_date=MAR_16),
]  # fmt: skip


@pytest.mark.parametrize("ex", WORKED_EXAMPLES, ids=lambda ex: ex.name)
def test_worked_example_matches_every_line(ex: WorkedExample) -> None:
    charges = round_trip_charges(
        segment=ex.segment,
        trade_date=ex.trade_date,
        entry_side=ex.entry_side,
        entry_price_paise=ex.entry_paise,
        exit_price_paise=ex.exit_paise,
        quantity=ex.quantity,
        exit_date=ex.exit_date,
    )

    sign = 1 if ex.entry_side is Side.BUY else -1
    gross = Decimal(sign * (ex.exit_paise - ex.entry_paise) * ex.quantity) / 100
    assert charges == ex.expected
    assert charges.total == d(ex.total)
    assert charges.total_paise == int(d(ex.total) * 100)
    assert gross == d(ex.gross)
    assert gross - charges.total == d(ex.net)


def test_a1_line_by_line_on_one_contract_note() -> None:
    note = contract_note_charges(
        [buy("940.50", 200), sell("948.00", 200)], segment=INTRADAY, trade_date=NOV_2
    )

    assert note.brokerage == d("40.00")  # min(20, 188.10) + min(20, 189.60)
    assert note.stt == d("47.00")  # 47.40 -> 47
    assert note.exchange == d("11.60")  # 11.5954
    assert note.sebi == d("0.38")  # 0.3777
    assert note.stamp == d("5.64")  # 5.643
    assert note.dp == d("0.00")
    assert note.gst == d("9.36")  # 9.3564
    assert note.total == d("113.98")


def test_b1_line_by_line_buy_day_and_sell_day_notes() -> None:
    buy_day = contract_note_charges([buy("1334.50", 30)], segment=DELIVERY, trade_date=NOV_2)
    sell_day = contract_note_charges([sell("1402.00", 30)], segment=DELIVERY, trade_date=NOV_16)

    # Buy day: STT 40.035 -> 40; exchange 1.2291 -> 1.23; SEBI 0.04; stamp 6.005 -> 6.01; no DP.
    assert buy_day == breakdown("20.00", "40.00", "1.23", "0.04", "6.01", "0.00", "3.83")
    # Sell day: STT 42.06 -> 42; exchange 1.2912 -> 1.29; SEBI 0.04; no stamp; DP 20.
    assert sell_day == breakdown("20.00", "42.00", "1.29", "0.04", "0.00", "20.00", "7.44")
    assert (buy_day + sell_day).total == d("161.88")


def test_b2_brokerage_is_capped_at_2_5_pct_per_order_rounded_half_up() -> None:
    note = contract_note_charges(
        [buy("12.74", 50), sell("13.50", 50)], segment=DELIVERY, trade_date=NOV_2
    )

    assert note.brokerage == d("15.93") + d("16.88")  # 15.925 and 16.875, half up


@pytest.mark.parametrize(
    ("segment", "buy_price", "sell_price", "quantity", "trade_date", "exact"),
    [
        (INTRADAY, "940.50", "948.00", 200, NOV_2, "114.3712"),
        (DELIVERY, "1334.50", "1402.00", 30, NOV_2, "161.9711"),
        (FUTURES, "945.00", "951.60", 750, NOV_2, "450.6199"),
        (OPTIONS, "21.40", "27.90", 750, NOV_2, "94.6145"),
    ],
)
def test_rates_reproduce_the_unrounded_totals_of_the_fact_sheet(
    segment: ChargeSegment,
    buy_price: str,
    sell_price: str,
    quantity: int,
    trade_date: date,
    exact: str,
) -> None:
    rates = segment_rates(segment, trade_date)
    buy_value = d(buy_price) * quantity
    sell_value = d(sell_price) * quantity
    turnover = buy_value + sell_value
    brokerage = d(40)
    dp = d(20) if segment is DELIVERY else d(0)
    exchange = turnover * rates.exchange_incl_ipft
    sebi = turnover * rates.sebi
    unrounded = (
        brokerage
        + buy_value * rates.stt_buy
        + sell_value * rates.stt_sell
        + exchange
        + sebi
        + buy_value * rates.stamp_buy
        + dp
        + rates.gst * (brokerage + exchange + sebi + dp)
    )

    assert unrounded.quantize(d("0.0001")) == d(exact)


def test_groww_cross_check_with_its_brokerage_and_nse_rate_without_ipft() -> None:
    groww_plan = BrokeragePlan(delivery_cap_rate=d("0.001"), dp_charge_per_scrip=d(0))
    groww_rates = replace(
        segment_rates(DELIVERY, date(2025, 6, 2)),
        exchange_txn=d(297) / 10_000_000,  # 0.00297%, IPFT left out as Groww does
        ipft=d(0),
    )

    note = contract_note_charges(
        [buy("1000", 50), sell("1500", 50)],
        segment=DELIVERY,
        trade_date=date(2025, 6, 2),
        plan=groww_plan,
        rates=groww_rates,
    )

    assert note == breakdown("40.00", "125.00", "3.71", "0.13", "7.50", "0.00", "7.89")
    assert note.total == d("184.23")
    assert d(25_000) - note.total == d("24815.77")


@pytest.mark.parametrize(
    ("segment", "before", "on", "sell_value", "stt_before", "stt_on"),
    [
        # Futures STT 0.0125% -> 0.02% on 1 Oct 2024, -> 0.05% on 1 Apr 2026.
        (FUTURES, date(2024, 9, 30), date(2024, 10, 1), 2_000_000, "250.00", "400.00"),
        (FUTURES, date(2026, 3, 31), date(2026, 4, 1), 2_000_000, "400.00", "1000.00"),
        # Options STT on premium 0.0625% -> 0.1% on 1 Oct 2024, -> 0.15% on 1 Apr 2026.
        (OPTIONS, date(2024, 9, 30), date(2024, 10, 1), 100_000, "63.00", "100.00"),
        (OPTIONS, date(2026, 3, 31), date(2026, 4, 1), 100_000, "100.00", "150.00"),
        # Cash STT does not change.
        (INTRADAY, date(2026, 3, 31), date(2026, 4, 1), 100_000, "25.00", "25.00"),
    ],
)
def test_stt_changes_on_its_effective_date(
    segment: ChargeSegment,
    before: date,
    on: date,
    sell_value: int,
    stt_before: str,
    stt_on: str,
) -> None:
    orders = [sell(str(sell_value), 1)]

    assert contract_note_charges(orders, segment=segment, trade_date=before).stt == d(stt_before)
    assert contract_note_charges(orders, segment=segment, trade_date=on).stt == d(stt_on)


def test_cleartax_budget_2026_futures_example() -> None:
    # A Rs 20 lakh futures sale pays STT Rs 400 before and Rs 1,000 from 1 April 2026.
    orders = [sell("2000000", 1)]
    before = contract_note_charges(orders, segment=FUTURES, trade_date=date(2026, 3, 31))
    after = contract_note_charges(orders, segment=FUTURES, trade_date=date(2026, 4, 1))

    assert (before.stt, after.stt) == (d(400), d(1000))


@pytest.mark.parametrize(
    ("segment", "before", "on", "per_crore_before", "per_crore_on"),
    [
        (INTRADAY, date(2024, 3, 31), date(2024, 4, 1), 335, 332),
        (DELIVERY, date(2024, 9, 30), date(2024, 10, 1), 332, 307),
        (FUTURES, date(2024, 9, 30), date(2024, 10, 1), 198, 183),
        (OPTIONS, date(2024, 9, 30), date(2024, 10, 1), 5000, 3553),
        # 1 Mar 2026 moves IPFT into the transaction charge; the sum stays the same.
        (INTRADAY, date(2026, 2, 28), date(2026, 3, 1), 307, 307),
        (FUTURES, date(2026, 2, 28), date(2026, 3, 1), 183, 183),
        (OPTIONS, date(2026, 2, 28), date(2026, 3, 1), 3553, 3553),
    ],
)
def test_exchange_rate_incl_ipft_by_period(
    segment: ChargeSegment, before: date, on: date, per_crore_before: int, per_crore_on: int
) -> None:
    crore = [buy("10000000", 1)]

    assert contract_note_charges(crore, segment=segment, trade_date=before).exchange == d(
        per_crore_before
    )
    assert contract_note_charges(crore, segment=segment, trade_date=on).exchange == d(per_crore_on)


def test_ipft_split_changes_on_1_march_2026() -> None:
    before = segment_rates(OPTIONS, date(2026, 2, 28))
    on = segment_rates(OPTIONS, date(2026, 3, 1))

    assert (before.exchange_txn, before.ipft) == (d("0.0003503"), d("0.000005"))
    assert (on.exchange_txn, on.ipft) == (d("0.000355299"), d("0.000000001"))


def test_trade_date_before_the_rate_tables_raises() -> None:
    assert date(2023, 4, 1) == EARLIEST_RATE_DATE
    assert segment_rates(INTRADAY, date(2023, 4, 1)).stt_sell == d("0.00025")

    with pytest.raises(ValueError, match="2023-03-31"):
        round_trip_charges(
            segment=INTRADAY,
            trade_date=date(2023, 3, 31),
            entry_side=Side.BUY,
            entry_price_paise=10_000,
            exit_price_paise=10_100,
            quantity=1,
        )


@pytest.mark.parametrize(
    ("sell_value", "expected_stt"),
    [
        ("2000", "1.00"),  # 0.50 -> 1 (half up; half even would give 0)
        ("10000", "3.00"),  # 2.50 -> 3 (half even would give 2)
        ("189996", "47.00"),  # 47.499 -> 47
        ("190000", "48.00"),  # 47.50 -> 48
        ("1999", "0.00"),  # 0.49975 -> 0
    ],
)
def test_stt_rounds_to_the_rupee_half_up(sell_value: str, expected_stt: str) -> None:
    note = contract_note_charges([sell(sell_value, 1)], segment=INTRADAY, trade_date=NOV_2)

    assert note.stt == d(expected_stt)


def test_paise_lines_round_half_up() -> None:
    # Turnover Rs 5,000: SEBI fee 0.005 -> 0.01 (half even would give 0.00).
    note = contract_note_charges(
        [buy("25.00", 100), sell("25.00", 100)], segment=INTRADAY, trade_date=NOV_2
    )

    assert note.sebi == d("0.01")
    # Brokerage 0.1% x 2,500 = 2.50 per order; exchange 5,000 x 307/1e7 = 0.1535 -> 0.15;
    # GST 18% x (5.00 + 0.15 + 0.01) = 0.9288 -> 0.93; stamp 0.003% x 2,500 = 0.075 -> 0.08.
    assert note == breakdown("5.00", "1.00", "0.15", "0.01", "0.08", "0.00", "0.93")


def test_brokerage_is_per_order_and_stt_is_rounded_once_per_note() -> None:
    # Two sell orders of Rs 1,000: 0.25 STT each would round to 0 apiece; the note pays 0.50 -> 1.
    note = contract_note_charges(
        [buy("20.00", 100), sell("10.00", 100), sell("10.00", 100)],
        segment=INTRADAY,
        trade_date=NOV_2,
    )

    assert note.brokerage == d("4.00")  # 0.1% of 2,000 + 1,000 + 1,000, per order
    assert note.stt == d("1.00")


def test_short_intraday_round_trip_sells_first() -> None:
    short = round_trip_charges(
        segment=INTRADAY,
        trade_date=NOV_2,
        entry_side=Side.SELL,
        entry_price_paise=95_000,
        exit_price_paise=94_000,
        quantity=100,
    )

    # STT on the Rs 95,000 sell (23.75 -> 24), stamp on the Rs 94,000 buy (2.82).
    assert short.stt == d("24.00")
    assert short.stamp == d("2.82")
    assert short.brokerage == d("40.00")
    long_with_same_orders = round_trip_charges(
        segment=INTRADAY,
        trade_date=NOV_2,
        entry_side=Side.BUY,
        entry_price_paise=94_000,
        exit_price_paise=95_000,
        quantity=100,
    )
    assert short == long_with_same_orders


def test_futures_carried_overnight_are_two_notes_each_rounded() -> None:
    carried = round_trip_charges(
        segment=FUTURES,
        trade_date=NOV_2,
        exit_date=date(2026, 11, 3),
        entry_side=Side.BUY,
        entry_price_paise=94500,
        exit_price_paise=95160,
        quantity=750,
    )
    entry_note = contract_note_charges([buy("945.00", 750)], segment=FUTURES, trade_date=NOV_2)
    exit_note = contract_note_charges(
        [sell("951.60", 750)], segment=FUTURES, trade_date=date(2026, 11, 3)
    )

    assert carried == entry_note + exit_note
    assert entry_note.stt == d("0.00")
    assert exit_note.stt == d("357.00")
    assert exit_note.stamp == d("0.00")


def test_delivery_exit_date_selects_the_sell_day_rates() -> None:
    # Bought before the IPFT split, sold after: each note uses its own day's rates.
    charges = round_trip_charges(
        segment=DELIVERY,
        trade_date=date(2024, 9, 30),
        exit_date=date(2024, 10, 1),
        entry_side=Side.BUY,
        entry_price_paise=100_000,
        exit_price_paise=100_000,
        quantity=10_000,
    )

    # Rs 1 crore each side: 332 on the buy day + 307 on the sell day.
    assert charges.exchange == d("639.00")


@pytest.mark.parametrize(
    ("segment", "entry_side", "exit_date", "message"),
    [
        (INTRADAY, Side.BUY, date(2026, 11, 3), "intraday"),
        (DELIVERY, Side.SELL, date(2026, 11, 3), "short"),
        (FUTURES, Side.BUY, date(2026, 11, 1), "before"),
    ],
)
def test_round_trip_refuses_impossible_dates(
    segment: ChargeSegment, entry_side: Side, exit_date: date, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        round_trip_charges(
            segment=segment,
            trade_date=NOV_2,
            exit_date=exit_date,
            entry_side=entry_side,
            entry_price_paise=10_000,
            exit_price_paise=10_100,
            quantity=10,
        )


def test_plan_overrides_for_api_promotion_and_dp_amount() -> None:
    promo = BrokeragePlan(flat_per_order=d(10), dp_charge_per_scrip=d("18.50"))

    a1 = contract_note_charges(
        [buy("940.50", 200), sell("948.00", 200)], segment=INTRADAY, trade_date=NOV_2, plan=promo
    )
    b1_sell_day = contract_note_charges(
        [sell("1402.00", 30)], segment=DELIVERY, trade_date=NOV_16, plan=promo
    )

    assert a1.brokerage == d("20.00")
    assert a1.gst == d("5.76")  # 18% x (20 + 11.60 + 0.38) = 5.7564
    assert b1_sell_day.dp == d("18.50")
    assert b1_sell_day.gst == d("5.37")  # 18% x (10 + 1.29 + 0.04 + 18.50) = 5.3694


def test_options_brokerage_is_flat_per_order_whatever_the_lots() -> None:
    note = contract_note_charges([buy("0.05", 7500)], segment=OPTIONS, trade_date=NOV_2)

    assert note.brokerage == d("20.00")  # premium value Rs 375, still Rs 20


def test_empty_note_has_no_charges() -> None:
    note = contract_note_charges([], segment=DELIVERY, trade_date=NOV_2)

    assert note == NO_CHARGES
    assert note.total_paise == 0


def test_adding_notes_adds_every_line() -> None:
    first = breakdown("20.00", "40.00", "1.23", "0.04", "6.01", "0.00", "3.83")
    second = breakdown("20.00", "42.00", "1.29", "0.04", "0.00", "20.00", "7.44")

    total = first + second

    assert total == breakdown("40.00", "82.00", "2.52", "0.08", "6.01", "20.00", "11.27")
    assert total.total_paise == first.total_paise + second.total_paise == 16188
    assert first + NO_CHARGES == first


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"side": Side.BUY, "price": d("10"), "quantity": 0}, ValueError),
        ({"side": Side.BUY, "price": d("-0.05"), "quantity": 1}, ValueError),
        ({"side": Side.BUY, "price": d("NaN"), "quantity": 1}, ValueError),
        ({"side": Side.BUY, "price": 10.5, "quantity": 1}, TypeError),
        ({"side": Side.BUY, "price": d("10"), "quantity": 1.0}, TypeError),
    ],
)
def test_executed_order_refuses_bad_values(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        ExecutedOrder(**kwargs)  # type: ignore[arg-type]


def test_plan_refuses_negative_amounts() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        BrokeragePlan(flat_per_order=d(-1))
    with pytest.raises(ValueError, match=">= 0"):
        BrokeragePlan(futures_cap_rate=d("-0.0005"))


def test_default_plan_is_upstox_standard() -> None:
    assert DEFAULT_PLAN.flat_per_order == d(20)
    assert DEFAULT_PLAN.cap_rate(INTRADAY) == d("0.001")
    assert DEFAULT_PLAN.cap_rate(DELIVERY) == d("0.025")
    assert DEFAULT_PLAN.cap_rate(FUTURES) == d("0.0005")
    assert DEFAULT_PLAN.cap_rate(OPTIONS) is None
    assert DEFAULT_PLAN.dp_charge_per_scrip == d(20)


# Properties

segments = st.sampled_from(list(ChargeSegment))
trade_dates = st.dates(min_value=EARLIEST_RATE_DATE, max_value=date(2027, 12, 31))
prices_paise = st.integers(min_value=5, max_value=5_000_000)  # Rs 0.05 to Rs 50,000
quantities = st.integers(min_value=1, max_value=20_000)
sides = st.sampled_from(list(Side))


@given(segments, trade_dates, sides, prices_paise, prices_paise, quantities)
def test_property_total_is_non_negative_and_is_the_sum_of_its_lines_in_paise(
    segment: ChargeSegment,
    trade_date: date,
    entry_side: Side,
    entry_paise: int,
    exit_paise: int,
    quantity: int,
) -> None:
    charges = round_trip_charges(
        segment=segment,
        trade_date=trade_date,
        entry_side=entry_side,
        entry_price_paise=entry_paise,
        exit_price_paise=exit_paise,
        quantity=quantity,
    )

    lines = (
        charges.brokerage,
        charges.stt,
        charges.exchange,
        charges.sebi,
        charges.stamp,
        charges.dp,
        charges.gst,
    )
    assert charges.total >= 0
    assert all(line >= 0 and line == line.quantize(d("0.01")) for line in lines)
    assert charges.total_paise == sum(int(line * 100) for line in lines)


@given(trade_dates, sides, prices_paise, prices_paise, quantities, quantities)
def test_property_intraday_charges_never_fall_as_quantity_grows(
    trade_date: date,
    entry_side: Side,
    entry_paise: int,
    exit_paise: int,
    quantity: int,
    other_quantity: int,
) -> None:
    small, large = sorted((quantity, other_quantity))

    def charges(qty: int) -> ChargeBreakdown:
        return round_trip_charges(
            segment=INTRADAY,
            trade_date=trade_date,
            entry_side=entry_side,
            entry_price_paise=entry_paise,
            exit_price_paise=exit_paise,
            quantity=qty,
        )

    assert charges(small).total <= charges(large).total


@given(segments, trade_dates, st.lists(st.tuples(sides, prices_paise, quantities), max_size=6))
def test_property_note_does_not_depend_on_order_sequence(
    segment: ChargeSegment, trade_date: date, raw_orders: list[tuple[Side, int, int]]
) -> None:
    orders = [
        ExecutedOrder(side=side, price=Decimal(price) / 100, quantity=qty)
        for side, price, qty in raw_orders
    ]

    forward = contract_note_charges(orders, segment=segment, trade_date=trade_date)
    backward = contract_note_charges(orders[::-1], segment=segment, trade_date=trade_date)

    assert forward == backward
