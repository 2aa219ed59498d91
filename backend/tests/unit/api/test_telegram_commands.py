"""Telegram commands against a local stand-in of the Bot API, with the embedded bot's API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.telegram_sim import TelegramStandIn
from tests.unit.api.conftest import make_keys, play
from upstox_bot.runtime.embedded import EmbeddedBot

TOKEN = "123456:test-token"
TRADER = 42
STRANGER = 99


@pytest.fixture
def telegram() -> Iterator[TelegramStandIn]:
    with TelegramStandIn(TOKEN) as stand_in:
        yield stand_in


@pytest.fixture
def running(tmp_path: Path, telegram: TelegramStandIn) -> Iterator[tuple[EmbeddedBot, TestClient]]:
    bot = play(
        tmp_path / "bot",
        TELEGRAM_COMMANDS=True,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=telegram.url,
        TELEGRAM_COMMAND_CHAT_IDS=str(TRADER),
    )
    keys = make_keys(bot.settings)
    with TestClient(bot.create_api(), headers={"X-API-Key": keys.read}) as client:
        yield bot, client
    bot.db_engine.dispose()


def ask(telegram: TelegramStandIn, text: str) -> str:
    before = len(telegram.messages_to(TRADER))
    telegram.push(TRADER, text)
    return telegram.wait_messages(TRADER, before + 1)[-1]


def test_status_positions_and_pnl_answer_with_the_accounts_figures(
    running: tuple[EmbeddedBot, TestClient], telegram: TelegramStandIn
) -> None:
    _, client = running
    account = client.get("/api/v1/account").json()
    status = ask(telegram, "/status")
    assert f"{account['trading_date']}" in status
    assert "Day P&L" in status
    assert "₹" in status
    assert f"{account['open_positions']} open position(s)" in status
    assert "Kill switch off" in status

    positions = ask(telegram, "/positions")
    held = client.get("/api/v1/positions").json()
    assert held, "the played session leaves positions open"
    for p in held:
        assert f"{p['trading_symbol']} {p['direction']} {p['quantity']}" in positions

    pnl = ask(telegram, "/pnl")
    trades = client.get(f"/api/v1/trades?from={account['trading_date']}").json()
    assert f"over {trades['total']} trade(s)" in pnl
    assert "help" not in pnl.lower()


def test_the_kill_switch_needs_the_confirmation_code(
    running: tuple[EmbeddedBot, TestClient], telegram: TelegramStandIn
) -> None:
    bot, client = running
    question = ask(telegram, "/kill market looks wrong")
    code = re.search(r"/confirm (\d{4})", question)
    assert code is not None, question
    wrong = "0000" if code.group(1) != "0000" else "1111"
    assert "Wrong code" in ask(telegram, f"/confirm {wrong}")
    assert bot.engine.risk.kill_switch.active is False
    # The wrong code spent nothing: the right one still works.
    done = ask(telegram, f"/confirm {code.group(1)}")
    assert done.startswith("Kill switch ON"), done
    assert bot.engine.risk.kill_switch.active is True
    risk = client.get("/api/v1/risk").json()
    assert risk["kill_switch"] is True
    assert risk["kill_switch_reason"] == "market looks wrong"
    audit = client.get("/api/v1/audit?event=kill_switch.on").json()
    items = audit["items"] if isinstance(audit, dict) else audit
    assert any(item.get("actor") == f"telegram:{TRADER}" for item in items), items
    assert "Nothing to confirm" in ask(telegram, f"/confirm {code.group(1)}")

    question = ask(telegram, "/resume")
    code = re.search(r"/confirm (\d{4})", question)
    assert code is not None
    assert ask(telegram, f"/confirm {code.group(1)}").startswith("Kill switch OFF")
    assert bot.engine.risk.kill_switch.active is False


def test_a_chat_that_is_not_allowed_gets_nothing_and_changes_nothing(
    running: tuple[EmbeddedBot, TestClient], telegram: TelegramStandIn
) -> None:
    bot, _ = running
    telegram.push(STRANGER, "/kill")
    telegram.push(STRANGER, "/status")
    # The allowed chat's command after them is answered: the stranger's were read and dropped.
    assert "Commands:" in ask(telegram, "/help")
    assert telegram.messages_to(STRANGER) == []
    assert bot.engine.risk.kill_switch.active is False
