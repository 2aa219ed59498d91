"""Which ticks are kept for the record: the first of each instrument in each interval.

Storing every tick would fill the database; the bot keeps one tick per instrument every
TICK_STORE_INTERVAL_SECONDS. The rule depends only on the stream itself (a tick is kept when it
is its instrument's first in its interval, counted from the epoch), so every harness keeps the
same ticks: the embedded loop, the distributed ingest working batches in any order, and either
after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping


class TickSampler:
    """Says which ticks to keep (see the module).

    Args:
        interval_ms: the interval; 0 keeps none.
        last_ms: each instrument's last tick before the ones to judge (epoch ms), if known.
    """

    def __init__(self, interval_ms: int, last_ms: Mapping[str, int] | None = None) -> None:
        self.interval_ms = interval_ms
        self._bucket: dict[str, int] = (
            {k: int(v) // interval_ms for k, v in (last_ms or {}).items()} if interval_ms else {}
        )

    def keep(self, instrument_key: str, ts_ms: int) -> bool:
        """Whether this tick (the instrument's next, in time order) is kept."""
        if not self.interval_ms:
            return False
        bucket = ts_ms // self.interval_ms
        last = self._bucket.get(instrument_key)
        if last is not None and bucket <= last:
            return False
        self._bucket[instrument_key] = bucket
        return True

    def state(self) -> dict[str, int]:
        """Each instrument's last kept interval start (epoch ms), for `from_state`."""
        return {k: b * self.interval_ms for k, b in self._bucket.items()}

    @classmethod
    def from_state(cls, interval_ms: int, state: Mapping[str, int]) -> TickSampler:
        """A sampler that goes on after `state()` (a restart)."""
        return cls(interval_ms, state)
