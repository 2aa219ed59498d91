"""A stored setting override that no longer builds never stops a start: it is skipped, the rest
apply, and the skip is audited and alerted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.unit.api.conftest import bot_settings, play
from upstox_bot.db import migrate
from upstox_bot.db.repositories.audit import AuditRepository
from upstox_bot.db.repositories.settings_overrides import (
    SettingsOverrideRepository,
    apply_overrides,
)
from upstox_bot.db.session import make_engine, make_session_factory, session_scope


def _store(data_dir: Path, overrides: dict[str, Any]) -> None:
    settings = bot_settings(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        repo = SettingsOverrideRepository(session)
        for key, value in overrides.items():
            repo.set(key, value, updated_by="apikey:old#1", at=datetime.now(UTC))
    engine.dispose()


def test_a_corrupt_override_does_not_stop_the_bot_starting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "bot"
    # What the NaN bug stored (a null parameter), a value that no longer validates, a strategy
    # that no longer exists beside a good one.
    _store(
        data_dir,
        {
            "STRATEGY_PARAMS": {"rsi_oversold": None},
            "MAX_OPEN_POSITIONS": "many",
            "SIGNAL_COOLDOWN_MINUTES": 7,
            "DATABASE_URL": "sqlite:///elsewhere.sqlite",
        },
    )
    caplog.set_level(logging.INFO, logger="upstox_bot")

    bot = play(data_dir)  # starts, plays two simulated hours

    assert bot.engine.strategy.params["rsi_oversold"] == 30  # the default
    assert bot.settings.MAX_OPEN_POSITIONS == 3
    assert bot.settings.SIGNAL_COOLDOWN_MINUTES == 7  # the good override still applies
    assert bot.stats.ticks > 0
    with session_scope(bot.sessions) as session:
        skipped = AuditRepository(session).find(event="setting.override_skipped")
    by_key = {record.entity_id: record for record in skipped}
    assert set(by_key) == {"STRATEGY_PARAMS", "MAX_OPEN_POSITIONS", "DATABASE_URL"}
    assert "rsi_oversold" in str(by_key["STRATEGY_PARAMS"].data["reason"])
    assert by_key["STRATEGY_PARAMS"].data["value"] == {"rsi_oversold": None}
    queued = [r for r in caplog.records if r.getMessage() == "alert.queued"]
    alerted = {
        getattr(r, "key", None) for r in queued if getattr(r, "kind", None) == "setting_skipped"
    }
    assert alerted == set(by_key)
    bot.db_engine.dispose()


def test_a_strategy_whose_parameters_no_longer_build_falls_back_to_its_defaults(
    tmp_path: Path,
) -> None:
    base = bot_settings(tmp_path)
    settings, skipped = apply_overrides(
        base, {"STRATEGY": "sma_crossover", "STRATEGY_PARAMS": {"rsi_oversold": 25}}
    )
    assert settings.STRATEGY == "sma_crossover"
    assert settings.STRATEGY_PARAMS == {}
    assert [s.key for s in skipped] == ["STRATEGY_PARAMS"]
    gone, skipped = apply_overrides(base, {"STRATEGY": "deleted_strategy"})
    assert gone.STRATEGY == base.STRATEGY
    assert [s.key for s in skipped] == ["STRATEGY"]
    assert "unknown strategy" in skipped[0].reason
    same, skipped = apply_overrides(base, {"STRATEGY_PARAMS": {"fast": 5}})
    assert (same.STRATEGY_PARAMS, skipped) == ({"fast": 5}, [])
