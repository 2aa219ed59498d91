"""Alert settings: comma lists, channels that lack their settings, and secrets kept out of sight."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from upstox_bot.config import AlertChannel, Settings, load_settings
from upstox_bot.errors import ConfigError
from upstox_bot.monitoring.notifiers import (
    EmailNotifier,
    TelegramNotifier,
    WebhookNotifier,
    build_notifiers,
    dispatcher_from_settings,
)

TOKEN = "123456:AAE-secret-bot-token"
HOOK = "https://hooks.example.test/services/T000/B000/secret-part"


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_no_channels_by_default() -> None:
    defaults = settings()
    assert defaults.ALERT_CHANNELS == []
    assert (defaults.ALERT_DEDUPE_SECONDS, defaults.ALERT_RATE_PER_MINUTE) == (300, 10)
    assert defaults.TELEGRAM_API_BASE_URL == "https://api.telegram.org"
    assert dispatcher_from_settings(defaults).channels == []


def test_channels_and_recipients_are_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_CHANNELS", "telegram, webhook,email")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "-1001")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", HOOK)
    monkeypatch.setenv("SMTP_HOST", "smtp.example.test")
    monkeypatch.setenv("ALERT_EMAIL_FROM", "bot@example.test")
    monkeypatch.setenv("ALERT_EMAIL_TO", "a@example.test, b@example.test")
    loaded = load_settings(_env_file=None)
    assert loaded.ALERT_CHANNELS == [
        AlertChannel.TELEGRAM,
        AlertChannel.WEBHOOK,
        AlertChannel.EMAIL,
    ]
    assert loaded.ALERT_EMAIL_TO == ["a@example.test", "b@example.test"]
    dispatcher = dispatcher_from_settings(loaded)
    assert dispatcher.channels == ["telegram", "webhook", "email"]
    dispatcher.close()


@pytest.mark.parametrize(
    ("channel", "missing"),
    [
        ("telegram", "TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID"),
        ("webhook", "ALERT_WEBHOOK_URL"),
        ("email", "SMTP_HOST, ALERT_EMAIL_FROM, ALERT_EMAIL_TO"),
    ],
)
def test_a_chosen_channel_without_its_settings_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, channel: str, missing: str
) -> None:
    monkeypatch.setenv("ALERT_CHANNELS", channel)
    with pytest.raises(ConfigError, match=f"ALERT_CHANNELS has {channel}: set {missing}"):
        load_settings(_env_file=None)


def test_an_unknown_channel_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_CHANNELS", "pager")
    with pytest.raises(ConfigError, match="ALERT_CHANNELS"):
        load_settings(_env_file=None)


def test_build_notifiers_checks_a_channel_outside_alert_channels() -> None:
    with pytest.raises(ConfigError, match="webhook needs ALERT_WEBHOOK_URL"):
        build_notifiers(settings(), ["webhook"])
    with pytest.raises(ConfigError, match="unknown alert channel 'sms'"):
        build_notifiers(settings(), ["sms"])
    with pytest.raises(ConfigError, match="needs SMTP_PASSWORD"):
        build_notifiers(
            settings(
                SMTP_HOST="h",
                ALERT_EMAIL_FROM="f@x.test",
                ALERT_EMAIL_TO="t@x.test",
                SMTP_USERNAME="u",
            ),
            ["email"],
        )


def test_port_465_means_implicit_tls() -> None:
    [email] = build_notifiers(
        settings(
            SMTP_HOST="h", SMTP_PORT=465, ALERT_EMAIL_FROM="f@x.test", ALERT_EMAIL_TO="t@x.test"
        ),
        ["email"],
    )
    assert isinstance(email, EmailNotifier)
    assert email.implicit_tls


def test_secrets_stay_out_of_reprs_and_the_settings_dump() -> None:
    loaded = settings(
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_CHAT_ID="-1001",
        ALERT_WEBHOOK_URL=HOOK,
        SMTP_HOST="h",
        SMTP_USERNAME="u",
        SMTP_PASSWORD="hunter2-password",
        ALERT_EMAIL_FROM="f@x.test",
        ALERT_EMAIL_TO="t@x.test",
    )
    dumped = loaded.model_dump_json()
    telegram = TelegramNotifier(
        base_url="http://127.0.0.1:1", bot_token=SecretStr(TOKEN), chat_id="-1001"
    )
    webhook = WebhookNotifier(url=SecretStr(HOOK))
    [email] = build_notifiers(loaded, ["email"])
    shown = dumped + repr(telegram) + repr(webhook) + repr(email)
    for secret in (TOKEN, "secret-part", "hunter2-password"):
        assert secret not in shown
    telegram.close()
    webhook.close()
