"""Leases and locks in Redis: one holder at a time, an expiry, renewal, and a fencing token.

A lease is `SET name value NX PX ttl`; its value carries a fencing token (a counter incremented
on every acquisition) so that a holder can tell whether it still holds the lease, and a renewal
thread keeps it alive while the holder works. A holder that dies stops renewing: the lease
expires within `ttl_ms` and the next claimant takes it. The feed shards and the per-account
order lock are leases.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import redis

log = logging.getLogger(__name__)

# Renew only if we still hold it; if Redis lost the key (a restart without persistence), take it
# back unless someone else has meanwhile.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """An exclusive, expiring claim on `name` in Redis.

    Args:
        client: the Redis client.
        name: the key of the lease.
        ttl_ms: how long the lease lives without renewal (milliseconds).
        owner: who holds it (shown in the key's value; default a random id).
    """

    def __init__(
        self, client: redis.Redis, name: str, *, ttl_ms: int, owner: str | None = None
    ) -> None:
        self.client = client
        self.name = name
        self.ttl_ms = ttl_ms
        self.owner = owner or uuid.uuid4().hex[:12]
        self.token: int | None = None  # fencing token of the current hold
        self.lost = threading.Event()
        self._value: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def value(self) -> str | None:
        return self._value

    def acquire(self) -> bool:
        """Take the lease if it is free; True when this instance now holds it."""
        token = int(self.client.incr(f"{self.name}:fence"))
        value = f"{self.owner}:{token}"
        if self.client.set(self.name, value, nx=True, px=self.ttl_ms):
            self.token, self._value = token, value
            self.lost.clear()
            return True
        return False

    def acquire_blocking(self, timeout_s: float, poll_s: float = 0.02) -> bool:
        """Wait up to `timeout_s` seconds for the lease; True when acquired."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.acquire():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

    def renew(self) -> bool:
        """Extend the lease; False (and `lost` set) when another holder has it now."""
        if self._value is None:
            return False
        result = int(self.client.eval(_RENEW, 1, self.name, self._value, self.ttl_ms))
        if result == 2:
            log.warning("lease.retaken", extra={"lease": self.name})
        if result == 0:
            self.lost.set()
            return False
        return True

    def held(self) -> bool:
        """Whether Redis says this instance holds the lease now."""
        return self._value is not None and self.client.get(self.name) == self._value.encode()

    def release(self) -> None:
        """Give the lease up (only if still ours)."""
        self.stop_renewing()
        if self._value is not None:
            try:
                self.client.eval(_RELEASE, 1, self.name, self._value)
            except redis.RedisError:
                log.warning("lease.release_failed", extra={"lease": self.name})
        self._value = None
        self.token = None

    def start_renewing(self) -> None:
        """Renew in a background thread every third of the ttl until released."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease:{self.name}", daemon=True
        )
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.ttl_ms / 1000)
        self._thread = None

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.error("lease.lost", extra={"lease": self.name})
                    return
            except redis.RedisError:
                # Redis is away (restarting): keep trying; the lease may expire meanwhile.
                log.warning("lease.renew_failed", extra={"lease": self.name})

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextmanager
def hold(
    client: redis.Redis, name: str, *, ttl_ms: int, timeout_s: float, owner: str | None = None
) -> Iterator[Lease | None]:
    """Hold the lease `name` for the block, renewed in the background.

    Yields the held lease, or None when it could not be taken within `timeout_s` seconds.
    """
    lease = Lease(client, name, ttl_ms=ttl_ms, owner=owner)
    if not lease.acquire_blocking(timeout_s):
        yield None
        return
    lease.start_renewing()
    try:
        yield lease
    finally:
        lease.release()
