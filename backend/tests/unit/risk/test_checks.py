"""Every pre-trade rule at its boundary."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, time

import pytest

from tests.support.factories import ist, ist_ms, make_limits
from upstox_bot.clock import NseCalendar
from upstox_bot.domain import Direction, RiskRule
from upstox_bot.risk.checks import BookState, EntryRequest, RiskManager
from upstox_bot.risk.kill_switch import KillSwitch
from upstox_bot.risk.rate_limit import OrderRateLimiter


def _manager(**limits: object) -> RiskManager:
    lim = make_limits(**limits)
    return RiskManager(
        lim, OrderRateLimiter(lim.max_orders_per_minute, lim.min_order_interval_s), KillSwitch()
    )


def _request(hour: int = 10, minute: int = 0, second: int = 0, **kw: object) -> EntryRequest:
    values: dict[str, object] = {
        "instrument_key": "K",
        "direction": Direction.LONG,
        "signal_id": None,
        "price_paise": 10_000,
        "stop_paise": 9_500,
        "target_paise": 10_400,
        "lot_size": 1,
        "at": ist(hour, minute, second),
        "at_ms": ist_ms(hour, minute, second),
    }
    values.update(kw)
    return EntryRequest(**values)  # type: ignore[arg-type]


BOOK = BookState(
    open_positions=0,
    in_position=False,
    day_pnl_paise=0,
    loss_limit_hit=False,
    available_paise=10_000_000,
)


def test_entry_when_all_rules_hold_is_sized_by_position_cap() -> None:
    decision = _manager().check_entry(_request(), BOOK)
    # 5% risk at a 5% stop would allow Rs 1,00,000; the 30% cap allows Rs 30,000 = 300 shares.
    assert decision.approved
    assert decision.quantity == 300
    assert decision.rule is None


def test_risk_per_trade_binds_when_stop_is_wide() -> None:
    # stop 50% away: risk budget Rs 5,000 / Rs 50 per share = 100 shares < 300 by the cap
    decision = _manager().check_entry(_request(stop_paise=5_000), BOOK)
    assert decision.approved
    assert decision.quantity == 100


def test_kill_switch_refuses_entries() -> None:
    manager = _manager()
    manager.kill_switch.set(True, reason="test", at=ist(10), by="tester")
    decision = manager.check_entry(_request(), BOOK)
    assert not decision.approved
    assert decision.rule is RiskRule.KILL_SWITCH


@pytest.mark.parametrize(
    ("at", "approved"),
    [((9, 19, 59), False), ((9, 20, 0), True), ((14, 45, 0), True), ((14, 45, 1), False)],
)
def test_entry_window_edges(at: tuple[int, int, int], approved: bool) -> None:
    decision = _manager().check_entry(_request(*at), BOOK)
    assert decision.approved is approved
    if not approved:
        assert decision.rule is RiskRule.ENTRY_WINDOW


@pytest.mark.parametrize(("day_pnl", "approved"), [(-199_999, True), (-200_000, False)])
def test_daily_loss_limit_at_two_percent(day_pnl: int, approved: bool) -> None:
    decision = _manager().check_entry(_request(), replace(BOOK, day_pnl_paise=day_pnl))
    assert decision.approved is approved
    if not approved:
        assert decision.rule is RiskRule.DAILY_LOSS_LIMIT


def test_loss_limit_flag_stays_for_the_day_even_after_recovery() -> None:
    decision = _manager().check_entry(
        _request(), replace(BOOK, day_pnl_paise=50_000, loss_limit_hit=True)
    )
    assert decision.rule is RiskRule.DAILY_LOSS_LIMIT


@pytest.mark.parametrize(("open_positions", "approved"), [(2, True), (3, False)])
def test_at_most_three_positions(open_positions: int, approved: bool) -> None:
    decision = _manager().check_entry(_request(), replace(BOOK, open_positions=open_positions))
    assert decision.approved is approved
    if not approved:
        assert decision.rule is RiskRule.MAX_POSITIONS


def test_no_second_entry_in_the_same_instrument() -> None:
    decision = _manager().check_entry(_request(), replace(BOOK, in_position=True))
    assert decision.rule is RiskRule.ALREADY_IN_POSITION


def test_short_refused_unless_allowed() -> None:
    short = _request(direction=Direction.SHORT, stop_paise=10_500, target_paise=9_600)
    assert _manager().check_entry(short, BOOK).rule is RiskRule.SHORTS_DISABLED
    assert _manager(allow_short=True).check_entry(short, BOOK).approved


def test_orders_must_be_thirty_seconds_apart() -> None:
    manager = _manager()
    manager.rate_limiter.record(ist_ms(10, 0, 0))
    early = manager.check_entry(_request(10, 0, 29), BOOK)
    assert early.rule is RiskRule.ORDER_SPACING
    assert manager.check_entry(_request(10, 0, 30), BOOK).approved


def test_at_most_ten_orders_in_any_minute() -> None:
    manager = _manager(min_order_interval_s=0)
    for second in range(10):
        manager.rate_limiter.record(ist_ms(10, 0, second))
    assert manager.check_entry(_request(10, 0, 59), BOOK).rule is RiskRule.ORDER_RATE
    # the first order leaves the window 60 s after it was sent
    assert manager.check_entry(_request(10, 1, 0), BOOK).approved


def test_position_cap_refuses_when_one_lot_is_too_big() -> None:
    # one lot of 500 shares at Rs 100 = Rs 50,000 > Rs 30,000 cap
    decision = _manager().check_entry(_request(lot_size=500), BOOK)
    assert not decision.approved
    assert decision.rule is RiskRule.POSITION_SIZE


def test_whole_lots_only() -> None:
    # 300 shares allowed by the cap; lots of 75 -> 4 lots = 300; lots of 200 -> 1 lot = 200
    assert _manager().check_entry(_request(lot_size=75), BOOK).quantity == 300
    decision = _manager().check_entry(_request(lot_size=200), BOOK)
    assert (decision.lots, decision.quantity) == (1, 200)


def test_capital_refuses_when_cash_is_tied_up() -> None:
    decision = _manager().check_entry(_request(), replace(BOOK, available_paise=5_000))
    assert decision.rule is RiskRule.CAPITAL


def test_entry_window_is_configurable() -> None:
    decision = _manager(entry_start=time(10, 30)).check_entry(_request(10, 0), BOOK)
    assert decision.rule is RiskRule.ENTRY_WINDOW


def test_paused_entries_are_refused_with_the_reason() -> None:
    manager = _manager()
    manager.entries_paused = "Upstox token expired"
    decision = manager.check_entry(_request(), BOOK)
    assert decision.rule is RiskRule.ENTRIES_PAUSED
    assert "token expired" in decision.reason
    manager.entries_paused = None
    assert manager.check_entry(_request(), BOOK).approved


def test_stock_in_the_fno_ban_takes_no_entry() -> None:
    manager = _manager()
    manager.banned = frozenset({"K"})
    assert manager.check_entry(_request(), BOOK).rule is RiskRule.FNO_BAN
    assert manager.check_entry(_request(instrument_key="OTHER"), BOOK).approved


def test_a_date_the_calendar_does_not_know_takes_no_entry_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lim = make_limits()
    manager = RiskManager(
        lim,
        OrderRateLimiter(lim.max_orders_per_minute, lim.min_order_interval_s),
        KillSwitch(),
        calendar=NseCalendar.default(),
    )
    unknown = date(2028, 1, 3)  # a Monday of a year the shipped calendar has no list for
    at = ist(10, day=unknown)
    request = _request(at=at, at_ms=ist_ms(10, day=unknown))
    with caplog.at_level(logging.ERROR, logger="upstox_bot.risk.checks"):
        first = manager.check_entry(request, BOOK)
        second = manager.check_entry(request, BOOK)
    assert first.rule is second.rule is RiskRule.ENTRIES_PAUSED
    assert "does not know 2028-01-03" in first.reason
    assert manager.refuses_every_entry(at)
    assert [r.message for r in caplog.records] == ["calendar.unknown_date"]  # loud, once
    known = date(2027, 1, 27)  # provisional 2027 still trades
    assert manager.check_entry(
        _request(at=ist(10, day=known), at_ms=ist_ms(10, day=known)), BOOK
    ).approved
    assert _manager().check_entry(request, BOOK).approved  # no calendar (a backtest): no gate
