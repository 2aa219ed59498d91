"""Waiting for a condition in tests: poll until it holds, with a generous limit for busy machines.

A test waits for what it needs (an order filled, a connection open), never for a fixed time.
The limit only stops a test that would otherwise hang; it is far above what the condition takes
on a loaded machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_LIMIT_S = 30.0


def wait_until(
    predicate: Callable[[], T], *, limit_s: float = DEFAULT_LIMIT_S, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    Raises:
        AssertionError: it did not hold within ``limit_s``.
    """
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {limit_s:g} s")
        time.sleep(0.01)


async def eventually(
    predicate: Callable[[], T], *, limit_s: float = DEFAULT_LIMIT_S, what: str = "condition"
) -> T:
    """:func:`wait_until` for async tests: yields to the event loop between polls."""
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {limit_s:g} s")
        await asyncio.sleep(0.01)
