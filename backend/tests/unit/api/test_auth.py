"""API keys: no key, a wrong scope and a revoked key are refused; the CLI manages keys."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from tests.unit.api.conftest import Keys
from upstox_bot.api import auth
from upstox_bot.api.app import create_app
from upstox_bot.api.auth import ensure_local_key
from upstox_bot.config import Settings
from upstox_bot.db.repositories.api_keys import ApiKeyRepository

READS = [
    "/api/v1",
    "/api/v1/positions",
    "/api/v1/trades",
    "/api/v1/signals",
    "/api/v1/orders",
    "/api/v1/account",
    "/api/v1/settings",
    "/api/v1/risk",
    "/api/v1/audit",
    "/api/v1/strategies",
    "/api/v1/symbols",
    "/metrics",
]
WRITES = [
    ("post", "/api/v1/risk/kill-switch", {"active": True, "reason": "x"}),
    ("patch", "/api/v1/settings", {"changes": {"MAX_OPEN_POSITIONS": 2}}),
    ("post", "/api/v1/strategies/ema_rsi/enable", None),
    ("put", "/api/v1/strategies/ema_rsi/parameters", {"params": {}}),
    ("post", "/api/v1/positions/X/close", None),
    ("post", "/api/v1/trades", {"instrument_key": "X"}),
    ("post", "/api/v1/orders/X/cancel", None),
    ("put", "/api/v1/orders/X", {"price": "100.00"}),
    ("post", "/api/v1/symbols/refresh", None),
]


@pytest.fixture
def anonymous(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.mark.parametrize("path", READS)
def test_no_key_is_401_with_the_error_body(anonymous: TestClient, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthenticated",
        "detail": "send an API key in the X-API-Key header",
    }


def test_unknown_and_revoked_keys_are_401(anonymous: TestClient, keys: Keys) -> None:
    unknown = anonymous.get("/api/v1/positions", headers={"X-API-Key": "ubk_nope"})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "unknown API key"
    revoked = anonymous.get("/api/v1/positions", headers={"X-API-Key": keys.revoked})
    assert revoked.status_code == 401
    assert revoked.json()["detail"] == "this API key was revoked"


@pytest.mark.parametrize("path", READS)
def test_a_read_key_reads_everything(anonymous: TestClient, keys: Keys, path: str) -> None:
    assert anonymous.get(path, headers={"X-API-Key": keys.read}).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_a_read_key_cannot_change_state(
    anonymous: TestClient, keys: Keys, method: str, path: str, body: object
) -> None:
    response = anonymous.request(method, path, json=body, headers={"X-API-Key": keys.read})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_a_key_revoked_while_in_use_stops_at_the_next_request(
    anonymous: TestClient, settings: Settings, keys: Keys
) -> None:
    from datetime import UTC, datetime

    from upstox_bot.db.repositories.api_keys import ApiKeyRepository, hash_key
    from upstox_bot.db.session import make_engine, make_session_factory, session_scope

    headers = {"X-API-Key": keys.trade}
    assert anonymous.get("/api/v1/positions", headers=headers).status_code == 200
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        repo = ApiKeyRepository(session)
        record = repo.find_by_hash(hash_key(keys.trade))
        assert record is not None
        assert record.last_used_at is not None
        repo.revoke(record.id, datetime.now(UTC))
    engine.dispose()
    assert anonymous.get("/api/v1/positions", headers=headers).status_code == 401


def test_cors_allows_only_the_configured_origins(settings: Settings, keys: Keys) -> None:
    allowed = settings.model_copy(update={"CORS_ORIGINS": ["http://localhost:5173"]})
    client = TestClient(create_app(allowed), headers={"X-API-Key": keys.read})
    ok = client.get("/api/v1/positions", headers={"Origin": "http://localhost:5173"})
    assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
    other = client.get("/api/v1/positions", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    closed = TestClient(create_app(settings), headers={"X-API-Key": keys.read})
    none = closed.get("/api/v1/positions", headers={"Origin": "http://localhost:5173"})
    assert "access-control-allow-origin" not in none.headers


def test_first_start_creates_one_local_trade_key(tmp_path: Path) -> None:
    settings = Settings.model_validate({"DATA_DIR": tmp_path})
    key = ensure_local_key(settings)
    assert key is not None
    assert key.startswith("ubk_")
    assert ensure_local_key(settings) is None
    client = TestClient(create_app(settings), headers={"X-API-Key": key})
    assert client.get("/api/v1/auth/status").json()["api_key"]["scope"] == "trade"
    assert key not in (tmp_path / "upstox_bot.sqlite").read_bytes().decode("latin-1")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "apikey", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )


def test_apikey_cli_creates_lists_and_revokes(tmp_path: Path) -> None:
    created = _cli(tmp_path, "create", "--name", "laptop", "--scope", "read", "--quiet")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    settings = Settings.model_validate({"DATA_DIR": tmp_path})
    client = TestClient(create_app(settings), headers={"X-API-Key": key})
    assert client.get("/api/v1/auth/status").json()["api_key"]["name"] == "laptop"

    listed = _cli(tmp_path, "list")
    assert "laptop" in listed.stdout
    assert key[:12] in listed.stdout
    assert key not in listed.stdout

    assert _cli(tmp_path, "revoke", "1").returncode == 0
    assert client.get("/api/v1/auth/status").status_code == 401
    assert _cli(tmp_path, "revoke", "99").returncode == 1
    assert "laptop" not in _cli(tmp_path, "list").stdout
    assert "laptop" in _cli(tmp_path, "list", "--all").stdout


def test_a_busy_database_skips_the_last_use_but_not_the_request(
    anonymous: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trading loop holds SQLite's write lock: recording the key's last use times out.
    def locked(self: ApiKeyRepository, key: str, at: datetime) -> None:
        raise OperationalError("UPDATE api_keys", {}, Exception("database is locked"))

    monkeypatch.setattr(ApiKeyRepository, "authenticate", locked)
    monkeypatch.setattr(auth._last_used, "_written", {})  # every key's last use is due
    response = anonymous.get("/api/v1/positions", headers={"X-API-Key": keys.read})
    assert response.status_code == 200, response.text
    # A revoked key is still refused: only the bookkeeping write is skipped.
    refused = anonymous.get("/api/v1/positions", headers={"X-API-Key": keys.revoked})
    assert refused.status_code == 401
