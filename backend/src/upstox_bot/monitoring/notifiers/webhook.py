"""Generic webhook channel: the alert as a JSON POST to one URL."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from upstox_bot import __version__
from upstox_bot.monitoring.alerts.model import Alert
from upstox_bot.monitoring.notifiers._http import status_error, transport_error


class WebhookNotifier:
    """POSTs `Alert.as_json()` to a URL; any 2xx is success. The URL is treated as a secret."""

    name = "webhook"

    def __init__(
        self,
        *,
        url: SecretStr,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Set up the channel; `url` often embeds a token (Slack, Discord), so it stays hidden."""
        self._url = url
        self._client = httpx.Client(
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": f"upstox-bot/{__version__}"},
        )

    def __repr__(self) -> str:
        return "WebhookNotifier(url=***)"

    def send(self, alert: Alert) -> None:
        """Post the alert.

        Raises:
            AlertDeliveryError: the request failed or the receiver answered other than 2xx.
        """
        url = self._url.get_secret_value()
        try:
            response = self._client.post(url, json=alert.as_json())
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from None
        if response.is_success:
            return
        retry_after = response.headers.get("Retry-After", "")
        raise status_error(
            response.status_code,
            response.reason_phrase,
            retry_after_s=float(retry_after) if retry_after.isdigit() else None,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
