"""A whole session with the dashboard open: not one log line holds an API key or a secret, and
revoking the dashboard's key closes its live stream and logs the page out.

`upstox-bot run` runs as the trader runs it (JSON logs, then console logs, at DEBUG), with the
dashboard in headless Chromium, a client of the stream, the REST API, a key sent in a URL (which
is refused) and an OAuth callback with a code and a state. Every line it writes is then searched
for the keys and the configured secrets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TIMEOUT_MS = 30_000
SECRETS = {
    "UPSTOX_API_KEY": "upstox-app-key-4f3e2d1c",
    "UPSTOX_API_SECRET": "upstox-app-secret-8a7b6c5d",
    "TOKEN_ENCRYPTION_KEY": "token-encryption-key-0123456789abcdef",
    "SMTP_PASSWORD": "smtp-password-fedcba98",
    "SMTP_USERNAME": "alerts-user@example.com",
    "TELEGRAM_CHAT_ID": "-100987654321",
}

if not CHROMIUM.exists():
    reason = f"these tests need the system Chromium at {CHROMIUM}: apt-get install chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import ConsoleMessage, expect, sync_playwright  # noqa: E402

from tests.support.waiting import wait_until  # noqa: E402
from tests.unit.api.served import free_port  # noqa: E402
from upstox_bot.db.repositories.api_keys import ApiKeyRepository, hash_key  # noqa: E402
from upstox_bot.db.session import (  # noqa: E402
    make_engine,
    make_session_factory,
    session_scope,
)

CLI = [sys.executable, "-m", "upstox_bot.cli"]


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip()


def _get(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _up(url: str) -> bool:
    try:
        return _get(url) == 200
    except OSError:  # not listening yet
        return False


@contextmanager
def running_bot(
    tmp: Path, log_format: str
) -> Iterator[tuple[str, dict[str, str], dict[str, str], Path]]:
    env = {
        **os.environ,
        **SECRETS,
        "DATA_DIR": str(tmp),
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": log_format,
        "UPSTOX_API_BASE_URL": "http://127.0.0.1:9",  # nothing reaches outside
    }
    env.pop("DATABASE_URL", None)
    port = free_port()
    env["UPSTOX_REDIRECT_URI"] = f"http://127.0.0.1:{port}/api/v1/auth/upstox/callback"
    keys = {
        "trade": _cli(env, tmp, "apikey", "create", "--scope", "trade", "--quiet"),
        "read": _cli(env, tmp, "apikey", "create", "--scope", "read", "--quiet"),
    }
    output = tmp / f"bot-{log_format}.log"
    run = [*CLI, "run", "--speed", "60", "--seed", "3", "--date", "2026-11-25"]
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [*run, "--port", str(port), "--no-live"],
            env=env,
            cwd=tmp,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: proc.poll() is not None or _up(f"{url}/health"), what="the bot's API"
            )
            assert proc.poll() is None, output.read_text()
            yield url, keys, env, output
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _key_id(data_dir: Path, key: str) -> int:
    engine = make_engine(f"sqlite:///{(data_dir / 'upstox_bot.sqlite').as_posix()}")
    try:
        with session_scope(make_session_factory(engine)) as session:
            record = ApiKeyRepository(session).find_by_hash(hash_key(key))
    finally:
        engine.dispose()
    assert record is not None
    return record.id


def _exercise(url: str, keys: dict[str, str], env: dict[str, str], tmp: Path) -> None:
    """The dashboard open and live, a stream client, REST calls, a key in a URL, a callback;
    then the dashboard's key revoked while the page is open."""
    ws_url = url.replace("http://", "ws://") + "/api/v1/ws"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and "Content Security Policy" in message.text:
                problems.append(message.text)

        page.on("console", on_console)
        page.goto(url + "/")
        page.fill("#api-key", keys["trade"])
        page.click("#login-form button[type=submit]")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        expect(page.locator("#universe tbody tr").first).to_be_visible()

        with connect(ws_url, additional_headers={"X-API-Key": keys["read"]}) as stream:
            stream.send(json.dumps({"action": "subscribe", "channels": ["account"]}))
            assert json.loads(stream.recv(timeout=30))["type"] == "subscribed"
        with pytest.raises(InvalidStatus):  # the key in a URL: refused, and never logged
            connect(f"{ws_url}?api_key={keys['read']}").close()
        for path in ("/api/v1/positions", "/api/v1/account", "/api/v1/settings", "/metrics"):
            assert _get(url + path, keys["read"]) == 200
        assert _get(url + "/api/v1/positions", "ubk_wrong-key-guess-123") == 401
        assert _get(url + "/api/v1/auth/upstox/callback?code=one-time-code&state=s-t-a-t-e") == 403

        # Revoke the dashboard's key while the page is open: its stream is closed (1008) and
        # the page logs out with the reason.
        _cli(env, tmp, "apikey", "revoke", str(_key_id(tmp, keys["trade"])))
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#login-error")).to_contain_text("revoked")
        browser.close()
        assert not problems, problems


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_session_with_the_dashboard_open_logs_no_secret(tmp_path: Path, log_format: str) -> None:
    with running_bot(tmp_path, log_format) as (url, keys, env, output):
        _exercise(url, keys, env, tmp_path)
    lines = output.read_text().splitlines()
    assert len(lines) > 50, "the session should have logged plenty"
    assert any("WebSocket" in line for line in lines), "uvicorn's handshake lines are there"
    assert any("api_key=***" in line for line in lines), "the URL key was logged, redacted"
    secrets = [keys["trade"], keys["read"], *SECRETS.values(), "one-time-code", "s-t-a-t-e"]
    secrets += [keys["trade"][4:], keys["read"][4:]]  # the keys' random parts on their own
    leaks = [(secret, line) for line in lines for secret in secrets if secret in line]
    assert not leaks, leaks[:5]
