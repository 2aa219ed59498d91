"""Client-side rate limiting for Upstox: stay under the documented limits instead of earning 429s.

Upstox limits each API (endpoint) per user over three windows (API.md 8.3):

=========================  ==========  ==========  ==============
API group                  per second  per minute  per 30 minutes
=========================  ==========  ==========  ==============
standard (incl. single     50          500         2000
place/modify/cancel)
multi-order (multi place,  4           40          160
cancel multi, exit all)
=========================  ==========  ==========  ==============

On top, the exchange's retail algo rule (API.md 9.2) allows at most 10 orders per second without
algo registration; :data:`ORDER_RATE_WINDOWS` keeps every order write (place, modify, cancel) of
the account under it, across exchanges (stricter than the per-exchange rule, on purpose).

The limiter keeps a sliding log of call times per window, so no window of the given length ever
holds more calls than its limit (stricter than Upstox's own counting, whatever it is). A 429 from
Upstox pauses the endpoint's limiter for the back-off time through :meth:`RateLimiter.penalize`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

MonotonicClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``limit`` calls in any ``seconds`` long stretch."""

    seconds: float
    limit: int

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.limit < 1:
            raise ValueError(f"invalid rate window {self.limit}/{self.seconds}s")


class ApiCategory(StrEnum):
    """Upstox's rate-limit groups (API.md 8.3)."""

    STANDARD = "standard"
    MULTI_ORDER = "multi_order"


CATEGORY_WINDOWS: dict[ApiCategory, tuple[Window, ...]] = {
    ApiCategory.STANDARD: (Window(1, 50), Window(60, 500), Window(1800, 2000)),
    ApiCategory.MULTI_ORDER: (Window(1, 4), Window(60, 40), Window(1800, 160)),
}

ORDER_RATE_WINDOWS: tuple[Window, ...] = (Window(1, 10),)
"""The retail order-rate threshold of API.md 9.2: at most 10 order writes per second."""


class SlidingWindowLimiter:
    """Admits calls so that every window keeps to its limit; waits when one is full.

    Args:
        windows: the windows to respect together.
        clock: monotonic seconds; injectable for tests.
        sleep: the async sleep; injectable for tests.
    """

    def __init__(
        self,
        windows: Sequence[Window],
        *,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not windows:
            raise ValueError("a limiter needs at least one window")
        self._windows = tuple(windows)
        self._longest = max(w.seconds for w in self._windows)
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()
        self._paused_until = float("-inf")
        self._lock: asyncio.Lock | None = None

    @property
    def windows(self) -> tuple[Window, ...]:
        return self._windows

    def delay(self) -> float:
        """Seconds until one more call is allowed (0 when it is allowed now)."""
        now = self._clock()
        self._forget(now)
        wait = max(0.0, self._paused_until - now)
        for window in self._windows:
            start = now - window.seconds
            # calls still inside this window, oldest first
            inside = [t for t in self._calls if t > start]
            if len(inside) >= window.limit:
                # the call that must leave the window before one more fits
                leaving = inside[len(inside) - window.limit]
                wait = max(wait, leaving + window.seconds - now)
        return wait

    def try_acquire(self) -> bool:
        """Record a call and return True if it is allowed now; else record nothing, return False."""
        if self.delay() > 0:
            return False
        self._calls.append(self._clock())
        return True

    async def acquire(self) -> float:
        """Wait until a call is allowed, record it, and return the seconds waited.

        Callers are admitted one at a time in arrival order.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            while True:
                wait = self.delay()
                if wait <= 0:
                    self._calls.append(self._clock())
                    return waited
                await self._sleep(wait)
                waited += wait

    def penalize(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` from now (after a 429); a longer pause already set wins."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _forget(self, now: float) -> None:
        horizon = now - self._longest
        while self._calls and self._calls[0] <= horizon:
            self._calls.popleft()


class RateLimiter:
    """One :class:`SlidingWindowLimiter` per Upstox endpoint, plus the account's order-rate cap.

    Args:
        clock: monotonic seconds; injectable for tests.
        sleep: the async sleep; injectable for tests.
        category_windows: windows per API group; defaults to API.md 8.3.
        order_windows: windows for order writes; defaults to 10 per second (API.md 9.2).
    """

    def __init__(
        self,
        *,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        category_windows: dict[ApiCategory, tuple[Window, ...]] | None = None,
        order_windows: Sequence[Window] = ORDER_RATE_WINDOWS,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._category_windows = dict(category_windows or CATEGORY_WINDOWS)
        self._endpoints: dict[str, SlidingWindowLimiter] = {}
        self._orders = SlidingWindowLimiter(order_windows, clock=clock, sleep=sleep)

    def endpoint(
        self, name: str, category: ApiCategory = ApiCategory.STANDARD
    ) -> SlidingWindowLimiter:
        """The limiter of one endpoint (created on first use with its group's windows)."""
        limiter = self._endpoints.get(name)
        if limiter is None:
            limiter = SlidingWindowLimiter(
                self._category_windows[category], clock=self._clock, sleep=self._sleep
            )
            self._endpoints[name] = limiter
        return limiter

    async def acquire(
        self,
        name: str,
        category: ApiCategory = ApiCategory.STANDARD,
        *,
        order_write: bool = False,
    ) -> float:
        """Wait until a call to endpoint ``name`` is allowed; return the seconds waited.

        Args:
            name: the endpoint, e.g. ``"GET /v2/order/retrieve-all"`` (path templates, not values).
            category: its rate-limit group.
            order_write: the call places, modifies or cancels an order (order-rate cap applies).
        """
        waited = 0.0
        if order_write:
            waited += await self._orders.acquire()
        waited += await self.endpoint(name, category).acquire()
        return waited

    def penalize(
        self, name: str, seconds: float, category: ApiCategory = ApiCategory.STANDARD
    ) -> None:
        """Pause endpoint ``name`` for ``seconds`` (it answered 429)."""
        self.endpoint(name, category).penalize(seconds)
