"""The pages work under their Content-Security-Policy in a real browser: Swagger UI at /docs
renders every operation and the dashboard loads, with no script or style the policy blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.api.conftest import bot_settings
from tests.unit.api.served import serve
from upstox_bot.db import migrate

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists():
    reason = f"these tests need the system Chromium at {CHROMIUM}: apt-get install chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import ConsoleMessage, expect, sync_playwright  # noqa: E402


def test_docs_and_the_dashboard_render_under_their_policy(tmp_path: Path) -> None:
    settings = bot_settings(tmp_path)
    migrate.upgrade(settings.database_url)
    blocked: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            blocked.append(message.text)

    with serve(settings) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.on("console", on_console)
        page.goto(url + "/docs")
        expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)
        assert page.locator(".opblock").count() >= 45
        page.goto(url + "/")
        expect(page.locator("#login")).to_be_visible(timeout=30_000)
        browser.close()
    assert not blocked, blocked
