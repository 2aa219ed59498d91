"""The API's edge: what the abuse run and the review found, request by request.

Strict JSON, the one error body, range-safe dates, bounded paths and filters, the NaN parameter,
credentials never shown, security headers on every page, authentication before the body and the
failed-authentication limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.api.conftest import BotApp, Keys
from upstox_bot.api.app import create_app
from upstox_bot.api.auth import FailedAuthLimiter
from upstox_bot.api.errors import TooManyFailures
from upstox_bot.config import Settings, credential_names
from upstox_bot.db.repositories.settings_overrides import SettingsOverrideRepository
from upstox_bot.db.session import session_scope

JSON = {"Content-Type": "application/json"}


def _refused(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str)
    assert isinstance(body["detail"], str)
    if code is not None:
        assert body["error"] == code
    return body


def _invalid(response: Any, loc: list[Any]) -> dict[str, Any]:
    body = _refused(response, 422, "invalid_request")
    first = body["errors"][0]["loc"]
    assert first[: len(loc)] == loc, body
    assert "input" not in json.dumps(body["errors"]), "the input is never echoed"
    return body


# --- strict JSON at the edge ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"active": true, "reason": NaN}', "NaN"),
        (b'{"active": true, "reason": Infinity}', "Infinity"),
        (b'{"active": -Infinity, "reason": "x"}', "Infinity"),
        (b'{"active": true, "reason": 1e400}', "too large"),
        (b'{"active": true, "reason": "\\ud800"}', "lone surrogate"),
        (b'{"active": true, "reason": "\xed\xa0\x80"}', "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"active": true, "reason": ' + b"1" * 5000 + b"}", "4300 digits"),
    ],
)
def test_what_json_has_no_place_for_is_refused_at_the_edge(
    client: TestClient, body: bytes, why: str
) -> None:
    response = client.post("/api/v1/risk/kill-switch", content=body, headers=JSON)
    refused = _invalid(response, ["body"])
    assert refused["errors"][0]["type"] == "json_invalid"
    assert why in refused["detail"]
    assert client.get("/api/v1/risk").json()["kill_switch"] is False  # nothing happened


def test_valid_surrogate_pairs_and_unicode_pass(client: TestClient) -> None:
    body = '{"active": true, "reason": "\\ud83d\\ude00 ok é"}'.encode()
    response = client.post("/api/v1/risk/kill-switch", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["reason"] == "😀 ok é"


def test_json_types_are_strict_and_stored_text_has_no_nul(client: TestClient) -> None:
    _invalid(
        client.post("/api/v1/risk/kill-switch", json={"active": 0, "reason": "x"}),
        ["body", "active"],
    )
    _invalid(
        client.post("/api/v1/risk/kill-switch", json={"active": True, "reason": "a\x00b"}),
        ["body", "reason"],
    )
    _invalid(
        client.patch("/api/v1/settings", json={"changes": {"MAX_OPEN_POSITIONS": "2"}}),
        ["body", "changes", "MAX_OPEN_POSITIONS"],
    )
    _invalid(
        client.patch("/api/v1/settings", json={"changes": {"ENTRY_START_TIME": "09:20:00Z"}}),
        ["body", "changes", "ENTRY_START_TIME"],
    )


def test_a_nan_strategy_parameter_is_refused_and_nothing_changes(bot_app: BotApp) -> None:
    client = bot_app.client
    before = client.get("/api/v1/strategies/ema_rsi/parameters").json()
    for body in (
        b'{"params": {"rsi_oversold": NaN}}',
        b'{"params": {"rsi_oversold": Infinity}}',
        b'{"params": {"rsi_oversold": 1e999}}',
    ):
        response = client.put("/api/v1/strategies/ema_rsi/parameters", content=body, headers=JSON)
        _invalid(response, ["body"])
    # Text that Python would read as NaN is refused by the parameter itself.
    response = client.put(
        "/api/v1/strategies/ema_rsi/parameters", json={"params": {"rsi_oversold": "nan"}}
    )
    refused = _invalid(response, ["body", "changes", "STRATEGY_PARAMS"])
    assert "finite" in refused["detail"]
    assert client.get("/api/v1/strategies/ema_rsi/parameters").json() == before
    assert bot_app.bot.engine.strategy.params["rsi_oversold"] == 30
    with session_scope(bot_app.bot.sessions) as session:
        assert "STRATEGY_PARAMS" not in SettingsOverrideRepository(session).get_all()


# --- dates, paths, filters ------------------------------------------------------------------------


def test_extreme_times_filter_instead_of_failing(client: TestClient) -> None:
    everything = client.get("/api/v1/audit", params={"limit": 1}).json()["total"]
    assert everything > 0
    latest = client.get("/api/v1/audit", params={"until": "9999-12-31T23:59:59-23:59"})
    assert latest.status_code == 200
    assert latest.json()["total"] == everything
    earliest = client.get("/api/v1/orders", params={"since": "0001-01-01T00:00:00+14:00"})
    assert earliest.status_code == 200
    assert int(earliest.headers["X-Total-Count"]) > 0
    none_after = client.get("/api/v1/signals", params={"since": "9999-12-31T23:59:59-23:59"})
    assert none_after.json() == []


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/api/v1/trades", {"to": "0"}, ["query", "to"]),
        ("/api/v1/trades", {"from": "20261125"}, ["query", "from"]),
        ("/api/v1/trades", {"from": "2026-02-30"}, ["query", "from"]),
        ("/api/v1/account/days", {"to": "2026-11-25T00:00:00"}, ["query", "to"]),
        ("/api/v1/orders", {"since": "0"}, ["query", "since"]),
        ("/api/v1/orders", {"since": "1e3"}, ["query", "since"]),
        ("/api/v1/signals", {"until": "2026-11-25T09:15:00+24:00"}, ["query", "until"]),
        ("/api/v1/audit", {"event": "a\x00b"}, ["query", "event"]),
        ("/api/v1/audit", {"actor": "x" * 201}, ["query", "actor"]),
        ("/api/v1/trades", {"instrument_key": ""}, ["query", "instrument_key"]),
        ("/api/v1/symbols", {"q": "\x07"}, ["query", "q"]),
    ],
)
def test_invalid_filters_are_a_422_naming_them(
    client: TestClient, path: str, params: dict[str, str], loc: list[str]
) -> None:
    _invalid(client.get(path, params=params), loc)


def test_path_parameters_are_bounded(client: TestClient) -> None:
    _invalid(client.get("/api/v1/trades/" + "x" * 129), ["path", "trade_id"])
    _invalid(client.get("/api/v1/orders/a%00b"), ["path", "client_order_id"])
    _invalid(client.get("/api/v1/strategies/" + "s" * 300), ["path", "name"])
    _refused(client.get("/api/v1/trades/" + "x" * 128), 404, "not_found")


def test_a_backtest_path_the_file_system_refuses_is_a_422(client: TestClient) -> None:
    for data in ("x" * 300 + ".csv", "folder/" + "y" * 256 + "/bars.csv", "a" * 5000):
        response = client.post("/api/v1/backtests", json={"data": data, "strategy": "ema_rsi"})
        _invalid(response, ["body", "data"])


def test_the_oauth_callback_answers_the_one_error_body(client: TestClient) -> None:
    _invalid(
        client.get("/api/v1/auth/upstox/callback", params={"code": "c" * 513}),
        ["query", "code"],
    )
    _refused(client.get("/api/v1/auth/upstox/callback?code=a&state=b"), 403)


def test_errors_never_echo_what_they_refuse(client: TestClient, keys: Keys) -> None:
    secretish = "ubk_" + "s" * 40
    response = client.patch("/api/v1/settings", json={"changes": {"UPSTOX_API_KEY": secretish}})
    _invalid(response, ["body", "changes", "UPSTOX_API_KEY"])
    assert secretish not in response.text


# --- credentials ----------------------------------------------------------------------------------


def test_settings_never_show_a_credential_to_any_key(settings: Settings, keys: Keys) -> None:
    app = create_app(settings)
    app.state.settings = settings.model_copy(
        update={
            "UPSTOX_API_KEY": "upstox-app-key-123",
            "SMTP_USERNAME": "alerts@example.com",
            "TELEGRAM_CHAT_ID": "-1001234567",
            "DATABASE_URL": "postgresql+psycopg://bot:hunter2pass@db:5432/bot",
        }
    )
    with TestClient(app) as client:
        for key in (keys.read, keys.trade):
            shown = client.get("/api/v1/settings", headers={"X-API-Key": key})
            assert shown.status_code == 200
            values = shown.json()["values"]
            for name in ("UPSTOX_API_KEY", "SMTP_USERNAME", "TELEGRAM_CHAT_ID"):
                assert values[name] == "***"
            for name in credential_names():
                assert values[name] in ("***", None), name
            for secret in ("upstox-app-key-123", "alerts@example.com", "1234567", "hunter2pass"):
                assert secret not in shown.text
    assert {"UPSTOX_API_SECRET", "TOKEN_ENCRYPTION_KEY", "SMTP_PASSWORD"} <= credential_names()


# --- security headers -----------------------------------------------------------------------------


def test_every_page_sends_the_security_headers(client: TestClient) -> None:
    for path in (
        "/",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/static/app.js",
        "/health",
        "/api/v1",
        "/api/v1/nothing-here",
        "/nothing-here",
    ):
        response = client.get(path)
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
    page = client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in page
    assert "unsafe-inline" not in page.split("style-src")[0]
    docs = client.get("/docs")
    csp = docs.headers["content-security-policy"]
    assert "'sha256-" in csp  # the page's one inline script, by its hash
    assert "'unsafe-inline'" not in csp.split(";")[1]  # script-src


# --- authentication before the body, and its limit -----------------------------------------------


def test_a_caller_without_a_valid_key_never_has_its_body_read(
    settings: Settings, keys: Keys
) -> None:
    junk = b"{not json at all"
    with TestClient(create_app(settings)) as client:
        for key in (None, "ubk_unknown", keys.revoked):
            headers = {**JSON, **({"X-API-Key": key} if key else {})}
            response = client.post("/api/v1/risk/kill-switch", content=junk, headers=headers)
            _refused(response, 401, "unauthenticated")  # not 422: the body was never parsed
        read = {**JSON, "X-API-Key": keys.read}
        for path in ("/api/v1/risk/kill-switch", "/api/v1/settings", "/api/v1/trades"):
            method = "PATCH" if path.endswith("settings") else "POST"
            response = client.request(method, path, content=junk, headers=read)
            _refused(response, 403, "forbidden")  # the scope is checked before the body too
        # A read-scope route with a body parses it once the key is known.
        response = client.post("/api/v1/signals/test", content=junk, headers=read)
        _invalid(response, ["body"])


def test_failed_authentication_is_limited_per_client(settings: Settings, keys: Keys) -> None:
    limited = settings.model_copy(
        update={"API_AUTH_FAILURE_LIMIT": 5, "API_AUTH_FAILURE_WINDOW_SECONDS": 3600}
    )
    app = create_app(limited)
    with (
        TestClient(app, client=("203.0.113.7", 50000)) as attacker,
        TestClient(app, client=("198.51.100.2", 50000)) as trader,
    ):
        for _ in range(5):
            _refused(attacker.get("/api/v1/risk", headers={"X-API-Key": "ubk_guess"}), 401)
        blocked = attacker.get("/api/v1/risk", headers={"X-API-Key": "ubk_guess"})
        body = _refused(blocked, 429, "too_many_failed_authentications")
        assert 3500 <= int(blocked.headers["retry-after"]) <= 3600
        assert "retry in" in body["detail"]
        # While blocked, the client's keys are not even looked up: a good one is refused too.
        assert attacker.get("/api/v1/risk", headers={"X-API-Key": keys.read}).status_code == 429
        # A request without a key cannot guess anything: it stays a plain 401.
        assert attacker.get("/api/v1/risk").status_code == 401
        # Another client is not affected.
        assert trader.get("/api/v1/risk", headers={"X-API-Key": keys.read}).status_code == 200
        assert app.state.auth_limiter.refused == 2


def test_the_limiter_forgets_failures_as_they_leave_the_window() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(3, 60, clock=lambda: now[0], max_clients=2)
    for _ in range(3):
        limiter.check("a")
        limiter.failed("a")
        now[0] += 10
    with pytest.raises(TooManyFailures) as refused:
        limiter.check("a")
    assert refused.value.retry_after_s == 30  # the first failure (t=1000) leaves at t=1060
    now[0] = 1060.0
    limiter.check("a")  # one failure left the window: below the limit again
    limiter.failed("b")
    limiter.failed("c")  # at most two clients are remembered: "a" is forgotten
    limiter.failed("a")
    limiter.check("a")
