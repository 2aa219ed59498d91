"""What the HTTP channels share: turning an httpx outcome into success or an AlertDeliveryError."""

from __future__ import annotations

import httpx

from upstox_bot.monitoring.alerts.delivery import AlertDeliveryError

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def transport_error(exc: httpx.HTTPError, *secrets: str) -> AlertDeliveryError:
    """A retryable delivery error for a failed request, its text scrubbed of the secrets."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return AlertDeliveryError(text, retryable=True)


def status_error(
    status: int, detail: str, retry_after_s: float | None = None
) -> AlertDeliveryError:
    """The delivery error for an HTTP status that is not success; 408/429/5xx are retryable."""
    shown = f": {detail[:200]}" if detail else ""
    return AlertDeliveryError(
        f"HTTP {status}{shown}",
        retryable=status in RETRYABLE_STATUS or status >= 500,
        retry_after_s=retry_after_s,
    )
