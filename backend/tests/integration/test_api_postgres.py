"""The API over PostgreSQL: a real bot session stored there, every read endpoint and the writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.api.conftest import make_keys, play
from upstox_bot.api.app import create_app

pytestmark = pytest.mark.integration

READS = [
    "/api/v1/positions",
    "/api/v1/trades?sort=-net_pnl",
    "/api/v1/signals?status=accepted&sort=-strength",
    "/api/v1/orders?status=filled",
    "/api/v1/account",
    "/api/v1/account/days",
    "/api/v1/account/pnl?from=2026-11-25",
    "/api/v1/symbols?q=a",
    "/api/v1/quotes",
    "/api/v1/risk",
    "/api/v1/audit?event_prefix=order.",
    "/api/v1/settings",
    "/api/v1/strategies",
    "/metrics",
    "/ready",
]


def test_the_api_reads_and_writes_on_postgresql(
    new_postgres_url: Callable[[], str], tmp_path: Path
) -> None:
    bot = play(tmp_path, DATABASE_URL=new_postgres_url())
    bot.db_engine.dispose()
    keys = make_keys(bot.settings)
    with TestClient(create_app(bot.settings), headers={"X-API-Key": keys.trade}) as client:
        _exercise(client)
    with TestClient(create_app(bot.settings), headers={"X-API-Key": keys.revoked}) as revoked:
        assert revoked.get("/api/v1/positions").status_code == 401


def _exercise(client: TestClient) -> None:
    for path in READS:
        assert client.get(path).status_code == 200, path
    trades = client.get("/api/v1/trades").json()
    assert trades["total"] > 0
    pnl = client.get("/api/v1/account/pnl").json()
    assert pnl["trades"] == trades["total"]
    assert client.get("/api/v1/account").json()["realised_pnl"] == pnl["net_pnl"]

    switched = client.post("/api/v1/risk/kill-switch", json={"active": True, "reason": "pg"})
    assert switched.status_code == 200
    assert client.get("/api/v1/risk").json()["kill_switch"] is True
    patched = client.patch("/api/v1/settings", json={"changes": {"MAX_OPEN_POSITIONS": 2}})
    assert patched.json()["changes"][0]["applied"] == "stored"
    audit = client.get("/api/v1/audit", params={"entity": "setting"}).json()
    assert audit["items"][0]["data"]["new"] == 2
