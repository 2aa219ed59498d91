"""`upstox-bot run` starts with a stored override that no longer builds (what a NaN parameter
used to leave behind): it trades on the defaults, and says so in the audit log."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from upstox_bot.db import migrate
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.settings_overrides import SettingsOverrideRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_run_starts_and_exits_0_with_a_corrupt_stored_override(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'upstox_bot.sqlite').as_posix()}"
    migrate.upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        SettingsOverrideRepository(session).set(
            "STRATEGY_PARAMS", {"rsi_oversold": None}, updated_by="apikey:x#1", at=datetime.now(UTC)
        )
    env = {**os.environ, "DATA_DIR": str(tmp_path), "LOG_FORMAT": "json"}
    env.pop("DATABASE_URL", None)
    args = ["run", "--speed", "100000", "--duration", "60", "--seed", "1", "--date", "2026-11-25"]
    run = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", *args, "--no-api", "--no-live"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "settings.override_skipped" in run.stderr
    with session_scope(sessions) as session:
        (skipped,) = AuditRepository(session).find(event="setting.override_skipped")
    engine.dispose()
    assert skipped.entity_id == "STRATEGY_PARAMS"
    assert "rsi_oversold" in str(skipped.data["reason"])
