"""Delivering one alert on one channel: the channel protocol, its errors and bounded retries."""

from __future__ import annotations

import logging
import time as walltime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from upstox_bot.monitoring.alerts.model import Alert

log = logging.getLogger(__name__)


class AlertDeliveryError(Exception):
    """A channel could not deliver an alert. `retryable` is True for transient failures.

    The message never carries a secret (token, password, webhook URL).
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Notifier(Protocol):
    """One alert channel (Telegram, webhook, email)."""

    @property
    def name(self) -> str:
        """The channel's name as ALERT_CHANNELS spells it."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver one alert, blocking until done.

        Raises:
            AlertDeliveryError: delivery failed; `retryable` tells whether to try again.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded retries of transient failures: attempts in all, exponential delays in seconds."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 10.0

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        delay: float = self.base_delay_s * 2.0 ** (attempt - 1)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return min(delay, self.max_delay_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    """The outcome of sending one alert on one channel."""

    channel: str
    ok: bool
    attempts: int
    error: str = ""


def deliver(
    notifier: Notifier,
    alert: Alert,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], bool] | None = None,
) -> DeliveryResult:
    """Send `alert` on one channel, retrying transient failures as `retry` allows; never raises.

    Args:
        sleep: waits the given seconds and returns True to go on, False to give up (shutdown);
            default time.sleep.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            notifier.send(alert)
        except AlertDeliveryError as exc:
            error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after_s
        except Exception as exc:  # a channel bug must not kill the dispatcher
            error, retryable, retry_after = f"{type(exc).__name__}", False, None
            log.exception("alert.channel_error", extra={"channel": notifier.name})
        else:
            return DeliveryResult(channel=notifier.name, ok=True, attempts=attempt)
        if not retryable or attempt >= retry.max_attempts:
            return DeliveryResult(channel=notifier.name, ok=False, attempts=attempt, error=error)
        delay = retry.delay_s(attempt, retry_after)
        if sleep is None:
            walltime.sleep(delay)
        elif not sleep(delay):
            return DeliveryResult(channel=notifier.name, ok=False, attempts=attempt, error=error)
