"""Backtests through the API: submit (trade scope), run on the in-process dispatcher, read the
result and the report; paths outside the allowed folders refused; a job runs once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.api.conftest import Keys
from upstox_bot.backtest import jobs
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.service import run_backtest
from upstox_bot.config import Settings
from upstox_bot.db.models_backtest import BacktestStatus
from upstox_bot.db.repositories.backtests import BacktestRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope

BASE = "/api/v1/backtests"
REQUEST: dict[str, Any] = {
    "strategy": "sma_crossover",
    "params": {"fast": 3, "slow": 8},
    "quantity": 10,
}


def write_walk(path: Path, days: tuple[str, ...] = ("2026-11-23", "2026-11-24")) -> Path:
    """A zig-zag 1-minute walk that crosses its averages often (trades every session)."""
    lines = ["timestamp,open,high,low,close,volume"]
    price = 10_000
    for day in days:
        for minute in range(375):
            step = 15 if (minute // 12) % 2 == 0 else -14
            o, c = price, price + step
            h, lo = max(o, c) + 5, min(o, c) - 5
            hh, mm = divmod(9 * 60 + 15 + minute, 60)
            lines.append(
                f"{day} {hh:02d}:{mm:02d}:00,{o / 100:.2f},{h / 100:.2f},{lo / 100:.2f},"
                f"{c / 100:.2f},100"
            )
            price = c
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Recorder:
    """A dispatcher that only records: the backtest stays pending until a test executes it."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def dispatch(self, backtest_id: str) -> None:
        self.ids.append(backtest_id)


@pytest.fixture
def threads(client: TestClient, settings: Settings) -> Iterator[jobs.ThreadDispatcher]:
    dispatcher = jobs.ThreadDispatcher(client.app.state.sessions, settings)  # type: ignore[attr-defined]
    client.app.state.backtest_dispatcher = dispatcher  # type: ignore[attr-defined]
    yield dispatcher
    dispatcher.shutdown()


@pytest.fixture
def recorder(client: TestClient) -> Recorder:
    dispatcher = Recorder()
    client.app.state.backtest_dispatcher = dispatcher  # type: ignore[attr-defined]
    return dispatcher


def test_submitted_backtest_runs_in_the_background_and_matches_a_direct_run(
    client: TestClient, settings: Settings, threads: jobs.ThreadDispatcher
) -> None:
    csv = write_walk(settings.DATA_DIR / "candles" / "ZIG.csv")

    response = client.post(BASE, json={**REQUEST, "data": "candles/ZIG.csv"})

    assert response.status_code == 202
    submitted = response.json()
    assert submitted["status"] == "pending"
    assert threads.wait(timeout_s=60)
    body = client.get(f"{BASE}/{submitted['id']}").json()
    assert body["status"] == "done", body["error"]
    assert body["request"]["data"] == str(csv.resolve())  # stored resolved: workers agree
    direct = run_backtest(
        BacktestRequest(
            data=str(csv), strategy="sma_crossover", params=REQUEST["params"], quantity=10
        ),
        settings=settings,
    )
    assert body["summary"]["trade_count"] == direct.summary.trade_count > 3
    assert Decimal(body["summary"]["net_pnl"]) * 100 == direct.summary.net_pnl_paise
    served = [
        (datetime.fromisoformat(t["entry_time"]), Decimal(t["exit_price"]), t["exit_reason"])
        for t in body["trades"]
    ]
    expected = [
        (t.entry_time, Decimal(t.exit_price_paise) / 100, t.exit_reason) for t in direct.trades
    ]
    assert served == expected
    assert body["started_at"] <= body["finished_at"]

    listing = client.get(BASE)
    assert listing.headers["X-Total-Count"] == "1"
    item = listing.json()["items"][0]
    assert (item["id"], item["status"], item["strategy"]) == (
        submitted["id"],
        "done",
        "sma_crossover",
    )
    assert item["summary"]["trade_count"] == direct.summary.trade_count

    report = client.get(f"{BASE}/{submitted['id']}/report")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "Monthly returns" in report.text
    assert direct.trades[0].exit_reason in report.text


def test_report_is_409_until_done_and_a_second_execute_computes_nothing(
    client: TestClient, settings: Settings, recorder: Recorder
) -> None:
    write_walk(settings.DATA_DIR / "ZIG.csv", days=("2026-11-23",))
    backtest_id = client.post(BASE, json={**REQUEST, "data": "ZIG.csv"}).json()["id"]
    assert recorder.ids == [backtest_id]

    pending = client.get(f"{BASE}/{backtest_id}/report")
    assert pending.status_code == 409
    assert pending.json()["error"] == "conflict"
    assert client.get(f"{BASE}/{backtest_id}").json()["trades"] is None

    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    assert jobs.execute(sessions, backtest_id, settings) is BacktestStatus.DONE
    first = client.get(f"{BASE}/{backtest_id}").json()
    assert jobs.execute(sessions, backtest_id, settings) is None  # duplicate delivery
    again = client.get(f"{BASE}/{backtest_id}").json()
    assert again == first
    assert first["status"] == "done"
    assert client.get(f"{BASE}/{backtest_id}/report").status_code == 200


def test_a_run_that_cannot_read_its_data_fails_with_the_reason(
    client: TestClient, settings: Settings, threads: jobs.ThreadDispatcher
) -> None:
    bad = settings.DATA_DIR / "BAD.csv"
    bad.write_text("timestamp,open,high,low,close\n2026-11-23 09:15:00,abc,1,1,1\n")

    backtest_id = client.post(BASE, json={**REQUEST, "data": str(bad)}).json()["id"]

    assert threads.wait(timeout_s=30)
    body = client.get(f"{BASE}/{backtest_id}").json()
    assert body["status"] == "failed"
    assert "line 2 column open" in body["error"]
    assert body["summary"] is None
    report = client.get(f"{BASE}/{backtest_id}/report")
    assert report.status_code == 409
    assert "failed" in report.json()["detail"]
    listed = client.get(BASE, params={"status": "failed"}).json()
    assert [i["id"] for i in listed["items"]] == [backtest_id]
    assert client.get(BASE, params={"status": "done"}).json()["total"] == 0


def test_read_key_may_list_but_not_submit(
    client: TestClient, settings: Settings, keys: Keys, recorder: Recorder
) -> None:
    write_walk(settings.DATA_DIR / "ZIG.csv", days=("2026-11-23",))
    read = {"X-API-Key": keys.read}

    refused = client.post(BASE, json={**REQUEST, "data": "ZIG.csv"}, headers=read)

    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert recorder.ids == []
    assert client.get(BASE, headers=read).json()["total"] == 0
    assert client.post(BASE, json={**REQUEST, "data": "ZIG.csv"}, headers={}).status_code == 202
    assert client.get(BASE, headers={"X-API-Key": keys.revoked}).status_code == 401


def _field_error(response: Any) -> tuple[int, list[object]]:
    return response.status_code, [e["loc"] for e in response.json()["errors"]]


def test_paths_outside_the_allowed_folders_are_refused_naming_the_field(
    client: TestClient,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    recorder: Recorder,
) -> None:
    outside = write_walk(tmp_path_factory.mktemp("elsewhere") / "ZIG.csv")
    (settings.DATA_DIR / "link.csv").symlink_to(outside)
    refused = [
        str(outside),  # absolute, outside DATA_DIR
        "../" + outside.parent.name + "/ZIG.csv",  # climbs out of DATA_DIR
        "link.csv",  # a link inside that points outside
        "upstox_bot.sqlite",  # inside, but not CSV data
        "missing.csv",
    ]
    for data in refused:
        response = client.post(BASE, json={**REQUEST, "data": data})
        assert _field_error(response) == (422, [["body", "data"]]), data
        reason = "outside" if data.endswith("ZIG.csv") or data == "link.csv" else "csv"
        assert reason in response.json()["errors"][0]["msg"].lower(), data
    assert recorder.ids == []


def test_backtest_data_dirs_opens_more_folders(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("history")
    csv = write_walk(folder / "ZIG.csv", days=("2026-11-23",))
    with pytest.raises(jobs.DataPathRefused, match="outside"):
        jobs.check_data_path(str(csv), settings)
    wider = settings.model_copy(update={"BACKTEST_DATA_DIRS": [folder]})
    assert jobs.check_data_path(str(csv), wider) == csv.resolve()
    assert jobs.check_data_path(str(folder), wider) == folder.resolve()
    parsed = Settings(_env_file=None, BACKTEST_DATA_DIRS=f"{folder}, /srv/candles")
    assert [folder, Path("/srv/candles")] == parsed.BACKTEST_DATA_DIRS


def test_invalid_fields_are_422_naming_the_field(
    client: TestClient, settings: Settings, recorder: Recorder
) -> None:
    write_walk(settings.DATA_DIR / "ZIG.csv", days=("2026-11-23",))
    good = {**REQUEST, "data": "ZIG.csv"}
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"strategy": "luck"}, ["body", "strategy"]),
        ({"params": {"fast": 9, "slow": 3}}, ["body", "params"]),
        ({"timeframe": "7x"}, ["body", "timeframe"]),
        ({"quantity": 0}, ["body", "quantity"]),
        ({"charges": "zerodha"}, ["body", "charges"]),
        ({"stop_loss_pct": 100}, ["body", "stop_loss_pct"]),
        ({"surprise": 1}, ["body", "surprise"]),
    ]
    for change, loc in cases:
        response = client.post(BASE, json={**good, **change})
        assert _field_error(response) == (422, [loc]), change
    dates = client.post(BASE, json={**good, "start": "2026-11-24", "end": "2026-11-23"})
    assert dates.status_code == 422
    assert recorder.ids == []


def test_unknown_backtest_is_404(client: TestClient) -> None:
    assert client.get(f"{BASE}/nope").json()["error"] == "not_found"
    assert client.get(f"{BASE}/nope/report").status_code == 404


def test_execute_of_an_unknown_id_does_nothing(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        sessions = make_session_factory(engine)
        assert jobs.execute(sessions, "00000000-0000-0000-0000-000000000000", settings) is None
        with session_scope(sessions) as session:
            assert BacktestRepository(session).find() == ([], 0)
    finally:
        engine.dispose()
