"""The NSE calendar from Upstox's holidays API: the simulator's answers, storing a fetched year,
the calendar that results, and `upstox-bot calendar` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from tests.support.upstox_sim.rest import holiday_record, sample_holidays
from upstox_bot.clock import HOLIDAY, SPECIAL, SpecialSession
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import IST
from upstox_bot.runtime import components
from upstox_bot.runtime.live_market import refresh_calendar
from upstox_bot.upstox.client import UpstoxClient
from upstox_bot.upstox.errors import UpstoxApiError
from upstox_bot.upstox.holidays import (
    calendar_days_from_upstox,
    fetch_calendar_days,
    store_calendar_days,
)

BACKEND = Path(__file__).resolve().parents[2]
JAN_2027 = datetime(2027, 1, 10, 10, 0, tzinfo=IST)

sim = pytest.fixture(upstox_simulator)


def _in_2027(upstox: UpstoxSimulator) -> None:
    upstox.rest.now = lambda: JAN_2027
    upstox.rest.holidays = [
        *sample_holidays(2027),
        holiday_record(date(2027, 3, 22), "Holi"),
        holiday_record(date(2026, 12, 25), "Christmas"),  # another year: not served
    ]


def _client(upstox: UpstoxSimulator) -> UpstoxClient:
    token = upstox.rest.issue_token()
    return UpstoxClient(access_token=lambda: token, api_base_url=upstox.base_url)


async def test_the_simulator_answers_the_years_holidays_as_upstox_documents(
    sim: UpstoxSimulator,
) -> None:
    _in_2027(sim)
    async with _client(sim) as client:
        year = await client.market_holidays()
        one_day = await client.market_holidays(date(2027, 1, 26))
        with pytest.raises(UpstoxApiError, match="UDAPI1088"):
            await client._data("GET", "/v2/market/holidays/26-01-2027")
    assert [r["date"] for r in year] == [
        "2027-01-26",
        "2027-02-19",
        "2027-11-09",
        "2027-12-25",
        "2027-03-22",
    ]
    assert set(year[0]) == {
        "date",
        "description",
        "holiday_type",
        "closed_exchanges",
        "open_exchanges",
    }
    assert [r["description"] for r in one_day] == ["Republic Day"]
    assert sim.rest.requests_to("/v2/market/holidays")


async def test_fetched_days_are_nse_holidays_and_sessions_and_skip_settlement_holidays(
    sim: UpstoxSimulator,
) -> None:
    _in_2027(sim)
    async with _client(sim) as client:
        days = await fetch_calendar_days(client)
    listed = [(d.day, d.kind, d.session) for d in days]
    assert listed == [
        (date(2027, 1, 26), HOLIDAY, None),  # MCX open in the evening: NSE closed
        (date(2027, 3, 22), HOLIDAY, None),
        (date(2027, 11, 9), HOLIDAY, None),
        (date(2027, 11, 9), SPECIAL, SpecialSession(time(18, 0), time(19, 0))),
        (date(2027, 12, 25), HOLIDAY, None),
    ]  # 19 Feb is a settlement holiday only: trading goes on
    assert all(d.source.startswith("Upstox") and not d.provisional for d in days)


def test_a_record_that_cannot_be_read_is_skipped_not_fatal() -> None:
    days = calendar_days_from_upstox(
        [
            {"date": "soon", "description": "bad"},
            {"date": "2027-01-26T00:00:00+05:30", "closed_exchanges": ["NFO"]},
        ]
    )
    assert [(d.day, d.name) for d in days] == [(date(2027, 1, 26), "market holiday")]


async def test_a_stored_fetch_replaces_the_provisional_year_of_the_shipped_file(
    sim: UpstoxSimulator, tmp_path: Path
) -> None:
    _in_2027(sim)
    settings = Settings(_env_file=None, DATA_DIR=tmp_path)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    try:
        before = components.trading_calendar(settings, sessions)
        assert before.is_provisional(date(2027, 3, 22))
        assert before.is_trading_day(date(2027, 3, 22))  # Holi is not a fixed-date holiday
        async with _client(sim) as client:
            days = await fetch_calendar_days(client)
        with session_scope(sessions) as session:
            assert store_calendar_days(session, days, year=2027, at=datetime.now(UTC)) == 5
        with session_scope(sessions) as session:  # a later fetch with nothing: kept
            assert store_calendar_days(session, [], year=2027, at=datetime.now(UTC)) == 0
        after = components.trading_calendar(settings, sessions)
    finally:
        engine.dispose()
    assert not after.is_provisional(date(2027, 3, 22))
    assert not after.is_trading_day(date(2027, 3, 22))
    assert not after.is_trading_day(date(2027, 1, 26))
    assert after.holidays >= before.holidays - {d for d in before.holidays if d.year == 2027}
    assert [d.day for d in after.days_of_year(2026)] == [d.day for d in before.days_of_year(2026)]


def _cli_env(tmp_path: Path, upstox: UpstoxSimulator | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))}
    env.update(
        {
            "DATA_DIR": str(tmp_path / "var"),
            "PYTHONPATH": str(BACKEND / "src"),
            "LOG_LEVEL": "ERROR",
        }
    )
    if upstox is not None:
        env["UPSTOX_API_BASE_URL"] = upstox.base_url
    env.update(extra)
    return env


def _calendar(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "calendar", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_calendar_lists_a_year_one_iso_date_and_name_a_line(tmp_path: Path) -> None:
    done = _calendar(_cli_env(tmp_path), "--year", "2026")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "2026-01-15 Municipal Corporation Elections in Maharashtra (added 12 Jan 2026)"
    )
    assert lines[1] == "2026-01-26 Republic Day"
    assert len(lines) == 17  # 16 holidays and the Muhurat session of Sunday 8 November
    assert all(date.fromisoformat(line[:10]) and line[10] == " " for line in lines)
    assert not (tmp_path / "var").exists()  # reading creates no database


def test_calendar_marks_2027_provisional_and_refuses_an_unknown_year(tmp_path: Path) -> None:
    provisional = _calendar(_cli_env(tmp_path), "--year", "2027")
    assert provisional.returncode == 0, provisional.stderr
    assert provisional.stdout == "2027-01-26 Republic Day (provisional)\n"
    assert "provisional" in provisional.stderr
    unknown = _calendar(_cli_env(tmp_path), "--year", "2028")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert "does not know 2028-01-01" in unknown.stderr


def test_calendar_fetch_stores_upstoxs_year_and_lists_it(
    tmp_path: Path, sim: UpstoxSimulator
) -> None:
    year = datetime.now(UTC).astimezone(IST).year
    sim.rest.holidays = [holiday_record(date(year, 1, 26), "Republic Day")]
    env = _cli_env(tmp_path, sim, UPSTOX_ACCESS_TOKEN=sim.rest.issue_token())
    done = _calendar(env, "--fetch", "--year", str(year))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{year}-01-26 Republic Day\n"  # the fetched year replaces the file's
    assert "stored 1 calendar rows" in done.stderr
    again = _calendar(_cli_env(tmp_path), "--year", str(year))  # stored: no fetch needed
    assert again.stdout == done.stdout


def test_calendar_fetch_without_a_token_says_how_to_log_in(tmp_path: Path) -> None:
    done = _calendar(_cli_env(tmp_path), "--fetch")
    assert done.returncode == 2
    assert "upstox-bot login" in done.stderr


async def test_the_live_harness_fetches_stores_and_trades_by_upstoxs_year(
    sim: UpstoxSimulator, tmp_path: Path
) -> None:
    year = datetime.now(UTC).astimezone(IST).year
    sim.rest.holidays = [holiday_record(date(year, 6, 15), "A closure the file does not have")]
    settings = Settings(_env_file=None, DATA_DIR=tmp_path)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    risk = SimpleNamespace(calendar=None)
    bot = SimpleNamespace(
        settings=settings,
        sessions=make_session_factory(engine),
        calendar=None,
        engine=SimpleNamespace(use_calendar=lambda calendar: setattr(risk, "calendar", calendar)),
    )
    try:
        async with _client(sim) as client:
            await refresh_calendar(bot, client)  # type: ignore[arg-type]
        stored = components.calendar_days(settings, bot.sessions)
    finally:
        engine.dispose()
    assert bot.calendar is risk.calendar is not None
    assert [d.day for d in bot.calendar.days_of_year(year)] == [date(year, 6, 15)]
    assert date(year, 6, 15) in {d.day for d in stored}
