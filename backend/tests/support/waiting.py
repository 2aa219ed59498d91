"""Waiting for a condition in a test: poll it until it holds, or fail saying what never came.

The limit only ends a wait that would otherwise hang; a test never waits it out on success,
so a busy machine only makes a passing test slower, never a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.05


def wait_until(predicate: Callable[[], T], *, timeout_s: float = 60.0, what: str = "") -> T:
    """Call `predicate` until it returns something true, and return that.

    Raises:
        AssertionError: it was still false after `timeout_s` (naming `what`).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:g} s waiting for {what or predicate}")
        time.sleep(POLL_S)
