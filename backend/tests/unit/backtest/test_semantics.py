"""What a backtest does with bars: fills, stops inside a bar, square-off, charges, open ends."""

from __future__ import annotations

from datetime import date, time, timedelta
from decimal import Decimal

import pytest

from tests.support.factories import IST, ist, ist_ms
from tests.unit.backtest.conftest import bar, make_series, run_scripted
from upstox_bot.domain import SignalType

LONG = [SignalType.ENTRY_LONG]
EXIT = [SignalType.EXIT_LONG]


def test_market_entry_fills_at_next_bar_open_plus_slippage_and_exit_likewise() -> None:
    series = make_series(
        [
            bar(10, 0, 99, 100.5, 98.5, 100),
            bar(10, 1, 100, 100.4, 99.9, 100.2),
            bar(10, 2, 100.2, 100.6, 100.1, 100.5),
            bar(10, 3, 101, 101.2, 100.8, 101),
        ]
    )
    out = run_scripted(
        [series],
        {ist_ms(10, 0): LONG, ist_ms(10, 2): EXIT},
        quantity=10,
        charges="none",
        slippage_bps=Decimal(10),
    )
    (trade,) = out.trades
    # 100.00 + 10 bps = 100.10 (a multiple of the 5-paise tick); 101.00 - 10 bps = 100.899
    # rounded down to the tick = 100.85.
    assert trade.entry_price_paise == 10_010
    assert trade.entry_time == ist(10, 1) + timedelta(milliseconds=1)  # the open's repeat
    assert trade.exit_price_paise == 10_085
    assert trade.exit_time.astimezone(IST).replace(microsecond=0) == ist(10, 3)
    assert trade.exit_reason == "signal"
    assert trade.quantity == 10
    assert trade.pnl_paise == (10_085 - 10_010) * 10
    assert out.open_positions == ()


@pytest.mark.parametrize(
    ("shape", "low_at_s"),
    [
        ((100, 105, 94, 104.5), 20),  # up bar: open, low (20 s), high (40 s), close
        ((100, 105, 94, 95), 40),  # down bar: open, high (20 s), low (40 s), close
    ],
)
def test_stop_wins_over_target_when_both_are_inside_one_bar(
    shape: tuple[float, ...], low_at_s: int
) -> None:
    o, hi, lo, c = shape
    series = make_series(
        [
            bar(10, 0, 100, 100, 100, 100),
            bar(10, 1, 100, 100, 100, 100),  # entry fills at 100.00: stop 95.00, target 104.00
            bar(10, 2, o, hi, lo, c),
            bar(10, 3, 99, 99, 99, 99),
        ]
    )
    out = run_scripted([series], {ist_ms(10, 0): LONG}, quantity=10, charges="none")
    (trade,) = out.trades
    assert trade.entry_price_paise == 10_000
    assert trade.exit_reason == "stop_loss"
    assert trade.exit_price_paise == 9_400  # the low, where the stop triggered (the repeat fills)
    assert trade.exit_time.astimezone(IST).replace(microsecond=0) == ist(10, 2, low_at_s)


def test_target_then_pullback_exits_on_the_trailing_stop() -> None:
    series = make_series(
        [
            bar(10, 0, 100, 100, 100, 100),
            bar(10, 1, 100, 100, 100, 100),
            bar(10, 2, 100, 106, 100, 106),  # target 104 touched at 106: trail at 103.88
            bar(10, 3, 106, 106, 103, 103.5),  # down bar: high 106 then low 103 hits the trail
        ]
    )
    out = run_scripted([series], {ist_ms(10, 0): LONG}, quantity=10, charges="none")
    (trade,) = out.trades
    assert trade.exit_reason == "trailing_stop"
    assert trade.exit_price_paise == 10_300


def test_disabled_stop_loss_never_exits_on_a_fall() -> None:
    series = make_series(
        [
            bar(10, 0, 100, 100, 100, 100),
            bar(10, 1, 100, 100, 100, 100),
            bar(10, 2, 100, 100, 50, 60),
        ]
    )
    out = run_scripted(
        [series], {ist_ms(10, 0): LONG}, quantity=10, charges="none", stop_loss_pct=Decimal(0)
    )
    assert out.trades == ()
    (position,) = out.open_positions
    assert position.last_price_paise == 6_000
    assert position.unrealised_pnl_paise == -40_000


def test_disabled_trailing_stop_takes_profit_at_the_target() -> None:
    series = make_series(
        [
            bar(10, 0, 100, 100, 100, 100),
            bar(10, 1, 100, 100, 100, 100),
            bar(10, 2, 100, 105, 100, 101),
        ]
    )
    out = run_scripted(
        [series],
        {ist_ms(10, 0): LONG},
        quantity=10,
        charges="none",
        trailing_stop_pct=Decimal(0),
    )
    (trade,) = out.trades
    assert (trade.exit_reason, trade.exit_price_paise) == ("take_profit", 10_500)


def test_intraday_square_off_fills_at_the_open_of_the_square_off_bar() -> None:
    series = make_series(
        [
            bar(14, 30, 100, 100, 100, 100),
            bar(14, 31, 100, 100, 100, 100),
            bar(15, 14, 101, 101, 101, 101),
            bar(15, 15, 102, 102.5, 101.5, 102),
            bar(15, 16, 103, 103, 103, 103),
        ]
    )
    out = run_scripted([series], {ist_ms(14, 30): LONG}, quantity=10, charges="none")
    (trade,) = out.trades
    assert trade.exit_reason == "square_off"
    assert trade.exit_price_paise == 10_200
    assert trade.exit_time.astimezone(IST).replace(microsecond=0) == ist(15, 15)


def test_upstox_charges_are_the_configured_model_and_none_is_zero() -> None:
    bars = [
        bar(10, 0, 500, 500, 500, 500),
        bar(10, 1, 500, 500, 500, 500),
        bar(10, 2, 510, 510, 510, 510),
        bar(10, 3, 512, 512, 512, 512),
    ]
    script = {ist_ms(10, 0): LONG, ist_ms(10, 2): EXIT}
    (charged,) = run_scripted([make_series(bars)], script, quantity=20, charges="upstox").trades
    (free,) = run_scripted([make_series(bars)], script, quantity=20, charges="none").trades
    # One intraday contract note (November 2026 rates), buy 20 x 500.00 = 10,000, sell 20 x 512.00
    # = 10,240: brokerage min(20, 0.1% x 10,000) + min(20, 0.1% x 10,240) = 10.00 + 10.24 =
    # 20.24; STT 0.025% x 10,240 = 2.56 -> 3.00; exchange + IPFT 20,240 x 307 / 1e7 = 0.6214 ->
    # 0.62; SEBI 20,240 x 1e-6 = 0.0202 -> 0.02; stamp 0.003% x 10,000 = 0.30; GST 18% x
    # (20.24 + 0.62 + 0.02) = 3.7584 -> 3.76. Total Rs 27.94.
    expected = 2_794
    assert charged.charges_paise == expected
    assert charged.pnl_paise == charged.gross_pnl_paise - expected == 24_000 - expected
    assert free.charges_paise == 0
    assert free.pnl_paise == free.gross_pnl_paise == 24_000


def test_position_open_at_the_end_is_not_a_trade() -> None:
    series = make_series([bar(10, 0, 100, 100, 100, 100), bar(10, 1, 101, 101, 101, 101)])
    out = run_scripted([series], {ist_ms(10, 0): LONG}, quantity=5, charges="none")
    assert out.trades == ()
    (position,) = out.open_positions
    assert (position.side, position.quantity, position.entry_price_paise) == ("long", 5, 10_100)
    # equity at the close counts the open position at its last price
    assert out.equity[-1].equity_paise == 10_000_000


def test_exit_on_the_last_bar_has_no_next_trade_so_the_position_stays_open() -> None:
    series = make_series([bar(10, 0, 100, 100, 100, 100), bar(10, 1, 101, 101, 101, 101)])
    out = run_scripted(
        [series], {ist_ms(10, 0): LONG, ist_ms(10, 1): EXIT}, quantity=5, charges="none"
    )
    assert out.trades == ()
    assert len(out.open_positions) == 1
    assert out.unfilled_orders == 1


def test_risk_sizing_is_the_configured_one_without_a_quantity() -> None:
    series = make_series([bar(10, 0, 500, 500, 500, 500), bar(10, 1, 500, 500, 500, 500)])
    out = run_scripted([series], {ist_ms(10, 0): LONG}, charges="none")
    # 30 % of Rs 1,00,000 = 30,00,000 paise, sized at the worst fill Rs 500.05 (one 5-paise
    # tick of room): 30,00,000 // 50,005 = 59 shares (60 would be 30,00,300 paise; the risk at a
    # 5 % stop allows 5,00,000 // 2,501 = 199)
    assert out.open_positions[0].quantity == 59


def test_daily_bars_carry_positions_overnight_and_fill_at_the_next_open() -> None:
    days = [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)]
    bars = [
        (ist_ms(9, 15, day=d), o, o + 1, o - 1, o + 0.5)
        for d, o in zip(days, (100.0, 101.0, 102.0, 103.0), strict=True)
    ]
    series = make_series(bars, interval_s=86_400)
    out = run_scripted(
        [series],
        {ist_ms(9, 15, day=days[0]): LONG, ist_ms(9, 15, day=days[2]): EXIT},
        quantity=10,
        charges="none",
        timeframe="1d",
    )
    (trade,) = out.trades
    assert trade.entry_time.astimezone(IST).date() == days[1]
    assert trade.entry_time.astimezone(IST).time() < time(9, 16)
    assert trade.entry_price_paise == 10_100
    assert (trade.exit_time.astimezone(IST).date(), trade.exit_price_paise) == (days[3], 10_300)
    assert len(out.equity) == 4


def test_daily_loss_limit_applies_across_symbols() -> None:
    from tests.support.factories import make_instrument

    other = make_instrument(instrument_key="NSE_EQ|B", trading_symbol="B")
    a = make_series(
        [
            bar(10, 0, 1000, 1000, 1000, 1000),
            bar(10, 1, 1000, 1000, 1000, 1000),
            bar(10, 2, 900, 900, 900, 900),  # 99 shares lose Rs 9,900: over the 2 % limit
            bar(10, 10, 900, 900, 900, 900),
        ]
    )
    b = make_series([bar(10, 5, 50, 50, 50, 50), bar(10, 6, 50, 50, 50, 50)], instrument=other)
    out = run_scripted(
        [a, b],
        {ist_ms(10, 0): LONG, ist_ms(10, 5): LONG},
        # 99 x Rs 1,000.05 (the fill sized for, one tick of room) fits Rs 1,00,000; 100 would not
        quantity=99,
        charges="none",
        stop_loss_pct=Decimal(0),
    )
    assert [p.symbol for p in out.open_positions] == ["SBIN"]  # B's entry was refused


@pytest.mark.parametrize("trade_instrument", ["future", "option"])
def test_a_stock_backtest_is_charged_as_equity_whatever_trade_instrument_says(
    trade_instrument: str,
) -> None:
    # The same round trip as test_upstox_charges_are_the_configured_model_and_none_is_zero:
    # one equity intraday note of Rs 27.94, not the futures' or options' rates.
    bars = [
        bar(10, 0, 500, 500, 500, 500),
        bar(10, 1, 500, 500, 500, 500),
        bar(10, 2, 510, 510, 510, 510),
        bar(10, 3, 512, 512, 512, 512),
    ]
    script = {ist_ms(10, 0): LONG, ist_ms(10, 2): EXIT}
    (trade,) = run_scripted(
        [make_series(bars)],
        script,
        quantity=20,
        charges="upstox",
        settings_overrides={"TRADE_INSTRUMENT": trade_instrument},
    ).trades
    assert trade.charges_paise == 2_794
