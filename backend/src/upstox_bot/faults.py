"""Crash points for recovery tests: kill the process with SIGKILL at a named point.

Set UPSTOX_BOT_CRASH_AT="point:n" (e.g. "order.placed:3") and the process kills itself the n-th
time it reaches that point. Unset (always, in production) this costs one global lookup per call.
Points: order.recorded (on disk as SUBMITTING, not yet sent), order.placed (the broker accepted
it, the result not yet on disk), fill.applied (the fill applied to the order, the position not
yet updated), exit.sent (an exit order created), flush.committed (a batch committed).
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("UPSTOX_BOT_CRASH_AT", "")
_POINT, _, _COUNT = _SPEC.partition(":")
_TARGET = int(_COUNT) if _COUNT.isdigit() else 1
_hits = 0
ENABLED = bool(_POINT)


def point(name: str) -> None:
    """Kill the process here if this is the configured crash point and occurrence."""
    global _hits
    if name != _POINT:
        return
    _hits += 1
    if _hits >= _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
