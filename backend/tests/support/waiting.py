"""The one way tests wait: poll a condition until it holds (or await one thing within a bound),
or fail saying what never happened.

Tests synchronise on what they can observe (a row, a key, a process state), never on a fixed
sleep. The bound is generous (a busy machine is slow, not wrong): it only turns a hang into a
failure that names the condition, well inside pytest's own timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

DEFAULT_WITHIN_S = 120.0


def wait_until(
    condition: Callable[[], T | None],
    *,
    what: str,
    within_s: float = DEFAULT_WITHIN_S,
    every_s: float = 0.05,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns a truthy value, and return that value.

    Args:
        what: the awaited fact, for the failure message ("the session finished").
        within_s: how long to wait before failing the test (generous on purpose).
        every_s: the pause between polls.
        details: more to say when it fails (logs, state).
    """
    deadline = time.monotonic() + within_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            pytest.fail(f"waited {within_s:g} s for {what}, in vain{extra}")
        time.sleep(every_s)


async def wait_until_async(
    condition: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    *,
    what: str,
    within_s: float = DEFAULT_WITHIN_S,
    every_s: float = 0.02,
) -> T:
    """`wait_until` for a coroutine test (the condition may be a coroutine function)."""
    deadline = time.monotonic() + within_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"waited {within_s:g} s for {what}, in vain")
        await asyncio.sleep(every_s)


async def within(awaitable: Awaitable[T], *, what: str, within_s: float = DEFAULT_WITHIN_S) -> T:
    """Await `awaitable` (a frame, a connection), failing the test if it takes longer.

    Args:
        what: the awaited fact, for the failure message ("the next frame").
        within_s: how long to wait before failing the test (generous on purpose).
    """
    bound = asyncio.timeout(within_s)
    try:
        async with bound:
            return await awaitable
    except TimeoutError:
        if not bound.expired():
            raise  # the awaited code's own timeout, not this bound
        pytest.fail(f"waited {within_s:g} s for {what}, in vain")
