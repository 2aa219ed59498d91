"""`upstox-bot doctor` against the Upstox simulator: the checklist and its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from tests.support.upstox_sim import UpstoxSimulator, upstox_simulator
from upstox_bot.config import Settings
from upstox_bot.db import migrate
from upstox_bot.db.session import make_engine, make_session_factory, session_scope
from upstox_bot.domain import IST
from upstox_bot.money import format_rupees
from upstox_bot.upstox.doctor import Check, Verdict, run_checks
from upstox_bot.upstox.universe import refresh_universe

BACKEND = Path(__file__).resolve().parents[2]
SAMPLE = Path(str(resources.files("upstox_bot.data").joinpath("upstox_instruments_sample.json.gz")))

sim = pytest.fixture(upstox_simulator)


def env_for(tmp_path: Path, upstox: UpstoxSimulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTOX_", "DATABASE_"))}
    env.update(
        DATA_DIR=str(tmp_path / "var"),
        UPSTOX_API_BASE_URL=upstox.base_url,
        PYTHONPATH=str(BACKEND / "src"),
        LOG_LEVEL="WARNING",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def doctor(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "doctor"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sessions_for(tmp_path: Path) -> sessionmaker[Session]:
    (tmp_path / "var").mkdir(exist_ok=True)
    url = f"sqlite:///{tmp_path / 'var' / 'upstox_bot.sqlite'}"
    migrate.upgrade(url)
    return make_session_factory(make_engine(url))


async def refreshed(tmp_path: Path, upstox: UpstoxSimulator) -> sessionmaker[Session]:
    sessions = sessions_for(tmp_path)
    with session_scope(sessions) as session:
        await refresh_universe(
            session,
            Settings(_env_file=None, UPSTOX_API_BASE_URL=upstox.base_url),
            source=SAMPLE,
        )
    return sessions


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_everything_in_order_checks_ok(tmp_path: Path, sim: UpstoxSimulator) -> None:
    sessions = await refreshed(tmp_path, sim)
    settings = Settings(
        _env_file=None,
        UPSTOX_API_BASE_URL=sim.base_url,
        UPSTOX_ACCESS_TOKEN=sim.rest.issue_token(),
    )

    checks = by_name(await run_checks(settings, sessions))

    assert [c.name for c in checks.values()] == [
        "token",
        "profile",
        "funds",
        "market status",
        "feed authorize",
        "clock",
        "instruments",
        "live switches",
        "paper history",
    ]
    assert not any(c.blocks for c in checks.values())
    assert checks["profile"].verdict is Verdict.OK
    assert "SIM123" in checks["profile"].detail
    assert format_rupees(10_000_000) in checks["funds"].detail  # Rs 1,00,000.00
    assert checks["feed authorize"].verdict is Verdict.OK
    assert checks["clock"].verdict is Verdict.OK  # the simulator runs on this machine's clock
    assert checks["instruments"].verdict is Verdict.OK
    assert "paper trading" in checks["live switches"].detail


async def test_a_revoked_token_blocks_and_says_to_log_in(
    tmp_path: Path, sim: UpstoxSimulator
) -> None:
    sessions = await refreshed(tmp_path, sim)
    token = sim.rest.issue_token()
    sim.revoke_tokens()
    settings = Settings(_env_file=None, UPSTOX_API_BASE_URL=sim.base_url, UPSTOX_ACCESS_TOKEN=token)

    checks = by_name(await run_checks(settings, sessions))

    for name in ("profile", "feed authorize"):
        assert checks[name].verdict is Verdict.FAIL
        assert checks[name].blocks
        assert "log in" in checks[name].fix


async def test_live_without_paper_history_or_protection_blocks(
    tmp_path: Path, sim: UpstoxSimulator
) -> None:
    sessions = await refreshed(tmp_path, sim)
    settings = Settings(
        _env_file=None,
        UPSTOX_API_BASE_URL=sim.base_url,
        UPSTOX_ACCESS_TOKEN=sim.rest.issue_token(),
        MARKET="upstox",
        PAPER_TRADING=False,
        LIVE_TRADING_ENABLED=True,
        MARKET_PROTECTION=0,
    )

    checks = by_name(await run_checks(settings, sessions))

    assert checks["paper history"].blocks
    assert "0 of 14 days" in checks["paper history"].detail
    assert "--force-live" in checks["paper history"].fix
    assert checks["live switches"].blocks
    assert "MARKET_PROTECTION" in checks["live switches"].fix


async def test_stale_instruments_warn(tmp_path: Path, sim: UpstoxSimulator) -> None:
    sessions = await refreshed(tmp_path, sim)
    settings = Settings(
        _env_file=None, UPSTOX_API_BASE_URL=sim.base_url, UPSTOX_ACCESS_TOKEN=sim.rest.issue_token()
    )
    tomorrow = datetime.now(IST).date() + timedelta(days=1)
    after_the_new_files = datetime.combine(tomorrow, time(6, 30), tzinfo=IST)

    checks = by_name(await run_checks(settings, sessions, now=after_the_new_files))

    assert checks["instruments"].verdict is Verdict.WARN
    assert "before today's files" in checks["instruments"].detail


def test_the_command_prints_the_checklist_and_exits_1_when_something_blocks(
    tmp_path: Path, sim: UpstoxSimulator
) -> None:
    env = env_for(
        tmp_path,
        sim,
        UPSTOX_ACCESS_TOKEN=sim.rest.issue_token(),
        TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(),
    )

    missing_universe = doctor(tmp_path, env)

    assert missing_universe.returncode == 1, missing_universe.stdout + missing_universe.stderr
    assert "instruments" in missing_universe.stdout
    assert "universe refresh" in missing_universe.stdout
    assert "not ready to trade" in missing_universe.stdout

    refresh = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", "universe", "refresh", "--file", str(SAMPLE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refresh.returncode == 0, refresh.stderr
    ready = doctor(tmp_path, env)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "ready to trade" in ready.stdout
