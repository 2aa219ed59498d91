from __future__ import annotations

from upstox_bot.domain import RiskRule
from upstox_bot.risk.rate_limit import OrderRateLimiter


def test_spacing_reports_the_wait() -> None:
    limiter = OrderRateLimiter(10, 30)
    limiter.record(1_000_000)
    check = limiter.check(1_010_000)
    assert (check.allowed, check.rule, check.wait_ms) == (False, RiskRule.ORDER_SPACING, 20_000)


def test_restore_rebuilds_the_windows_after_a_restart() -> None:
    limiter = OrderRateLimiter(2, 0)
    limiter.restore([1_000, 2_000])
    assert limiter.check(30_000).rule is RiskRule.ORDER_RATE
    assert limiter.check(61_001).allowed
    assert limiter.sent_in_window(61_001) == 1
