"""Every exit path over scripted price sequences."""

from __future__ import annotations

from tests.support.factories import make_exit_rules, make_position
from upstox_bot.domain import Direction, ExitReason
from upstox_bot.trading.exits import ExitManager


def _run(prices: list[int], **position: object) -> tuple[ExitReason | None, int, object]:
    manager = ExitManager(make_exit_rules())
    pos = make_position(**position)
    for i, price in enumerate(prices):
        reason, _ = manager.on_price(pos, price)
        if reason is not None:
            return reason, i, pos
    return None, len(prices), pos


def test_levels_are_five_below_and_four_above() -> None:
    assert make_exit_rules().levels(Direction.LONG, 94_050) == (89_348, 97_812)
    assert make_exit_rules().levels(Direction.SHORT, 10_000) == (10_500, 9_600)


def test_stop_loss_at_five_percent_below_entry() -> None:
    reason, index, _ = _run([10_000, 9_600, 9_501, 9_500, 9_400])
    assert (reason, index) == (ExitReason.STOP_LOSS, 3)


def test_touching_take_profit_arms_trailing_without_selling() -> None:
    reason, _, pos = _run([10_100, 10_400, 10_300])
    assert reason is None
    assert pos.trailing_active  # type: ignore[attr-defined]
    assert pos.best_price_paise == 10_400  # type: ignore[attr-defined]
    assert pos.trail_stop_paise == 10_192  # type: ignore[attr-defined]  # 2% below 10,400


def test_trailing_stop_follows_the_high_and_exits_two_percent_below_it() -> None:
    # target at 10,400; high 11,000 -> trail 10,780; exit on the first price at or below it
    reason, index, pos = _run([10_400, 10_800, 11_000, 10_900, 10_781, 10_780, 10_000])
    assert (reason, index) == (ExitReason.TRAILING_STOP, 5)
    assert pos.best_price_paise == 11_000  # type: ignore[attr-defined]


def test_trailing_never_moves_down() -> None:
    manager = ExitManager(make_exit_rules())
    pos = make_position()
    for price in (10_500, 10_450, 10_300):
        manager.on_price(pos, price)
    assert pos.trail_stop_paise == 10_290  # from the high of 10,500


def test_hard_stop_still_applies_after_trailing_is_armed() -> None:
    manager = ExitManager(make_exit_rules(trailing_stop_pct=50))
    pos = make_position()
    manager.on_price(pos, 10_400)  # arms a 50% trail at 5,200: below the hard stop
    reason, _ = manager.on_price(pos, 9_500)
    assert reason is ExitReason.STOP_LOSS


def test_no_exit_while_price_stays_between_stop_and_target() -> None:
    reason, _, pos = _run([9_501, 10_399, 9_800, 10_200])
    assert reason is None
    assert not pos.trailing_active  # type: ignore[attr-defined]


def test_short_position_mirrors_the_rules() -> None:
    kw = {"direction": Direction.SHORT, "stop_paise": 10_500, "target_paise": 9_600}
    assert _run([10_200, 10_500], **kw)[:2] == (ExitReason.STOP_LOSS, 1)
    reason, index, pos = _run([9_600, 9_000, 9_100, 9_180], **kw)
    assert (reason, index) == (ExitReason.TRAILING_STOP, 3)  # 2% above the low of 9,000
    assert pos.trail_stop_paise == 9_180  # type: ignore[attr-defined]


def test_state_change_is_reported_for_persistence() -> None:
    manager = ExitManager(make_exit_rules())
    pos = make_position()
    assert manager.on_price(pos, 10_100) == (None, False)
    assert manager.on_price(pos, 10_400) == (None, True)  # armed
    assert manager.on_price(pos, 10_300) == (None, False)
    assert manager.on_price(pos, 10_500) == (None, True)  # new high
