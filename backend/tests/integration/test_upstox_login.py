"""The daily Upstox login through the API routes against the simulator, and the token guard."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from upstox_bot.api.app import create_app
from upstox_bot.api.routers.upstox_auth import COOKIE, issue_login_link
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.models import ApiKeyScope
from upstox_bot.db.models_upstox import UpstoxLoginStateRow, UpstoxTokenRow
from upstox_bot.db.repositories.api_keys import ApiKeyRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.monitoring.alerts.model import AlertKind
from upstox_bot.upstox.auth import TokenGrant
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.login_states import LoginStateStore, state_digest
from upstox_bot.upstox.token_store import (
    TokenGuard,
    TokenSource,
    TokenState,
    TokenStore,
    token_store_from_settings,
)

ENCRYPTION_KEY = "a-long-random-secret-for-the-tests-0123456789"
CALLBACK = "http://testserver/api/v1/auth/upstox/callback"

sim = pytest.fixture(upstox_simulator)


@dataclass
class Env:
    settings: Settings
    client: TestClient
    api_key: str
    upstox: UpstoxSimulator


def make_settings(data_dir: Path, upstox: UpstoxSimulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATA_DIR": data_dir,
        "UPSTOX_API_BASE_URL": upstox.base_url,
        "UPSTOX_API_KEY": upstox.rest.client_id,
        "UPSTOX_API_SECRET": upstox.rest.client_secret,
        "UPSTOX_REDIRECT_URI": CALLBACK,
        "TOKEN_ENCRYPTION_KEY": ENCRYPTION_KEY,
        **overrides,
    }
    return Settings(_env_file=None, **values)


def open_env(tmp_path: Path, upstox: UpstoxSimulator, **overrides: Any) -> Iterator[Env]:
    settings = make_settings(tmp_path, upstox, **overrides)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        _, key = ApiKeyRepository(session).create("reader", ApiKeyScope.READ, datetime.now(UTC))
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        yield Env(settings, client, key, upstox)


@pytest.fixture
def env(tmp_path: Path, sim: UpstoxSimulator) -> Iterator[Env]:
    yield from open_env(tmp_path, sim)


def login_link(env: Env) -> str:
    """A one-time login link, as `upstox-bot login` prints it (the path and query)."""
    url = issue_login_link(env.client.app.state.sessions, env.settings, datetime.now(UTC))  # type: ignore[attr-defined]
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "http://testserver"  # UPSTOX_REDIRECT_URI's
    return f"{parts.path}?{parts.query}"


def browser_login(env: Env) -> Any:
    """Follow the login as a browser would: the link, Upstox's dialog, Upstox's redirect."""
    start = env.client.get(login_link(env), follow_redirects=False)
    assert start.status_code == 302, start.text
    dialog = httpx.get(start.headers["location"], follow_redirects=False)
    assert dialog.status_code == 302, dialog.text
    back = urlsplit(dialog.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    return env.client.get(f"{back.path}?{back.query}")


def stored_rows(settings: Settings) -> list[UpstoxTokenRow]:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return list(session.scalars(select(UpstoxTokenRow)))
    finally:
        engine.dispose()


def test_the_cli_prints_a_one_time_link_that_starts_the_login(env: Env) -> None:
    settings = env.settings
    variables = {
        "DATA_DIR": str(settings.DATA_DIR),
        "UPSTOX_API_BASE_URL": env.upstox.base_url,
        "UPSTOX_API_KEY": env.upstox.rest.client_id,
        "UPSTOX_API_SECRET": env.upstox.rest.client_secret,
        "UPSTOX_REDIRECT_URI": CALLBACK,
        "TOKEN_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "COLUMNS": "300",  # the link on one line
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))}
    run = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "login"],
        env={**base, **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    (link,) = re.findall(r"http://testserver/api/v1/auth/upstox/login\?ticket=\S+", run.stdout)
    parts = urlsplit(link)
    start = env.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
    assert start.status_code == 302, start.text
    assert env.client.get(f"{parts.path}?{parts.query}").status_code == 403  # once only
    missing = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "login"],
        env={**base, **variables, "TOKEN_ENCRYPTION_KEY": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2
    assert "TOKEN_ENCRYPTION_KEY" in missing.stderr
    assert "ticket=" not in missing.stdout


def test_login_redirects_to_the_upstox_dialog_with_app_key_and_state(env: Env) -> None:
    response = env.client.get(login_link(env), follow_redirects=False)

    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}" == env.upstox.base_url
    assert target.path == "/v2/login/authorization/dialog"
    query = parse_qs(target.query)
    assert query["client_id"] == [env.upstox.rest.client_id]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["response_type"] == ["code"]
    assert len(query["state"][0]) >= 32
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/api/v1/auth/upstox" in cookie


def test_a_login_starts_only_from_a_one_time_link(env: Env) -> None:
    bare = env.client.get("/api/v1/auth/upstox/login", follow_redirects=False)
    assert bare.status_code == 422
    assert bare.json()["errors"][0]["loc"] == ["query", "ticket"]
    link = login_link(env)
    assert env.client.get(link, follow_redirects=False).status_code == 302
    again = env.client.get(link, follow_redirects=False)  # spent
    assert again.status_code == 403
    assert again.json()["error"] == "invalid_login_link"
    forged = env.client.get("/api/v1/auth/upstox/login?ticket=guess", follow_redirects=False)
    assert forged.status_code == 403
    assert env.upstox.rest.requests_to("/v2/login/authorization/dialog") == []


def test_a_trade_key_can_ask_for_a_login_link_and_a_read_key_cannot(env: Env) -> None:
    engine = make_engine(env.settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        _, trade = ApiKeyRepository(session).create("trader", ApiKeyScope.TRADE, datetime.now(UTC))
    engine.dispose()
    path = "/api/v1/auth/upstox/login-link"
    assert env.client.post(path).status_code == 401
    assert env.client.post(path, headers={"X-API-Key": env.api_key}).status_code == 403
    made = env.client.post(path, headers={"X-API-Key": trade})
    assert made.status_code == 201, made.text
    link = urlsplit(made.json()["url"])
    assert env.client.get(f"{link.path}?{link.query}", follow_redirects=False).status_code == 302


def test_the_callback_is_refused_to_a_browser_that_did_not_start_the_login(
    env: Env, sim: UpstoxSimulator
) -> None:
    start = env.client.get(login_link(env), follow_redirects=False)
    dialog = httpx.get(start.headers["location"], follow_redirects=False)
    back = urlsplit(dialog.headers["location"])
    callback = f"{back.path}?{back.query}"
    with TestClient(create_app(env.settings)) as other:  # another browser: no login cookie
        refused = other.get(callback)
        other.cookies.set(COOKIE, "a-cookie-of-its-own", path="/api/v1/auth/upstox")
        wrong = other.get(callback)
    assert refused.status_code == 403
    assert refused.json()["error"] == "login_not_started_here"
    assert wrong.status_code == 403
    assert stored_rows(env.settings) == []
    # The browser that started it still finishes it: the refusals did not spend the state.
    assert env.client.get(callback).status_code == 200
    assert len(stored_rows(env.settings)) == 1


async def test_login_end_to_end_stores_the_token_encrypted_and_it_works(env: Env) -> None:
    response = browser_login(env)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == env.upstox.rest.user_id
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert expires_at.astimezone(UTC).time().isoformat() == "22:00:00"  # 03:30 IST
    (row,) = stored_rows(env.settings)
    assert row.user_id == env.upstox.rest.user_id
    store = token_store_from_settings(
        env.settings, make_session_factory(make_engine(env.settings.database_url))
    )
    token = store.access_token(datetime.now(UTC))
    assert token is not None
    assert token.get_secret_value() not in row.ciphertext
    status = store.status(datetime.now(UTC))
    assert status.state in (TokenState.VALID, TokenState.EXPIRING)
    assert status.source is TokenSource.LOGIN
    async with UpstoxClient(access_token=lambda: token, api_base_url=env.upstox.base_url) as api:
        funds = await api.funds_and_margin()
    assert funds.equity.available_margin_paise > 0

    shown = env.client.get("/api/v1/auth/upstox/status", headers={"X-API-Key": env.api_key})
    assert shown.status_code == 200
    assert shown.json()["state"] in ("valid", "expiring")
    assert shown.json()["source"] == "login"
    assert token.get_secret_value() not in shown.text


def test_callback_with_a_spent_or_foreign_state_is_refused(env: Env) -> None:
    start = env.client.get(login_link(env), follow_redirects=False)
    dialog = httpx.get(start.headers["location"], follow_redirects=False)
    back = urlsplit(dialog.headers["location"])
    first = env.client.get(f"{back.path}?{back.query}")
    assert first.status_code == 200

    # The login cookie went with the success: a replay from this browser has none left.
    replay = env.client.get(f"{back.path}?{back.query}")
    assert replay.status_code == 403
    assert replay.json()["error"] == "login_not_started_here"
    forged = env.client.get(f"{back.path}?code=abc&state=not-ours")
    assert forged.status_code == 403  # not the state this browser's cookie is bound to
    assert len(stored_rows(env.settings)) == 1


def upstox_redirect(env: Env) -> str:
    """Start a login on ``env``'s API process; the callback path Upstox sends the browser to."""
    start = env.client.get(login_link(env), follow_redirects=False)
    assert start.status_code == 302, start.text
    dialog = httpx.get(start.headers["location"], follow_redirects=False)
    back = urlsplit(dialog.headers["location"])
    return f"{back.path}?{back.query}"


def test_a_state_issued_by_one_api_process_is_spent_once_by_another(env: Env) -> None:
    with TestClient(create_app(env.settings)) as second:  # another process, same database
        callback = upstox_redirect(env)
        second.cookies = env.client.cookies  # the same browser

        first = second.get(callback)
        assert first.status_code == 200, first.text
        replay_here = second.get(callback)
        replay_there = env.client.get(callback)

    assert replay_here.status_code == 403  # the success took this browser's cookie away
    assert replay_there.status_code == 400  # a copy of the cookie: the state is spent
    assert replay_there.json()["error"] == "invalid_login_state"
    assert len(stored_rows(env.settings)) == 1


def test_an_expired_state_is_refused_by_every_api_process(env: Env) -> None:
    callback = upstox_redirect(env)
    engine = make_engine(env.settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            session.execute(
                update(UpstoxLoginStateRow).values(
                    expires_at=datetime.now(UTC) - timedelta(seconds=1)
                )
            )
    finally:
        engine.dispose()

    with TestClient(create_app(env.settings)) as second:
        second.cookies = env.client.cookies  # the same browser
        refused = second.get(callback)
    again = env.client.get(callback)

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_login_state"
    assert again.status_code == 400
    assert stored_rows(env.settings) == []


def test_the_database_keeps_only_a_digest_of_each_state(env: Env) -> None:
    callback = upstox_redirect(env)
    state = parse_qs(urlsplit(callback).query)["state"][0]

    engine = make_engine(env.settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            (row,) = session.scalars(select(UpstoxLoginStateRow))  # the ticket was spent
    finally:
        engine.dispose()
    assert row.state_sha256 == state_digest(state)
    assert state not in row.state_sha256


def test_upstox_refusing_the_code_stores_nothing(env: Env) -> None:
    start = env.client.get(login_link(env), follow_redirects=False)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]

    response = env.client.get(f"/api/v1/auth/upstox/callback?code=bogus&state={state}")

    assert response.status_code == 400
    assert "UDAPI100057" in response.json()["detail"]
    assert stored_rows(env.settings) == []


def test_login_without_an_encryption_key_is_refused_before_upstox(
    tmp_path: Path, sim: UpstoxSimulator
) -> None:
    for env in open_env(tmp_path, sim, TOKEN_ENCRYPTION_KEY=None):
        response = env.client.get(login_link(env), follow_redirects=False)
        assert response.status_code == 409
        assert response.json()["error"] == "upstox_not_configured"
        assert "TOKEN_ENCRYPTION_KEY" in response.json()["detail"]
        assert sim.rest.requests_to("/v2/login/authorization/dialog") == []


def test_token_status_needs_an_api_key(env: Env) -> None:
    assert env.client.get("/api/v1/auth/upstox/status").status_code == 401
    shown = env.client.get("/api/v1/auth/upstox/status", headers={"X-API-Key": env.api_key})
    assert shown.json()["state"] == "missing"
    assert shown.json()["entries_allowed"] is False


# --- the token guard ------------------------------------------------------------------------


@dataclass
class RecordingAlerts:
    sent: list[tuple[AlertKind, str]] = field(default_factory=list)

    def notify(self, kind: AlertKind, message: str, *, key: str | None = None) -> None:
        self.sent.append((kind, message))


def grant(issued_at: datetime, token: str = "plain-token") -> TokenGrant:  # noqa: S107
    return TokenGrant.from_api(
        {"access_token": token, "user_id": "SIM123", "user_name": "Sim"}, issued_at=issued_at
    )


def test_expired_token_pauses_entries_alerts_once_and_a_new_login_resumes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    issued = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)  # 08:00 IST; dies 03:30 IST next day
    store = TokenStore(
        sessions, encryption_key=SecretStr(ENCRYPTION_KEY), env_token=None, loaded_at=issued
    )
    store.save_grant(grant(issued))
    alerts = RecordingAlerts()
    guard = TokenGuard(store, alerts=alerts, check_every=timedelta(0))

    assert guard.entries_allowed(issued + timedelta(hours=1))
    assert guard.token_state(issued + timedelta(hours=1)) is TokenState.VALID
    assert alerts.sent == []
    expiring_at = datetime(2026, 11, 24, 21, 30, tzinfo=UTC)  # 03:00 IST
    assert guard.token_state(expiring_at) is TokenState.EXPIRING
    assert guard.entries_allowed(expiring_at)
    after = datetime(2026, 11, 24, 22, 0, 1, tzinfo=UTC)  # 03:30:01 IST
    assert not guard.entries_allowed(after)
    assert not guard.entries_allowed(after + timedelta(minutes=5))
    assert guard.token_state(after) is TokenState.EXPIRED
    assert [kind for kind, _ in alerts.sent] == [AlertKind.TOKEN_EXPIRING, AlertKind.TOKEN_EXPIRED]
    assert "paused" in alerts.sent[-1][1]

    next_morning = datetime(2026, 11, 25, 2, 45, tzinfo=UTC)
    store.save_grant(grant(next_morning, "new-token"))
    assert guard.entries_allowed(next_morning)
    assert store.access_token(next_morning) == SecretStr("new-token")


def test_revoked_login_falls_back_to_the_environment_token_then_pauses(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    store = TokenStore(
        sessions,
        encryption_key=SecretStr(ENCRYPTION_KEY),
        env_token=SecretStr("env-token"),
        loaded_at=now,
    )
    store.save_grant(grant(now))
    alerts = RecordingAlerts()
    guard = TokenGuard(store, alerts=alerts, check_every=timedelta(hours=1))

    assert store.access_token(now) == SecretStr("plain-token")  # the login wins
    guard.report_rejected(now, "UDAPI100050")
    assert store.access_token(now) == SecretStr("env-token")
    assert guard.check(now).source is TokenSource.ENVIRONMENT
    assert guard.entries_allowed(now)  # cached status was refreshed by report_rejected

    guard.report_rejected(now, "UDAPI100050")
    assert store.access_token(now) is None
    assert not guard.entries_allowed(now)
    assert guard.token_state(now) is TokenState.EXPIRED
    assert [kind for kind, _ in alerts.sent] == [AlertKind.TOKEN_EXPIRED]


def test_a_refusal_of_a_token_already_replaced_by_a_login_revokes_nothing(
    tmp_path: Path,
) -> None:
    # The feed was refused with the old token while the trader had just logged in again:
    # the new token must not be thrown away for its predecessor's refusal.
    url = f"sqlite:///{(tmp_path / 'db.sqlite').as_posix()}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    store = TokenStore(
        sessions, encryption_key=SecretStr(ENCRYPTION_KEY), env_token=None, loaded_at=now
    )
    store.save_grant(grant(now, "old-token"))
    store.save_grant(grant(now + timedelta(minutes=1), "new-token"))
    guard = TokenGuard(store, check_every=timedelta(0))

    guard.report_rejected(now + timedelta(minutes=2), "feed 401", token="old-token")
    assert store.access_token(now + timedelta(minutes=2)) == SecretStr("new-token")

    guard.report_rejected(now + timedelta(minutes=3), "feed 401", token="new-token")
    assert store.access_token(now + timedelta(minutes=3)) != SecretStr("new-token")


def test_guard_survives_an_unreadable_store(tmp_path: Path) -> None:
    sessions = make_session_factory(
        make_engine(f"sqlite:///{(tmp_path / 'none.sqlite').as_posix()}")
    )
    store = TokenStore(sessions, encryption_key=None, env_token=None, loaded_at=datetime.now(UTC))
    alerts = RecordingAlerts()
    guard = TokenGuard(store, alerts=alerts)

    assert not guard.entries_allowed(datetime.now(UTC))  # no table: reported, not raised
    assert guard.token_state(datetime.now(UTC)) is TokenState.MISSING
    assert [kind for kind, _ in alerts.sent] == [AlertKind.TOKEN_EXPIRED]


# --- the login state store ------------------------------------------------------------------


def state_sessions(tmp_path: Path) -> Any:
    url = f"sqlite:///{(tmp_path / 'states.sqlite').as_posix()}"
    migrate.upgrade(url)
    return make_session_factory(make_engine(url))


def test_state_store_spends_a_state_once_and_refuses_it_after_its_ttl(tmp_path: Path) -> None:
    sessions = state_sessions(tmp_path)
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    with session_scope(sessions) as session:
        fresh = LoginStateStore(session).issue(now)
        stale = LoginStateStore(session).issue(now)

    with session_scope(sessions) as session:
        store = LoginStateStore(session)
        assert store.consume(fresh, now + timedelta(minutes=9))
        assert not store.consume(fresh, now + timedelta(minutes=9))
        assert not store.consume(stale, now + timedelta(minutes=10))  # expired: spent for good
        assert not store.consume(stale, now)
        assert not store.consume(None, now)
        assert not store.consume("", now)
        assert store.pending() == 0


def test_state_store_purges_expired_states_and_caps_the_pending_ones(tmp_path: Path) -> None:
    sessions = state_sessions(tmp_path)
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    with session_scope(sessions) as session:
        store = LoginStateStore(session, max_pending=3)
        old = store.issue(now - timedelta(hours=1))
        states = [store.issue(now + timedelta(seconds=i)) for i in range(4)]
        assert store.pending() == 3  # the expired one purged, the oldest live one dropped

        assert not store.consume(old, now)
        assert not store.consume(states[0], now)
        assert all(store.consume(s, now + timedelta(seconds=5)) for s in states[1:])
