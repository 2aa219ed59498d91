"""Order rate limits: at most N orders in any rolling minute and a minimum gap between orders."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from upstox_bot.domain import RiskRule

WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class RateCheck:
    allowed: bool
    rule: RiskRule | None = None
    wait_ms: int = 0  # how long until an order would be allowed


class OrderRateLimiter:
    """In-process limiter on market time (epoch ms). The distributed harness keeps the same
    windows in Redis; after a restart the windows are rebuilt from rate_limit_logs (restore()).
    """

    def __init__(self, max_per_minute: int, min_interval_s: int) -> None:
        self.max_per_minute = max_per_minute
        self.min_interval_ms = min_interval_s * 1000
        self._sent: deque[int] = deque()

    def restore(self, sent_ms: Iterable[int]) -> None:
        """Rebuild the windows from the times of orders already sent."""
        self._sent = deque(sorted(sent_ms))

    def _prune(self, now_ms: int) -> None:
        while self._sent and self._sent[0] <= now_ms - WINDOW_MS:
            self._sent.popleft()

    def check(self, now_ms: int) -> RateCheck:
        """Whether an order may be sent at now_ms, and if not which rule says no."""
        self._prune(now_ms)
        if self._sent:
            gap = now_ms - self._sent[-1]
            if gap < self.min_interval_ms:
                return RateCheck(False, RiskRule.ORDER_SPACING, self.min_interval_ms - gap)
        if len(self._sent) >= self.max_per_minute:
            return RateCheck(False, RiskRule.ORDER_RATE, self._sent[0] + WINDOW_MS - now_ms)
        return RateCheck(True)

    def record(self, now_ms: int) -> None:
        """Count an order sent at now_ms."""
        self._sent.append(now_ms)

    @property
    def last_sent_ms(self) -> int | None:
        return self._sent[-1] if self._sent else None

    def sent_in_window(self, now_ms: int) -> int:
        self._prune(now_ms)
        return len(self._sent)
