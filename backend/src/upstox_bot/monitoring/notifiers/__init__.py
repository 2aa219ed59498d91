"""Alert channels (Telegram, a webhook, email over SMTP) and the dispatcher, built from settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from upstox_bot.clock import LiveClock
from upstox_bot.errors import ConfigError
from upstox_bot.monitoring.alerts.delivery import DeliveryResult, Notifier, RetryPolicy, deliver
from upstox_bot.monitoring.alerts.dispatcher import AlertDispatcher
from upstox_bot.monitoring.alerts.model import AlertKind, make_alert
from upstox_bot.monitoring.notifiers.email import EmailNotifier
from upstox_bot.monitoring.notifiers.telegram import TelegramNotifier
from upstox_bot.monitoring.notifiers.webhook import WebhookNotifier

if TYPE_CHECKING:
    from upstox_bot.clock import Clock
    from upstox_bot.config import Settings

__all__ = [
    "EmailNotifier",
    "TelegramNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "dispatcher_from_settings",
    "send_test_alert",
]

CHANNEL_NAMES = ("telegram", "webhook", "email")
IMPLICIT_TLS_PORT = 465  # SMTPS: TLS from the first byte instead of STARTTLS


def _need(channel: str, **values: object) -> None:
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(f"alert channel {channel} needs {', '.join(missing)}")


def _build(settings: Settings, channel: str) -> Notifier:
    timeout_s = settings.ALERT_TIMEOUT_SECONDS
    if channel == "telegram":
        token, chat_id = settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID
        _need(channel, TELEGRAM_BOT_TOKEN=token, TELEGRAM_CHAT_ID=chat_id)
        if token is None or chat_id is None:  # for the type checker: _need raised already
            raise ConfigError("alert channel telegram needs TELEGRAM_BOT_TOKEN")
        return TelegramNotifier(
            base_url=settings.TELEGRAM_API_BASE_URL,
            bot_token=token,
            chat_id=chat_id,
            timeout_s=timeout_s,
        )
    if channel == "webhook":
        url = settings.ALERT_WEBHOOK_URL
        if url is None or not url.get_secret_value():
            raise ConfigError("alert channel webhook needs ALERT_WEBHOOK_URL")
        return WebhookNotifier(url=url, timeout_s=timeout_s)
    host, sender = settings.SMTP_HOST, settings.ALERT_EMAIL_FROM
    _need(channel, SMTP_HOST=host, ALERT_EMAIL_FROM=sender, ALERT_EMAIL_TO=settings.ALERT_EMAIL_TO)
    if settings.SMTP_USERNAME and settings.SMTP_PASSWORD is None:
        raise ConfigError("alert channel email needs SMTP_PASSWORD (SMTP_USERNAME is set)")
    if host is None or sender is None:  # for the type checker: _need raised already
        raise ConfigError("alert channel email needs SMTP_HOST and ALERT_EMAIL_FROM")
    return EmailNotifier(
        host=host,
        port=settings.SMTP_PORT,
        sender=sender,
        recipients=list(settings.ALERT_EMAIL_TO),
        username=settings.SMTP_USERNAME,
        password=settings.SMTP_PASSWORD,
        starttls=settings.SMTP_STARTTLS,
        implicit_tls=settings.SMTP_PORT == IMPLICIT_TLS_PORT,
        timeout_s=timeout_s,
    )


def build_notifiers(settings: Settings, channels: Sequence[str]) -> list[Notifier]:
    """One notifier per named channel, in the order given.

    Raises:
        ConfigError: a channel name is unknown, repeated, or lacks its settings (named).
    """
    notifiers: list[Notifier] = []
    seen: set[str] = set()
    for raw in channels:
        channel = str(raw).strip().lower()
        if channel not in CHANNEL_NAMES:
            raise ConfigError(
                f"unknown alert channel {raw!r}: choose from {', '.join(CHANNEL_NAMES)}"
            )
        if channel in seen:
            raise ConfigError(f"alert channel {channel!r} named twice")
        seen.add(channel)
        notifiers.append(_build(settings, channel))
    return notifiers


def dispatcher_from_settings(
    settings: Settings, *, clock: Clock | None = None, retry: RetryPolicy | None = None
) -> AlertDispatcher:
    """An AlertDispatcher for the channels in ALERT_CHANNELS (not started).

    Args:
        clock: stamps alerts and measures the windows; default the wall clock.
        retry: retries of transient failures; default 3 attempts, 1 s then 2 s apart.

    Raises:
        ConfigError: a chosen channel lacks its settings.
    """
    return AlertDispatcher(
        build_notifiers(settings, settings.ALERT_CHANNELS),
        clock=clock or LiveClock(),
        account=settings.ACCOUNT_NAME,
        dedupe_s=settings.ALERT_DEDUPE_SECONDS,
        rate_per_minute=settings.ALERT_RATE_PER_MINUTE,
        retry=retry,
    )


def send_test_alert(
    settings: Settings,
    channels: Sequence[str] | None = None,
    *,
    clock: Clock | None = None,
    retry: RetryPolicy | None = None,
) -> list[DeliveryResult]:
    """Send a test alert now on `channels` (default ALERT_CHANNELS) and report each outcome.

    Bypasses the queue, de-duplication and rate limits: it is the trader checking the set-up.

    Raises:
        ConfigError: a channel is unknown or lacks its settings.
    """
    chosen = list(settings.ALERT_CHANNELS) if channels is None else list(channels)
    notifiers = build_notifiers(settings, chosen)
    at = (clock or LiveClock()).now()
    alert = make_alert(
        AlertKind.TEST,
        "This is a test alert from upstox-bot: this channel works.",
        at=at,
        key=at.isoformat(),
        account=settings.ACCOUNT_NAME,
    )
    results: list[DeliveryResult] = []
    try:
        for notifier in notifiers:
            results.append(deliver(notifier, alert, retry or RetryPolicy(max_attempts=2)))
    finally:
        for notifier in notifiers:
            notifier.close()
    return results
