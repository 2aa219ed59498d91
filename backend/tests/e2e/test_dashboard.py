"""The dashboard in headless Chromium against the embedded bot on the simulated market.

The system Chromium drives the page (never a browser downloaded by Playwright); without it the
tests skip, except under CI, where they fail. Screenshots go to backend/artifacts/; with
UPSTOX_BOT_UPDATE_SCREENSHOT=1 the positions view also replaces docs/dashboard.png, the README's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BACKEND = Path(__file__).resolve().parents[2]
ARTIFACTS = BACKEND / "artifacts"
README_SHOT = BACKEND.parent / "docs" / "dashboard.png"
SESSION_DATE = "2026-11-25"
SPEED = 300  # simulated seconds per second: the entry window (09:20-14:45) lasts about 65 s
TIMEOUT_MS = 20_000

if not CHROMIUM.exists():
    reason = f"the dashboard tests need the system Chromium at {CHROMIUM}: apt-get install chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import (  # noqa: E402
    Browser,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.support.waiting import wait_until  # noqa: E402

DESKTOP = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=390, height=844)
DOCS = BACKEND.parent / "docs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Bot:
    """The running bot: where it listens and a trade-scope key."""

    url: str
    key: str

    def get(self, path: str) -> Any:
        headers = {"X-API-Key": self.key}
        request = urllib.request.Request(self.url + path, headers=headers)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return json.loads(response.read())


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    tmp = tmp_path_factory.mktemp("dashboard")
    # A loss limit out of reach, so that the kill switch is what stops new entries.
    env = {**os.environ, "DATA_DIR": str(tmp), "LOG_LEVEL": "WARNING", "DAILY_LOSS_LIMIT": "50"}
    env.pop("DATABASE_URL", None)
    cli = [sys.executable, "-m", "upstox_bot.cli"]
    key = subprocess.run(
        [*cli, "apikey", "create", "--scope", "trade", "--quiet"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sample = [*cli, "data", "sample", "--out", str(tmp / "bars"), "--days", "2", "--symbols", "3"]
    subprocess.run(sample, env=env, cwd=tmp, capture_output=True, check=True)
    port = _free_port()
    run = [*cli, "run", "--speed", str(SPEED), "--seed", "7", "--date", SESSION_DATE]
    run += ["--port", str(port), "--no-live"]
    log = (tmp / "bot.log").open("w")
    proc = subprocess.Popen(run, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    served = Bot(f"http://127.0.0.1:{port}", key)

    def answers() -> bool:
        assert proc.poll() is None, (tmp / "bot.log").read_text()
        try:
            served.get("/health")
        except (OSError, urllib.error.URLError):
            return False
        return True

    wait_until(answers, what="the bot's API to come up", every_s=0.2)
    try:
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _logged_in(browser: Browser, bot: Bot, viewport: ViewportSize) -> Iterator[Page]:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(bot.url + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#api-key", bot.key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def page(browser: Browser, bot: Bot) -> Iterator[Page]:
    """One logged-in page at 1280x900, shared: the tests follow one trading day in order."""
    yield from _logged_in(browser, bot, DESKTOP)


@pytest.fixture(scope="module")
def phone(browser: Browser, bot: Bot) -> Iterator[Page]:
    """The same day on a phone (390x844)."""
    yield from _logged_in(browser, bot, PHONE)


def _confirm(page: Page) -> None:
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-ok")
    expect(page.locator("#confirm")).to_be_hidden()


def test_a_wrong_key_is_refused_on_the_login_form(browser: Browser, bot: Bot) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(bot.url + "/")
    page.fill("#api-key", "ubk_not-a-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("unknown API key")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    context.close()


def test_the_page_loads_logs_in_and_goes_live(page: Page) -> None:
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#key-info")).to_contain_text("(trade)")
    assert page.evaluate("localStorage.length") == 0, "the key must stay in sessionStorage"
    assert page.evaluate("sessionStorage.getItem('upstox-bot.api-key')")
    expect(page.locator("#universe tbody tr").first).to_be_visible()
    expect(page.locator("#universe tbody tr[data-symbol=SBIN] td.last")).to_contain_text("₹")
    # This API serves backtests: the section shows, empty on a fresh database.
    expect(page.locator("#backtests-section")).to_be_visible()
    expect(page.locator("#backtests-empty")).to_be_visible()


def test_positions_appear_after_trades(page: Page, bot: Bot) -> None:
    rows = page.locator("#positions tbody tr")
    expect(rows.first).to_be_visible(timeout=45_000)
    symbol = rows.first.locator("td").first.inner_text()

    # The page shows the engine's positions as they change; the API reads the database, which
    # the journal commits about every 250 ms: the position (or, once closed, its trade) follows.
    def in_the_api() -> bool:
        held = {p["trading_symbol"] for p in bot.get("/api/v1/positions")}
        return symbol in held or bot.get("/api/v1/trades")["total"] > 0

    wait_until(in_the_api, what=f"{symbol}, on the page, to show in the API", every_s=0.2)
    expect(rows.first.locator("td.last")).to_contain_text("₹")
    expect(page.locator("#orders tbody tr").first).to_be_visible()
    expect(page.locator("#signals tbody tr").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "dashboard-positions.png"), full_page=True)
    if os.environ.get("UPSTOX_BOT_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(README_SHOT))


def test_the_pnl_updates_live(page: Page) -> None:
    pnl = page.locator("#day-pnl")
    expect(pnl).to_contain_text("₹")
    first = pnl.inner_text()
    page.wait_for_function(
        "before => document.querySelector('#day-pnl').textContent !== before",
        arg=first,
        timeout=TIMEOUT_MS,
    )
    assert pnl.inner_text() != first


def test_an_invalid_setting_shows_the_api_error(page: Page, bot: Bot) -> None:
    page.select_option("#setting-name", "RISK_PER_TRADE")
    page.fill("#setting-value", "500")
    page.click("#setting-form button[type=submit]")
    _confirm(page)
    error = page.locator("#control-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("RISK_PER_TRADE")
    assert bot.get("/api/v1/settings")["values"]["RISK_PER_TRADE"] != "500"
    page.screenshot(path=str(ARTIFACTS / "dashboard-invalid-setting.png"))


# --- what happened today, at 1280x900 and on a phone ---------------------------------------------


def _rows(page: Page, table: str) -> int:
    return page.locator(f"#{table} tbody tr").count()


def test_the_closed_trades_fill_as_the_session_trades(page: Page, bot: Bot) -> None:
    before = _rows(page, "trades")
    page.wait_for_function(
        "n => document.querySelectorAll('#trades tbody tr').length > n", arg=before, timeout=60_000
    )
    day = page.locator("#trades-date").inner_text()
    row = page.locator("#trades tbody tr").first
    trade_id = row.get_attribute("data-trade-id")
    stored = bot.get(f"/api/v1/trades/{trade_id}")
    assert stored["trading_symbol"] in row.inner_text()
    cells = row.locator("td")
    # Exit, symbol, side, qty, entry, exit price, gross, charges, net P&L, exit reason.
    assert cells.count() == 10
    assert cells.nth(3).inner_text() == str(stored["quantity"])
    assert "₹" in cells.nth(4).inner_text()
    assert stored["exit_reason"].replace("_", " ") == cells.nth(9).inner_text()
    net = cells.nth(8).inner_text()
    assert net.startswith(("+₹", "-₹", "₹"))
    total = bot.get(f"/api/v1/trades?from={day}&to={day}")["total"]
    assert _rows(page, "trades") <= total


def test_the_equity_curve_ends_at_the_day_pnl(page: Page, bot: Bot) -> None:
    expect(page.locator("#equity-date")).to_have_text(re.compile(r"\d{4}-\d{2}-\d{2}"))
    curve = bot.get("/api/v1/account/equity")
    account = bot.get("/api/v1/account")
    assert curve["trading_date"] == account["trading_date"]
    assert len(curve["points"]) > 10
    expect(page.locator("#chart-day canvas").first).to_be_visible()
    expect(page.locator("#chart-account canvas").first).to_be_visible()


def test_the_candle_chart_marks_entries_and_exits(page: Page) -> None:
    traded = page.locator("#trades tbody tr td.symbol").first.inner_text()
    page.select_option("#candle-symbol", label=traded)
    chart = page.locator("#chart-candles")
    page.wait_for_function(
        "() => Number(document.querySelector('#chart-candles').dataset.markers || 0) >= 2"
    )
    assert int(chart.get_attribute("data-candles") or 0) > 10
    expect(chart.locator("canvas").first).to_be_visible()


def test_performance_per_strategy_and_signal_outcomes(page: Page, bot: Bot) -> None:
    row = page.locator("#performance tbody tr").first
    expect(row).to_be_visible()
    perf = bot.get("/api/v1/account/performance")["strategies"]
    assert row.get_attribute("data-strategy") in {p["strategy"] for p in perf}
    expect(row.locator("td").nth(2)).to_contain_text("%")
    outcome = page.locator("#signals tbody tr td.outcome").first
    expect(outcome).not_to_be_empty()
    assert "paise" not in page.locator("#signals").inner_text()
    # Lists that span days show the date.
    expect(page.locator("#signals tbody tr td").first).to_contain_text("Nov")
    expect(page.locator("#orders tbody tr td").first).to_contain_text("Nov")


def test_a_backtest_runs_from_the_page_with_its_parameters(page: Page, bot: Bot) -> None:
    page.select_option("#bt-strategy", "sma_crossover")
    page.fill("#bt-params input[name=fast]", "5")
    page.fill("#bt-params input[name=slow]", "20")
    page.click("#bt-run")
    expect(page.locator("#bt-state")).to_contain_text("done", timeout=60_000)
    row = page.locator("#backtests tbody tr").first
    expect(row).to_contain_text("fast=5, slow=20")
    expect(page.locator("#backtest-params")).to_contain_text("fast=5, slow=20")
    metrics = page.locator("#backtest-metrics").inner_text()
    assert "₹" in metrics
    # Figures are formatted, never raw floats like -13.516390000000001.
    assert not re.search(r"\d\.\d{5,}", metrics), metrics
    listed = bot.get("/api/v1/backtests")["items"][0]
    assert listed["params"] == {"fast": 5, "slow": 20}
    page.screenshot(path=str(ARTIFACTS / "dashboard-backtest.png"), full_page=True)


def test_every_panel_at_the_desktop_size(page: Page) -> None:
    for panel in (
        "#positions",
        "#trades",
        "#chart-day",
        "#chart-account",
        "#chart-candles",
        "#performance",
        "#signals",
        "#orders",
        "#strategies",
        "#backtests",
        "#universe",
    ):
        expect(page.locator(panel)).to_be_attached()
    assert _table_overflow(page, DESKTOP["width"]) == []
    page.screenshot(path=str(ARTIFACTS / "dashboard-desktop.png"), full_page=True)
    if os.environ.get("UPSTOX_BOT_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(DOCS / "dashboard-desktop.png"), full_page=True)


# Tables whose columns reach past the right edge of the screen, or that scroll sideways.
OVERFLOW_JS = """
width => [...document.querySelectorAll('table[id]')]
  .filter(t => t.offsetParent !== null)
  .flatMap(t => {
    const wrap = t.parentElement;
    const out = [];
    if (wrap.scrollWidth > wrap.clientWidth + 1) out.push(`${t.id}: scrolls sideways`);
    for (const th of t.querySelectorAll('thead th')) {
      if (th.offsetParent === null) continue;
      const right = th.getBoundingClientRect().right;
      if (right > width + 0.5) out.push(`${t.id}: ${th.textContent || 'action'} ends at ${right}`);
    }
    return out;
  })
"""


def _table_overflow(page: Page, width: int) -> list[str]:
    result: list[str] = page.evaluate(OVERFLOW_JS, width)
    return result


def test_a_phone_sees_every_table_without_sideways_scrolling(phone: Page, bot: Bot) -> None:
    expect(phone.locator("#conn")).to_have_attribute("data-state", "live")
    expect(phone.locator("#trades tbody tr").first).to_be_visible(timeout=30_000)
    expect(phone.locator("#signals tbody tr").first).to_be_visible()
    expect(phone.locator("#universe tbody tr").first).to_be_visible()
    expect(phone.locator("#backtests tbody tr").first).to_be_visible()
    assert _table_overflow(phone, PHONE["width"]) == []
    # What matters stays: the symbol, the P&L and (for a position) the close button.
    for table, needed in (
        ("trades", ["Symbol", "Net P&L"]),
        ("positions", ["Symbol", "P&L"]),
        ("signals", ["Symbol", "Status", "Outcome"]),
        ("orders", ["Symbol", "Status"]),
        ("performance", ["Strategy", "Win rate", "Net P&L"]),
        ("backtests", ["Strategy", "Net P&L", "Return"]),
        ("universe", ["Symbol", "Last"]),
    ):
        shown = [h.strip() for h in phone.locator(f"#{table} thead th:visible").all_inner_texts()]
        for name in needed:
            assert name in shown, (table, shown)
    # Measured in one go: the session trades on, and a row may go between two reads.
    rights = phone.evaluate(
        "[...document.querySelectorAll('#positions button.close-position')]"
        ".map(b => b.getBoundingClientRect().right)"
    )
    assert all(right <= PHONE["width"] for right in rights), rights
    phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    if os.environ.get("UPSTOX_BOT_UPDATE_SCREENSHOT") == "1":
        phone.screenshot(path=str(DOCS / "dashboard-phone.png"), full_page=True)


def test_the_kill_switch_stops_new_entries(page: Page, bot: Bot) -> None:
    page.click("#kill-switch")
    _confirm(page)
    expect(page.locator("#control-ok")).to_contain_text("Kill switch on")
    expect(page.locator("#kill-state")).to_contain_text("ON")
    risk = bot.get("/api/v1/risk")
    assert risk["kill_switch"] is True
    assert bot.get("/api/v1/account")["kill_switch"] is True
    switched_at = risk["at"]
    # Half an hour of simulated trading after the switch.
    half_hour_later = (datetime.fromisoformat(switched_at) + timedelta(minutes=30)).isoformat()
    wait_until(
        lambda: bot.get("/api/v1/risk")["at"] > half_hour_later,
        within_s=120,
        what="half an hour of market time after the kill switch",
    )
    entries = [
        o
        for o in bot.get("/api/v1/orders?limit=1000")
        if o["purpose"] == "entry" and o["created_at"] > switched_at
    ]
    assert entries == [], f"entry orders after the kill switch: {entries}"
    wanted = [
        s
        for s in bot.get("/api/v1/signals?limit=1000")
        if s["type"].startswith("entry") and s["created_at"] > switched_at
    ]
    assert wanted, "the strategy should have asked for entries that the switch refused"
    assert all(s["status"] != "accepted" for s in wanted), wanted
    expect(page.locator("#positions-empty")).to_be_visible()  # squared off, nothing new
    page.screenshot(path=str(ARTIFACTS / "dashboard-kill-switch.png"), full_page=True)


def test_a_working_order_is_modified_from_its_row(browser: Browser, bot: Bot) -> None:
    # Paper orders fill at the next trade, too soon to click: the order list is answered here
    # with one working entry, and the PUT the page sends is captured and answered as Upstox
    # would be (sent, confirmed later).
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    working = {
        "client_order_id": "ub-dash-working-1",
        "instrument_key": "NSE_EQ|INE062A01020",
        "trading_symbol": "SBIN",
        "side": "buy",
        "quantity": 10,
        "purpose": "entry",
        "order_type": "limit",
        "status": "open",
        "reason": "test",
        "exit_reason": None,
        "signal_id": None,
        "broker_order_id": "1",
        "limit_price": "12345.65",  # a wide row: the limit and the Modify button
        "filled_quantity": 0,
        "average_price": None,
        "rejection_reason": None,
        "created_at": "2026-11-25T04:00:00+00:00",
        "updated_at": "2026-11-25T04:00:00+00:00",
    }
    sent: list[dict[str, Any]] = []
    context.route(
        "**/api/v1/orders?*",
        lambda route: route.fulfill(json=[working], headers={"X-Total-Count": "1"}),
    )

    def modify(route: Any) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        route.fulfill(
            status=202,
            json={"status": "modify_requested", "detail": "modify of ub-dash-working-1 sent"},
        )

    context.route("**/api/v1/orders/ub-dash-working-1", modify)
    answers = iter(["801.50", "6"])
    page.on("dialog", lambda dialog: dialog.accept(next(answers)))
    page.goto(bot.url + "/")
    page.fill("#api-key", bot.key)
    page.click("#login-form button[type=submit]")
    button = page.locator("#orders tbody tr button.modify-order")
    expect(button).to_be_visible()
    # A working order's row (its limit and the Modify button) fits the panel at both sizes.
    assert _table_overflow(page, DESKTOP["width"]) == []
    page.set_viewport_size(PHONE)
    assert _table_overflow(page, PHONE["width"]) == []
    page.set_viewport_size(DESKTOP)

    button.click()

    expect(page.locator("#control-ok")).to_contain_text("modify of ub-dash-working-1 sent")
    assert sent == [{"reason": "dashboard", "price": "801.50", "quantity": 6}]
    context.close()
