"""A whole simulated session through the CLI, checked from the database and the API."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.support.waiting import wait_until
from upstox_bot.api.app import create_app
from upstox_bot.config import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SESSION_DATE = "2026-11-25"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Run:
    data_dir: Path
    returncode: int
    output: str
    polled: list[dict[str, Any]] = field(default_factory=list)
    api_key: str = ""

    def rows(self, sql: str) -> list[Any]:
        engine = create_engine(f"sqlite:///{self.data_dir / 'upstox_bot.sqlite'}")
        with engine.connect() as conn:
            result = list(conn.execute(text(sql)))
        engine.dispose()
        return result


def play(
    tmp: Path,
    *,
    seed: int = 7,
    speed: int = 100_000,
    api: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "upstox_bot.cli",
        "run",
        "--speed",
        str(speed),
        "--duration",
        "375",
        "--seed",
        str(seed),
        "--date",
        SESSION_DATE,
        "--port",
        str(port),
        "--no-live",
    ]
    if not api:
        cmd.append("--no-api")
    full_env = {**os.environ, "DATA_DIR": str(tmp), "LOG_LEVEL": "WARNING", **(env or {})}
    full_env.pop("DATABASE_URL", None)
    api_key = ""
    if api:  # the API needs a key: a read key made with the CLI before the run
        api_key = subprocess.run(
            [sys.executable, "-m", "upstox_bot.cli", "apikey", "create", "--quiet"],
            env=full_env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp,
        ).stdout.strip()
    proc = subprocess.Popen(
        cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp
    )
    polled: list[dict[str, Any]] = []
    errors: list[str] = []

    def sampled_to_the_end() -> bool:
        """Sample the API while the session runs (a sample each poll); True once it ended."""
        if proc.poll() is not None:
            return True
        try:
            sample = {}
            for path in ("/health", "/api/v1/positions", "/api/v1/account"):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": api_key}
                )
                with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 - loopback http
                    sample[path] = json.loads(r.read())
            metrics = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics", headers={"X-API-Key": api_key}
            )
            with urllib.request.urlopen(metrics, timeout=5) as r:  # noqa: S310 - loopback http
                sample["/metrics"] = r.read().decode()
            polled.append(sample)
        except OSError as exc:  # not up yet, or finished: kept for the failure message
            errors.append(repr(exc))
        return False

    if api:
        wait_until(
            sampled_to_the_end,
            what="the session to end",
            within_s=300,
            every_s=0.2,
            details=lambda: "; ".join(errors[-5:]),
        )
    output, _ = proc.communicate(timeout=300)
    if errors:
        output += "\npolling errors (last 5): " + "; ".join(errors[-5:])
    return Run(tmp, proc.returncode, output, polled, api_key)


@pytest.fixture(scope="module")
def session_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    # speed 1000: the 375-minute session takes about 23 s, so the API can be polled during it
    return play(tmp_path_factory.mktemp("session"), speed=1000, api=True)


@pytest.fixture(scope="module")
def api(session_run: Run) -> Iterator[TestClient]:
    settings = Settings(_env_file=None, DATA_DIR=session_run.data_dir)
    with TestClient(create_app(settings), headers={"X-API-Key": session_run.api_key}) as client:
        yield client


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_session_exits_zero_and_trades(session_run: Run) -> None:
    assert session_run.returncode == 0, session_run.output
    assert session_run.rows("SELECT count(*) FROM trades")[0][0] >= 1


def test_api_answered_during_the_session(session_run: Run) -> None:
    assert len(session_run.polled) >= 3, session_run.output[-3000:]
    assert all(s["/health"]["status"] == "ok" for s in session_run.polled)
    assert any(s["/api/v1/positions"] for s in session_run.polled)
    assert max(len(s["/api/v1/positions"]) for s in session_run.polled) <= 3
    times = [s["/health"]["market_time"] for s in session_run.polled if s["/health"]["market_time"]]
    assert times == sorted(times)


def _metric(text: str, name: str) -> list[float]:
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    ]


def test_metrics_are_scraped_during_the_session(session_run: Run) -> None:
    scrapes = [s["/metrics"] for s in session_run.polled]
    assert len(scrapes) >= 3
    ticks = [_metric(text, "upstox_bot_ticks_total")[0] for text in scrapes]
    assert ticks == sorted(ticks)
    # Ticks in, growing while the session plays (the API answers before the first tick).
    assert ticks[-1] > ticks[0] >= 0
    last = scrapes[-1]
    for name in (
        "upstox_bot_feed_lag_seconds",
        "upstox_bot_orders{",
        "upstox_bot_rejections{",
        "upstox_bot_day_pnl_rupees",
        "upstox_bot_loss_limit_headroom_rupees",
        "upstox_bot_candle_to_order_seconds{",
        "upstox_bot_open_positions",
    ):
        assert _metric(last, name), f"{name} missing from /metrics"
    assert all(0 <= v < 60 for v in _metric(last, "upstox_bot_feed_lag_seconds"))


def test_never_more_than_three_open_positions(session_run: Run) -> None:
    events: list[tuple[datetime, int]] = []
    for opened, closed in session_run.rows("SELECT opened_at, closed_at FROM positions"):
        events.append((_dt(str(opened)), 1))
        if closed is not None:
            events.append((_dt(str(closed)), -1))
    events.sort(key=lambda e: (e[0], e[1]))  # a close at the same instant frees the slot first
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    assert 1 <= peak <= 3


def test_orders_are_paced(session_run: Run) -> None:
    sent = sorted(_dt(str(r[0])) for r in session_run.rows("SELECT at FROM rate_limit_logs"))
    created = sorted(_dt(str(r[0])) for r in session_run.rows("SELECT created_at FROM orders"))
    assert sent == created
    assert len(sent) >= 2
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 30
    for i, start in enumerate(sent):
        in_minute = [t for t in sent[i:] if t < start + timedelta(minutes=1)]
        assert len(in_minute) <= 10


def test_realised_pnl_equals_sum_of_trades_to_the_paisa(session_run: Run, api: TestClient) -> None:
    ((total,),) = session_run.rows("SELECT sum(net_pnl_paise) FROM trades")
    ((realised, charges),) = session_run.rows(
        "SELECT realised_pnl_paise, charges_paise FROM account_days"
    )
    assert total == realised
    ((gross, trade_charges),) = session_run.rows(
        "SELECT sum(gross_pnl_paise), sum(charges_paise) FROM trades"
    )
    assert gross - trade_charges == realised
    assert trade_charges == charges > 0
    account = api.get("/api/v1/account").json()
    assert account["realised_pnl"] == f"{realised / 100:.2f}"


def test_every_trade_is_squared_off_by_the_close(session_run: Run) -> None:
    assert session_run.rows("SELECT count(*) FROM positions WHERE status = 'open'")[0][0] == 0
    for (exit_at,) in session_run.rows("SELECT exit_at FROM trades"):
        # 15:15 IST square-off; an exit may wait up to 3 x 30 s for order slots
        assert _dt(str(exit_at)).time() <= time(9, 48)  # 15:18 IST, stored in UTC


def test_api_lists_what_the_database_holds(session_run: Run, api: TestClient) -> None:
    trades = api.get("/api/v1/trades", params={"limit": 1000}).json()
    assert trades["total"] == session_run.rows("SELECT count(*) FROM trades")[0][0]
    assert {t["trade_id"] for t in trades["items"]} == {
        r[0] for r in session_run.rows("SELECT trade_id FROM trades")
    }
    signals = api.get("/api/v1/signals", params={"limit": 5}).json()
    assert len(signals) == 5
    assert all("ema_fast" in s["indicators"] for s in signals)
    assert api.get("/api/v1/positions").json() == []
    assert api.get("/health").json()["database"] == "ok"
    assert api.get("/docs").status_code == 200
    assert api.get("/api/v1/trades/nope").status_code == 404


def test_every_exit_and_state_change_is_audited(session_run: Run) -> None:
    events = dict(session_run.rows("SELECT event, count(*) FROM audit_logs GROUP BY event"))
    trades = session_run.rows("SELECT count(*) FROM trades")[0][0]
    assert events["position.closed"] == trades
    assert events["position.opened"] == trades
    assert events["exit.triggered"] >= trades
    assert events["order.filled"] == 2 * trades


def test_same_seed_gives_the_same_trades(session_run: Run, tmp_path: Path) -> None:
    again = play(tmp_path)
    assert again.returncode == 0, again.output
    query = (
        "SELECT instrument_key, direction, quantity, entry_price_paise, exit_price_paise, "
        "entry_at, exit_at, net_pnl_paise, exit_reason FROM trades ORDER BY entry_at"
    )
    assert again.rows(query) == session_run.rows(query)


def test_no_entry_after_the_daily_loss_limit(tmp_path: Path) -> None:
    run = play(tmp_path, env={"DAILY_LOSS_LIMIT": "0.5"})
    assert run.returncode == 0, run.output
    hit = run.rows("SELECT at FROM audit_logs WHERE event = 'risk.daily_loss_limit_hit'")
    assert hit, "with a 0.5% limit the seeded session should hit it"
    hit_at = _dt(str(hit[0][0]))
    late_entries = [
        r
        for r in run.rows("SELECT created_at FROM orders WHERE purpose = 'entry'")
        if _dt(str(r[0])) > hit_at
    ]
    assert late_entries == []
    refused = run.rows("SELECT count(*) FROM risk_decisions WHERE rule = 'daily_loss_limit'")
    assert refused[0][0] >= 1
    assert run.rows("SELECT loss_limit_hit FROM account_days")[0][0] in (1, True)
