"""PATCH /api/v1/settings: validation naming the field, persistence, audit, live apply, and the
refusal of live trading before the paper-trading period (unless forced with a reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient

from tests.unit.api.conftest import BotApp, Keys
from upstox_bot.api.app import create_app
from upstox_bot.config import Settings
from upstox_bot.db.repositories.accounts import AccountRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import IST, AccountSnapshot
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions

URL = "/api/v1/settings"


def _loc(response: object) -> list[object]:
    return response.json()["errors"][0]["loc"]  # type: ignore[attr-defined, no-any-return]


def test_invalid_values_are_422_naming_the_setting(client: TestClient) -> None:
    cases = {
        "MAX_OPEN_POSITIONS": 0,
        "DAILY_LOSS_LIMIT": "lots",
        "ENTRY_END_TIME": "15:20",  # after the square-off
        "DATABASE_URL": "sqlite://",  # not changeable at runtime
        "NO_SUCH_SETTING": 1,
        "STRATEGY": "nope",
    }
    for key, value in cases.items():
        response = client.patch(URL, json={"changes": {key: value}})
        assert response.status_code == 422, (key, response.text)
        assert _loc(response) == ["body", "changes", key]
    empty = client.patch(URL, json={"changes": {}})
    assert empty.status_code == 422
    assert _loc(empty) == ["body", "changes"]
    assert client.get(URL).json()["overrides"] == []


def test_a_change_is_persisted_audited_and_survives_a_restart(
    client: TestClient, settings: Settings, keys: Keys
) -> None:
    response = client.patch(
        URL, json={"changes": {"MAX_OPEN_POSITIONS": 2, "STOP_LOSS_PERCENT": "3.5"}}
    )

    assert response.status_code == 200, response.text
    changes = {c["key"]: c for c in response.json()["changes"]}
    assert changes["MAX_OPEN_POSITIONS"] == {
        "key": "MAX_OPEN_POSITIONS",
        "old": 3,
        "new": 2,
        "applied": "stored",
    }
    assert changes["STOP_LOSS_PERCENT"]["new"] == "3.5"
    read = client.get(URL).json()
    assert read["values"]["MAX_OPEN_POSITIONS"] == 2
    overrides = {o["key"]: o for o in read["overrides"]}
    assert overrides["MAX_OPEN_POSITIONS"]["value"] == 2
    assert overrides["MAX_OPEN_POSITIONS"]["updated_by"].startswith("apikey:trader#")
    audit = client.get(
        "/api/v1/audit", params={"event": "setting.changed", "entity_id": "MAX_OPEN_POSITIONS"}
    ).json()["items"]
    assert audit[0]["data"] == {"old": 3, "new": 2, "applied": "stored"}
    assert audit[0]["actor"].startswith("apikey:trader#")
    assert client.get("/api/v1/risk").json()["max_open_positions"] == 2

    restarted = TestClient(create_app(settings), headers={"X-API-Key": keys.read})
    assert restarted.get(URL).json()["values"]["MAX_OPEN_POSITIONS"] == 2
    assert restarted.get(URL).json()["values"]["STOP_LOSS_PERCENT"] == "3.5"


def test_an_unchanged_value_records_nothing(client: TestClient) -> None:
    response = client.patch(URL, json={"changes": {"MAX_OPEN_POSITIONS": 3}})
    assert response.json() == {"changes": [], "forced": False}
    assert client.get("/api/v1/audit", params={"event": "setting.changed"}).json()["total"] == 0


def test_secrets_are_never_shown(settings: Settings, keys: Keys) -> None:
    secret = settings.model_copy(
        update={
            "DATABASE_URL": None,
            "REDIS_URL": "redis://user:hunter2@127.0.0.1:6379/0",
        }
    )
    client = TestClient(create_app(secret), headers={"X-API-Key": keys.read})
    body = client.get(URL).text
    assert "hunter2" not in body
    assert "***" in body


def test_risk_and_exit_changes_apply_to_the_running_engine(bot_app: BotApp) -> None:
    engine = bot_app.bot.engine
    capital = engine.risk.limits.capital_paise

    response = bot_app.client.patch(
        URL,
        json={
            "changes": {
                "DAILY_LOSS_LIMIT": 1,
                "MAX_ORDERS_PER_MINUTE": 4,
                "TAKE_PROFIT_PERCENT": 6,
                "SIGNAL_COOLDOWN_MINUTES": 9,
                "CANDLE_INTERVAL_MINUTES": 5,
            }
        },
    )

    assert response.status_code == 200, response.text
    applied = {c["key"]: c["applied"] for c in response.json()["changes"]}
    assert applied == {
        "DAILY_LOSS_LIMIT": "live",
        "MAX_ORDERS_PER_MINUTE": "live",
        "TAKE_PROFIT_PERCENT": "live",
        "SIGNAL_COOLDOWN_MINUTES": "live",
        "CANDLE_INTERVAL_MINUTES": "restart",
    }
    assert engine.risk.limits.daily_loss_limit_pct == Decimal(1)
    assert engine.risk.limits.capital_paise == capital  # the day's capital is kept
    assert engine.risk.rate_limiter.max_per_minute == 4
    assert engine.exits.rules.take_profit_pct == Decimal(6)
    assert engine.config.signal_cooldown_s == 540
    assert engine.config.candle_interval_s == 60
    risk = bot_app.client.get("/api/v1/risk").json()
    assert Decimal(risk["daily_loss_limit"]) * 100 == engine.risk.limits.daily_loss_limit_paise


def _paper_days(settings: Settings, days: int) -> None:
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        accounts = AccountRepository(session)
        record = accounts.get(settings.ACCOUNT_NAME)
        start = record.paper_started_at or datetime.now(UTC)
        first = start.astimezone(IST).date()  # paper days are IST trading dates
        for n in range(days):
            accounts.save_snapshot(
                settings.ACCOUNT_NAME,
                AccountSnapshot(
                    trading_date=(first + timedelta(days=n)).isoformat(),
                    capital_paise=10_000_000,
                    realised_pnl_paise=0,
                    unrealised_pnl_paise=0,
                    charges_paise=0,
                    open_positions=0,
                    trades=0,
                    orders=0,
                    loss_limit_paise=200_000,
                    loss_limit_hit=False,
                    kill_switch=False,
                ),
                datetime.now(UTC),
            )
    engine.dispose()


def test_live_trading_is_refused_before_the_paper_period(client: TestClient) -> None:
    response = client.patch(URL, json={"changes": {"LIVE_TRADING_ENABLED": True}})

    assert response.status_code == 409
    assert response.json()["error"] == "paper_history_too_short"
    assert "14 days" in response.json()["detail"]
    assert client.get(URL).json()["values"]["LIVE_TRADING_ENABLED"] is False
    no_reason = client.patch(URL, json={"changes": {"LIVE_TRADING_ENABLED": True}, "force": True})
    assert no_reason.status_code == 422
    assert _loc(no_reason) == ["body", "reason"]


def test_live_trading_forced_with_a_reason_is_audited(
    client: TestClient, settings: Settings
) -> None:
    # The played session's date lies before the account's paper start (the wall clock's day),
    # so only the days added here count, whatever day the test runs on.
    _paper_days(settings, 3)
    response = client.patch(
        URL,
        json={
            "changes": {"LIVE_TRADING_ENABLED": True},
            "force": True,
            "reason": "backtested for a year",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["forced"] is True
    forced = client.get("/api/v1/audit", params={"event": "live_trading.forced"}).json()
    (record,) = forced["items"]
    assert record["data"]["reason"] == "backtested for a year"
    assert record["data"]["paper_days"] == 3
    assert record["data"]["required_days"] == 14
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        assert AccountRepository(session).get(settings.ACCOUNT_NAME).live_trading_enabled
    engine.dispose()


def test_live_trading_after_the_paper_period_needs_no_force(
    client: TestClient, settings: Settings
) -> None:
    _paper_days(settings, 14)
    response = client.patch(URL, json={"changes": {"LIVE_TRADING_ENABLED": True}})
    assert response.status_code == 200, response.text
    assert response.json()["forced"] is False


def test_stored_changes_reach_the_engine_of_a_restarted_bot(bot_app: BotApp) -> None:
    bot_app.client.patch(URL, json={"changes": {"MAX_OPEN_POSITIONS": 1}})
    environment = bot_app.bot.settings.model_copy(update={"MAX_OPEN_POSITIONS": 3})

    restarted = EmbeddedBot(
        environment,
        RunOptions(speed=1, duration_minutes=1, seed=7, serve_api=False, live_console=False),
    )

    try:
        assert restarted.engine.risk.limits.max_open_positions == 1
    finally:
        restarted.close()
