"""Whether the broker takes order writes now, and why not: the account-level refusals.

Some refusals are about the account, not the order: Upstox refused the token, the request did
not come from the registered static IP (UDAPI1154), the X-Algo-Name is not registered
(UDAPI1156), the order APIs answer 401 while reads accept the token (reported in 2026), or the
app may not trade. Sending the next order would be refused the same way, so while the gate is
blocked entries are paused, exits wait in the order desk's queue (never dropped), and one waiting
exit goes out as a probe every ``retry_every_ms`` (right after a login when the token was the
cause). The first order Upstox accepts opens the gate again.

Plain Python, no I/O: the order desk (``trading.desk``) feeds it and reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BlockCause(StrEnum):
    """Why the broker refuses every order write of the account."""

    TOKEN = "token"  # noqa: S105 (a cause, not a secret) - Upstox refused the token (checked with a read)
    STATIC_IP = "static_ip"  # UDAPI1154, or HTTP 403 on an order write (API.md 8.4, 9.2)
    ALGO = "algo"  # UDAPI1156: X-Algo-Name not registered or not approved (API.md 9.2)
    ORDER_API = "order_api"  # order APIs answer 401 while a read accepts the token (API.md 13)
    ACCOUNT = "account"  # UDAPI100049, UDAPI1179-1181: the app or account may not trade here


WHAT_TO_DO: dict[BlockCause, str] = {
    BlockCause.TOKEN: "log in again (GET /api/v1/auth/upstox/login or `upstox-bot login`)",
    BlockCause.STATIC_IP: (
        "register this machine's public IP as the static IP of your Upstox app (My Apps > "
        "Static IPs; a change invalidates the token: log in again afterwards)"
    ),
    BlockCause.ALGO: (
        "set UPSTOX_ALGO_NAME to an approved Algo Name of your app, or unset it if you run no "
        "exchange-registered algo"
    ),
    BlockCause.ORDER_API: (
        "Upstox refuses the order APIs while the token works for reads: check that this "
        "machine's IP is the registered static IP and that the app's algo registration is "
        "approved; then log in again if it persists"
    ),
    BlockCause.ACCOUNT: (
        "your Upstox app or account may not place orders here: check the app's status, its "
        "segments and static-IP configuration on the Upstox developer console"
    ),
}


@dataclass(slots=True)
class OrderGate:
    """Open, or blocked by one cause (see the module doc). Times are epoch ms of the harness.

    Args:
        retry_every_ms: while blocked (for a cause other than the token), how often one held
            exit is sent as a probe.
    """

    retry_every_ms: int = 60_000
    cause: BlockCause | None = None
    reason: str = ""
    since_ms: int = 0
    last_probe_ms: int = 0
    blocks: int = 0  # times the gate was blocked (a new cause counts again)

    @property
    def blocked(self) -> bool:
        return self.cause is not None

    def block(self, cause: BlockCause, reason: str, now_ms: int) -> bool:
        """Record a refusal; True when the gate was open or blocked for another cause (alert
        then, once)."""
        changed = self.cause is not cause
        if changed:
            self.since_ms = now_ms
            self.blocks += 1
        self.cause = cause
        self.reason = reason
        self.last_probe_ms = now_ms
        return changed

    def clear(self) -> bool:
        """The broker accepted an order write: open again; True when it was blocked."""
        was = self.cause is not None
        self.cause = None
        self.reason = ""
        return was

    def probe_due(self, now_ms: int, *, token_usable: bool) -> bool:
        """Whether a held exit should be tried now: at once when the gate is open; for a
        refused token as soon as a usable token is back; else every ``retry_every_ms``."""
        if self.cause is None:
            return True
        if self.cause is BlockCause.TOKEN:
            return token_usable and now_ms > self.last_probe_ms
        return now_ms - self.last_probe_ms >= self.retry_every_ms

    def probing(self, now_ms: int) -> None:
        """A probe goes out now."""
        self.last_probe_ms = now_ms

    def describe(self) -> str:
        """One line for the trader: the cause, Upstox's words, and what to do."""
        if self.cause is None:
            return "orders go through"
        return (
            f"orders blocked ({self.cause.value}): {self.reason}. To fix: {WHAT_TO_DO[self.cause]}"
        )
