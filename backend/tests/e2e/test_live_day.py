"""A rehearsal of a first live day: `upstox-bot run --market upstox` against the simulator.

One bot process (and its restart) trades live against the Upstox simulator behaving as Upstox
documents, through what a first day can bring: the trader logs in through the bot's API, trades,
a stop exit is caught in a gap through the market-protection band and re-priced until it fills,
the token is revoked mid-day and renewed by a second login, Upstox refuses the orders for the
static IP, and the bot is killed (SIGKILL) while an order's answer is on its way, then
restarted. At the end: no intent ever became two orders, every exit filled, and the feed came
back after the new login.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from tests.support.upstox_sim import FaultKind, UpstoxSimulator
from tests.support.waiting import wait_until
from upstox_bot.domain import IST

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BACKEND = Path(__file__).resolve().parents[2]
SAMPLE = resources.files("upstox_bot.data").joinpath("upstox_instruments_sample.json.gz")
RELIANCE = "NSE_EQ|INE002A01018"
SBIN = "NSE_EQ|INE062A01020"
PLACE = "/v3/order/place"
LIMIT_S = 90.0  # the longest any step may take on a loaded machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Market:
    """Trades RELIANCE and SBIN on the simulator's feed every 50 ms at the prices set here."""

    def __init__(self, sim: UpstoxSimulator) -> None:
        self.sim = sim
        self.prices = {RELIANCE: 1402.5, SBIN: 801.2}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Market:
        assert self.sim.feed is not None
        for key, price in self.prices.items():
            self.sim.feed.set_instrument(key, ltp=price, cp=price)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        assert self.sim.feed is not None
        while not self._stop.wait(0.05):
            self.sim.feed.push_prices(dict(self.prices), ltq=5)

    def move(self, key: str, rupees: float, *, upstox: float | None = None) -> None:
        """The feed shows ``rupees``; Upstox's exchange trades at ``upstox`` (default the same)."""
        self.prices[key] = rupees
        self.sim.rest.set_price(key, str(upstox if upstox is not None else rupees))


class Bot:
    """The bot process and its API."""

    def __init__(self, tmp: Path, sim: UpstoxSimulator) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))
        }
        self.env.update(
            DATA_DIR=str(tmp / "var"),
            PYTHONPATH=str(BACKEND / "src"),
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
            MARKET="upstox",
            PAPER_TRADING="false",
            LIVE_TRADING_ENABLED="true",
            UPSTOX_API_BASE_URL=sim.base_url,
            UPSTOX_API_KEY=sim.rest.client_id,
            UPSTOX_API_SECRET=sim.rest.client_secret,
            UPSTOX_REDIRECT_URI=f"{self.url}/api/v1/auth/upstox/callback",
            TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(),
            SIM_SYMBOLS="100",
            TICK_STORE_INTERVAL_SECONDS="1",
            # a whole day's rules at any hour of the test (the harness runs on the wall clock)
            ENTRY_START_TIME="00:00:00",
            ENTRY_END_TIME="23:58:00",
            SQUARE_OFF_TIME="23:59:59",
            MIN_ORDER_INTERVAL_SECONDS="0",
            DAILY_LOSS_LIMIT="50",  # the gap's loss must not end the day's entries
            EXIT_ORDER_TIMEOUT_SECONDS="2",
            ORDER_BLOCK_RETRY_SECONDS="5",
            UPSTOX_TAG_LOOKUP_SECONDS="3",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.key = self.cli("apikey", "create", "--scope", "trade", "--quiet").stdout.strip()
        self.http = httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "upstox_bot.cli", *args],
            cwd=self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def start(self) -> None:
        self.starts += 1
        run = [sys.executable, "-m", "upstox_bot.cli", "run", "--market", "upstox", "--no-live"]
        run += ["--port", str(self.port), "--force-live", "a rehearsal against the simulator"]
        with (self.tmp / f"bot-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(run, cwd=self.tmp, env=self.env, stdout=log, stderr=log)
        wait_until(self._serving, within_s=LIMIT_S, what="the bot's API")

    def entries_allowed(self) -> bool:
        return self.get("/risk")["entries_paused"] is None

    def _serving(self) -> bool:
        self.alive()
        try:
            return httpx.get(self.url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"the bot exited ({self.proc.returncode}):\n{self.logs()}"

    def logs(self) -> str:
        return "\n".join(p.read_text()[-6000:] for p in sorted(self.tmp.glob("bot-*.log")))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()

    def login(self) -> datetime:
        """The trader's daily login (`upstox-bot login`): a one-time link, opened in the browser,
        leads through Upstox's dialog to the callback."""
        link = self.post("/auth/upstox/login-link")
        assert link.status_code == 201, link.text
        with httpx.Client(timeout=30) as browser:
            answer = browser.get(link.json()["url"], follow_redirects=True)
        assert answer.status_code == 200, answer.text
        return datetime.now(UTC)

    def get(self, path: str, **params: Any) -> Any:
        answer = self.http.get("/api/v1" + path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post(self, path: str, body: object = None) -> httpx.Response:
        return self.http.post("/api/v1" + path, json=body)

    def audits(self, event: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/audit", event=event, limit=1000)["items"]
        return items

    def held(self, key: str) -> int:
        return sum(p["quantity"] for p in self.get("/positions") if p["instrument_key"] == key)

    def db(self, sql: str, **params: object) -> list[Any]:
        engine = create_engine(f"sqlite:///{self.tmp / 'var' / 'upstox_bot.sqlite'}")
        with engine.connect() as connection:
            rows = list(connection.execute(text(sql), params))
        engine.dispose()
        return rows


@pytest.fixture
def day(tmp_path: Path) -> Iterator[tuple[UpstoxSimulator, Market, Bot]]:
    local = datetime.now(IST).time()
    if local >= time(23, 50) or local < time(0, 5):
        pytest.skip("the live harness runs on the wall clock: not across an IST midnight")
    with UpstoxSimulator() as sim, Market(sim) as market:
        bot = Bot(tmp_path, sim)
        try:
            yield sim, market, bot
        finally:
            bot.stop()


def test_a_first_live_day(day: tuple[UpstoxSimulator, Market, Bot]) -> None:
    sim, market, bot = day
    bot.cli("universe", "refresh", "--file", str(SAMPLE))

    # --- start without a token, then log in: the feed starts by itself ---------------------
    bot.start()
    assert bot.get("/auth/upstox/status")["state"] == "missing"
    first_login = bot.login()
    assert bot.get("/auth/upstox/status")["state"] == "valid"
    wait_until(lambda: ticks_since(bot, first_login) > 0, within_s=LIMIT_S, what="ticks")
    wait_until(bot.entries_allowed, within_s=LIMIT_S, what="entries allowed after the login")
    (forced,) = bot.audits("live.forced")
    assert forced["data"]["reason"] == "a rehearsal against the simulator"

    # --- trade: a manual entry fills at Upstox -------------------------------------------
    entry = bot.post("/trades", {"instrument_key": RELIANCE, "reason": "first trade"})
    assert entry.status_code == 201, entry.text
    quantity = entry.json()["quantity"]
    wait_until(lambda: bot.held(RELIANCE) == quantity, within_s=LIMIT_S, what="the entry filled")

    # --- a gap through the protection band on the stop exit, re-priced until it fills ------
    stop = float(bot.get("/positions")[0]["stop"])
    sim.rest.script_gap(RELIANCE, "1250.00")  # right after Upstox accepts the exit
    market.move(RELIANCE, stop - 2)  # the stop fires at the next tick
    wait_until(lambda: bot.audits("exit.triggered"), within_s=LIMIT_S, what="the stop")
    wait_until(lambda: resting_exit(sim), within_s=LIMIT_S, what="the exit resting in the gap")
    market.move(RELIANCE, 1250.0, upstox=1200.0)  # the bot sees 1250; Upstox trades lower
    wait_until(lambda: len(bot.audits("order.repriced")) >= 2, within_s=LIMIT_S, what="re-prices")
    assert bot.held(RELIANCE) == quantity  # still resting: the limits were above the market
    market.move(RELIANCE, 1200.0)  # the bot's price catches up: the next re-price fills
    wait_until(lambda: bot.held(RELIANCE) == 0, within_s=LIMIT_S, what="the exit filled")
    (trade,) = bot.get("/trades")["items"]
    assert trade["exit_reason"] == "stop_loss"
    assert float(trade["exit_price"]) == 1200.0
    sells = [o for o in sim.rest.orders.values() if o.transaction_type == "SELL"]
    assert len(sells) == 1  # one exit order, re-priced by modify
    market.move(RELIANCE, 1205.0)

    # --- the token revoked mid-day, renewed by a login: the feed comes back ------------------
    sim.revoke_tokens()
    wait_until(
        lambda: bot.get("/auth/upstox/status")["state"] == "expired",
        within_s=LIMIT_S,
        what="the token reported refused",
    )
    wait_until(lambda: not bot.entries_allowed(), within_s=LIMIT_S, what="entries paused")
    refused = bot.post("/trades", {"instrument_key": RELIANCE, "reason": "no token"})
    assert refused.status_code == 409  # entries paused until the login
    assert "entries_paused" in refused.text
    bot.alive()  # still running, positions managed, waiting for the login
    second_login = bot.login()
    wait_until(
        lambda: ticks_since(bot, second_login) > 0,
        within_s=LIMIT_S,
        what="the feed back after the new login",
    )
    wait_until(
        lambda: sim.portfolio.active_connections == 1,
        within_s=LIMIT_S,
        what="the portfolio stream back after the new login",
    )
    wait_until(bot.entries_allowed, within_s=LIMIT_S, what="entries allowed again")

    # --- a static-IP refusal: entries paused, the exit held, one alert, then sent -------------
    entry = bot.post("/trades", {"instrument_key": RELIANCE, "reason": "before the IP change"})
    assert entry.status_code == 201, entry.text
    wait_until(lambda: bot.held(RELIANCE) > 0, within_s=LIMIT_S, what="the second entry filled")
    sim.scenario.static_ip_registered = False
    assert bot.post(f"/positions/{RELIANCE}/close").status_code == 202
    wait_until(lambda: bot.audits("broker.orders_blocked"), within_s=LIMIT_S, what="blocked")
    wait_until(lambda: bot.audits("order.held"), within_s=LIMIT_S, what="the exit held")
    paused = bot.post("/trades", {"instrument_key": SBIN, "reason": "while blocked"})
    assert paused.status_code == 409
    assert "static_ip" in paused.text
    sim.scenario.static_ip_registered = True  # the trader registers the IP
    wait_until(lambda: bot.held(RELIANCE) == 0, within_s=LIMIT_S, what="the held exit filled")
    wait_until(bot.entries_allowed, within_s=LIMIT_S, what="entries allowed again")
    (blocked,) = bot.audits("broker.orders_blocked")
    assert blocked["data"]["cause"] == "static_ip"
    assert bot.audits("broker.orders_unblocked")

    # --- killed mid-order, restarted: the order is found by its tag, never sent twice --------
    before = len(sim.rest.requests_to(PLACE))
    sim.rest.fail_next(FaultKind.TIMEOUT, path=PLACE, delay_s=120.0, process=True)
    entry = bot.post("/trades", {"instrument_key": SBIN, "reason": "the last one"})
    assert entry.status_code == 201, entry.text
    tag = entry.json()["client_order_id"]
    wait_until(lambda: sim.rest.orders_with_tag(tag), within_s=LIMIT_S, what="the order at Upstox")
    bot.kill()
    bot.start()
    wait_until(lambda: bot.held(SBIN) > 0, within_s=LIMIT_S, what="the order found after restart")
    wait_until(bot.entries_allowed, within_s=LIMIT_S, what="the restarted bot ready")
    assert len(sim.rest.orders_with_tag(tag)) == 1
    assert len(sim.rest.requests_to(PLACE)) == before + 1
    assert bot.post(f"/positions/{SBIN}/close").status_code == 202
    wait_until(lambda: bot.held(SBIN) == 0, within_s=LIMIT_S, what="the last exit filled")
    bot.alive()

    # --- the day's books: one order per intent, every exit filled, flat at Upstox ------------
    per_tag = Counter(o.tag for o in sim.rest.orders.values())
    assert all(count == 1 for count in per_tag.values()), per_tag
    unfinished = bot.db(
        "SELECT client_order_id, status FROM orders WHERE status NOT IN "
        "('filled', 'cancelled', 'rejected')"
    )
    assert unfinished == []
    exits = bot.db("SELECT status FROM orders WHERE purpose = 'exit'")
    assert exits
    assert {status for (status,) in exits} == {"filled"}  # no exit left behind
    assert all(p["quantity"] == 0 for p in sim.rest.positions())
    assert bot.get("/positions") == []


def ticks_since(bot: Bot, at: datetime) -> int:
    rows = bot.db(
        "SELECT count(*) FROM ticks WHERE instrument_key = :key AND ts > :at",
        key=RELIANCE,
        at=(at - timedelta(seconds=0)).strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    return int(rows[0][0])


def resting_exit(sim: UpstoxSimulator) -> bool:
    with sim.rest.lock:
        return any(
            o.transaction_type == "SELL" and o.status == "open" and o.filled_quantity == 0
            for o in sim.rest.orders.values()
        )
