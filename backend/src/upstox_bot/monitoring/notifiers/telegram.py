"""Telegram channel: the Bot API's sendMessage, as plain text to one chat."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from pydantic import SecretStr

from upstox_bot.monitoring.alerts.model import Alert
from upstox_bot.monitoring.notifiers._http import status_error, transport_error

MAX_TEXT_CHARS = 4096  # Telegram's limit for one message


class RedactToken(logging.Filter):
    """Blanks the bot token in httpx's request log lines (the token is part of every URL)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg, record.args = message.replace(self._token, "***"), None
        return True


class TelegramNotifier:
    """Posts alerts to `{base_url}/bot{token}/sendMessage` (the token never leaves the URL)."""

    name = "telegram"

    def __init__(
        self,
        *,
        base_url: str,
        bot_token: SecretStr,
        chat_id: str,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Set up the channel.

        Args:
            base_url: the Bot API root, https://api.telegram.org in production.
            chat_id: the chat, group or channel id (or @channelname) to write to.
        """
        self._base_url = base_url.rstrip("/")
        self._token = bot_token
        self._chat_id = chat_id
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._redact = RedactToken(bot_token.get_secret_value())
        logging.getLogger("httpx").addFilter(self._redact)

    def __repr__(self) -> str:
        return f"TelegramNotifier(base_url={self._base_url!r}, chat_id={self._chat_id!r})"

    def send(self, alert: Alert) -> None:
        """Send the alert as one message.

        Raises:
            AlertDeliveryError: the request failed (retryable) or Telegram refused it.
        """
        token = self._token.get_secret_value()
        text = alert.as_text()
        if len(text) > MAX_TEXT_CHARS:
            text = text[: MAX_TEXT_CHARS - 1] + "…"
        body = {"chat_id": self._chat_id, "text": text, "disable_web_page_preview": True}
        try:
            response = self._client.post(f"{self._base_url}/bot{token}/sendMessage", json=body)
        except httpx.HTTPError as exc:
            raise transport_error(exc, token) from None
        reply = _json_or_empty(response)
        if response.is_success and reply.get("ok", True) is not False:
            return
        detail = str(reply.get("description") or response.reason_phrase).replace(token, "***")
        parameters = reply.get("parameters")
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        status = response.status_code if not response.is_success else 400
        raise status_error(
            status,
            detail,
            retry_after_s=float(retry_after) if isinstance(retry_after, int | float) else None,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        logging.getLogger("httpx").removeFilter(self._redact)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
