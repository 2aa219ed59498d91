"""The client-side Upstox rate limiter, on a fake monotonic clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upstox_bot.upstox.ratelimit import (
    CATEGORY_WINDOWS,
    ORDER_RATE_WINDOWS,
    ApiCategory,
    RateLimiter,
    SlidingWindowLimiter,
    Window,
)


class FakeClock:
    """A monotonic clock that only moves when told to (or when the limiter sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_documented_limits_per_category() -> None:
    standard = {(w.seconds, w.limit) for w in CATEGORY_WINDOWS[ApiCategory.STANDARD]}
    multi = {(w.seconds, w.limit) for w in CATEGORY_WINDOWS[ApiCategory.MULTI_ORDER]}
    assert standard == {(1, 50), (60, 500), (1800, 2000)}
    assert multi == {(1, 4), (60, 40), (1800, 160)}
    assert [(w.seconds, w.limit) for w in ORDER_RATE_WINDOWS] == [(1, 10)]


def test_window_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="invalid rate window"):
        Window(0, 5)
    with pytest.raises(ValueError, match="invalid rate window"):
        Window(1, 0)


def test_try_acquire_when_window_full_refuses_until_oldest_call_leaves() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter([Window(1, 3)], clock=clock, sleep=clock.sleep)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, True]
    assert limiter.try_acquire() is False
    assert limiter.delay() == pytest.approx(1.0)
    clock.now += 0.999
    assert limiter.try_acquire() is False
    clock.now += 0.001
    assert limiter.try_acquire() is True


async def test_acquire_beyond_per_second_limit_waits_one_second() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(
        CATEGORY_WINDOWS[ApiCategory.STANDARD], clock=clock, sleep=clock.sleep
    )
    start = clock.now
    for _ in range(50):
        assert await limiter.acquire() == 0
    waited = await limiter.acquire()
    assert waited == pytest.approx(1.0)
    assert clock.now - start == pytest.approx(1.0)


async def test_acquire_when_minute_window_full_waits_for_minute_window() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter([Window(1, 50), Window(60, 500)], clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(500):
        await limiter.acquire()
    # 500 calls at 50/s take 9 s; the 501st must wait until the first call is 60 s old
    assert clock.now - start == pytest.approx(9.0)
    await limiter.acquire()
    assert clock.now - start == pytest.approx(60.0)


async def test_penalize_pauses_the_limiter() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter([Window(1, 50)], clock=clock, sleep=clock.sleep)
    limiter.penalize(2.5)
    limiter.penalize(1.0)  # a shorter pause does not shorten the longer one
    assert await limiter.acquire() == pytest.approx(2.5)


async def test_rate_limiter_keeps_endpoints_apart_but_caps_order_writes_together() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(50):
        await limiter.acquire("GET /a")
    # another endpoint has its own windows
    assert await limiter.acquire("GET /b") == 0
    for _ in range(5):
        await limiter.acquire("POST /v3/order/place", order_write=True)
    for _ in range(5):
        await limiter.acquire("DELETE /v3/order/cancel", order_write=True)
    # the 11th order write of the second waits for the retail threshold (10/s)
    waited = await limiter.acquire("PUT /v3/order/modify", order_write=True)
    assert waited == pytest.approx(1.0)


async def test_rate_limiter_multi_order_category_uses_its_own_limits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await limiter.acquire("POST /v2/order/multi/place", ApiCategory.MULTI_ORDER)
    waited = await limiter.acquire("POST /v2/order/multi/place", ApiCategory.MULTI_ORDER)
    assert waited == pytest.approx(1.0)


@settings(max_examples=60)
@given(gaps=st.lists(st.floats(min_value=0, max_value=0.4), min_size=1, max_size=120))
async def test_no_window_ever_holds_more_than_its_limit(gaps: list[float]) -> None:
    clock = FakeClock()
    windows = [Window(1, 4), Window(5, 10)]
    limiter = SlidingWindowLimiter(windows, clock=clock, sleep=clock.sleep)
    admitted: list[float] = []
    for gap in gaps:
        clock.now += gap
        await limiter.acquire()
        admitted.append(clock.now)
    for window in windows:
        for i, start in enumerate(admitted):
            inside = [t for t in admitted[i:] if t < start + window.seconds]
            assert len(inside) <= window.limit
