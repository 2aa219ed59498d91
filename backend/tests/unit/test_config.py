"""Settings: defaults, validation with one clear line, and .env.example kept in step."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from upstox_bot.config import Settings, load_settings
from upstox_bot.errors import ConfigError

ENV_EXAMPLE = Path(__file__).resolve().parents[3] / ".env.example"


def test_defaults_are_the_trading_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)
    assert Decimal(100000) == settings.ACCOUNT_SIZE
    # One at a time: a tuple of Decimals never equals a tuple of ints for mypy.
    assert settings.RISK_PER_TRADE == 5
    assert settings.POSITION_SIZE_PERCENT == 30
    assert settings.MAX_OPEN_POSITIONS == 3
    assert settings.DAILY_LOSS_LIMIT == 2
    assert settings.STOP_LOSS_PERCENT == 5
    assert settings.TAKE_PROFIT_PERCENT == 4
    assert settings.TRAILING_STOP_PERCENT == 2
    assert (settings.MAX_ORDERS_PER_MINUTE, settings.MIN_ORDER_INTERVAL_SECONDS) == (10, 30)
    assert settings.PAPER_TRADING
    assert not settings.LIVE_TRADING_ENABLED
    assert settings.database_url.endswith("var/upstox_bot.sqlite")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RISK_PER_TRADE", "abc"),
        ("RISK_PER_TRADE", "0"),
        ("MAX_OPEN_POSITIONS", "-1"),
        ("DAILY_LOSS_LIMIT", "101"),
        ("SQUARE_OFF_TIME", "25:00"),
        ("ACCOUNT_SIZE", "NaN"),
    ],
)
def test_invalid_value_names_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert variable in message
    assert "\n" not in message


def test_live_trading_needs_the_explicit_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPER_TRADING", "false")
    with pytest.raises(ConfigError, match="LIVE_TRADING_ENABLED"):
        load_settings(_env_file=None)


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTOX_API_SECRET", "x" * 5)
    monkeypatch.setenv("API_PORT", "99999")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    assert "xxxxx" not in str(info.value)
    assert "API_PORT" in str(info.value)


def test_env_example_documents_every_setting_and_loads() -> None:
    text = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    assert documented == set(Settings.model_fields)
    settings = Settings(_env_file=ENV_EXAMPLE)
    assert settings.HOLIDAYS_FILE is None
    assert settings.STRATEGY_PARAMS == {}


@pytest.mark.parametrize("value", ["-1", "0", "1", "2.5", "25"])
def test_market_protection_takes_upstox_values(value: str) -> None:
    settings = load_settings(_env_file=None, MARKET_PROTECTION=value)
    assert Decimal(value) == settings.MARKET_PROTECTION


@pytest.mark.parametrize("value", ["-2", "-0.5", "0.5", "25.5", "100", "NaN"])
def test_market_protection_refuses_what_upstox_refuses(value: str) -> None:
    # March 2026 rules (API.md 5.2, 9.2): -1 automatic, 0 none, or a band of 1-25 percent.
    with pytest.raises(ConfigError, match="MARKET_PROTECTION"):
        load_settings(_env_file=None, MARKET_PROTECTION=value)


def test_config_command_shows_no_credential(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from upstox_bot.cli import app

    secrets = {
        "UPSTOX_API_KEY": "app-key-7f6e5d",
        "UPSTOX_API_SECRET": "app-secret-4c3b2a",
        "TELEGRAM_CHAT_ID": "-100555444333",
        "SMTP_USERNAME": "bot-mailer@example.com",
        "DATABASE_URL": "postgresql+psycopg://bot:db-password-99@db:5432/bot",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env here
    shown = CliRunner().invoke(app, ["config"])
    assert shown.exit_code == 0, shown.output
    assert "UPSTOX_API_KEY=***" in shown.output
    assert "TELEGRAM_CHAT_ID=***" in shown.output
    for value in ("app-key-7f6e5d", "app-secret-4c3b2a", "555444333", "bot-mailer", "db-password"):
        assert value not in shown.output
