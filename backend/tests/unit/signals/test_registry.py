"""The registry: built-ins by name, and a trader's folder where a bad file spoils nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from upstox_bot.config import Settings
from upstox_bot.errors import ConfigError
from upstox_bot.runtime import components
from upstox_bot.signals import registry
from upstox_bot.signals.base import Strategy

GOOD = '''
from upstox_bot.signals.base import Param, Strategy, StrategySignal
from upstox_bot.domain import SignalType


class BaseOfMine(Strategy):
    """Abstract helper: no name, no evaluate; not a strategy itself."""


class AlwaysLong(Strategy):
    name = "always_long"
    parameters = (Param(name="every", kind=int, default=3, minimum=1),)

    @property
    def startup_candles(self):
        return 1

    def evaluate(self, candles, *, position, now):
        if len(candles) % self.params["every"]:
            return ()
        return [StrategySignal(type=SignalType.ENTRY_LONG, strength=1.0, reason="every n")]
'''

BAD_FILES = {
    "broken_syntax.py": "def oops(:\n",
    "bad_import.py": "import module_that_does_not_exist\n",
    "no_strategy.py": "VALUE = 1\n",
    "steals_a_name.py": GOOD.replace('"always_long"', '"ema_rsi"'),
    "zz_duplicate.py": GOOD,
    "bad_name.py": GOOD.replace('"always_long"', '"Always Long"'),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "mine.py").write_text(GOOD)
    for name, text in BAD_FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "_helpers.py").write_text("raise RuntimeError('never imported')\n")
    (tmp_path / "notes.txt").write_text("not python")
    return tmp_path


def test_every_builtin_is_available_and_builds_with_defaults() -> None:
    names = set(registry.available())
    assert names == {"ema_rsi", "sma_crossover", "orb", "vwap_volume", "supertrend"}
    for name in names:
        strategy = registry.create(name)
        assert strategy.name == name
        assert strategy.startup_candles >= 2
        described = strategy.describe()
        assert described["name"] == name
        assert all(p["value"] == p["default"] for p in described["parameters"])


def test_create_applies_and_checks_parameters() -> None:
    strategy = registry.create("supertrend", {"period": "14", "multiplier": 2.5})
    assert strategy.params == {"period": 14, "multiplier": 2.5}
    with pytest.raises(ConfigError, match="multiplier"):
        registry.create("supertrend", {"multiplier": 50})
    with pytest.raises(ConfigError, match="unknown parameter"):
        registry.create("orb", {"range": 15})


def test_unknown_name_lists_what_is_available() -> None:
    with pytest.raises(ConfigError, match=r"unknown strategy 'nope'.*sma_crossover"):
        registry.create("nope")


def test_folder_loads_good_files_and_reports_each_bad_one_by_name(folder: Path) -> None:
    loaded = registry.load_folder(folder)
    assert set(loaded.strategies) == {"always_long"}
    messages = [str(e) for e in loaded.errors]
    assert len(messages) == len(BAD_FILES)
    for name in BAD_FILES:
        assert sum(name in m for m in messages) == 1, name
    by_file = {name: next(m for m in messages if name in m) for name in BAD_FILES}
    assert "SyntaxError" in by_file["broken_syntax.py"]
    assert "line 1" in by_file["broken_syntax.py"]
    assert "ModuleNotFoundError" in by_file["bad_import.py"]
    assert "no concrete Strategy" in by_file["no_strategy.py"]
    assert "'ema_rsi' is already taken" in by_file["steals_a_name.py"]
    assert "'always_long' is already taken" in by_file["zz_duplicate.py"]
    assert "lowercase" in by_file["bad_name.py"]


def test_a_folder_strategy_builds_and_runs_despite_broken_neighbours(folder: Path) -> None:
    assert "always_long" in registry.available(folder)
    assert "ema_rsi" in registry.available(folder)
    strategy = registry.create("always_long", {"every": 2}, strategies_dir=folder)
    assert isinstance(strategy, Strategy)
    assert strategy.params == {"every": 2}


def test_unknown_name_with_a_folder_names_the_files_that_failed(folder: Path) -> None:
    with pytest.raises(ConfigError) as info:
        registry.create("from_broken_file", strategies_dir=folder)
    message = str(info.value)
    assert "always_long" in message
    assert "broken_syntax.py" in message


def test_builtin_names_do_not_need_the_folder_to_load(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def oops(:\n")
    assert registry.create("orb", strategies_dir=tmp_path).name == "orb"


def test_a_folder_that_is_not_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        registry.available(tmp_path / "missing")


def test_settings_pick_a_folder_strategy(folder: Path) -> None:
    settings = Settings(
        _env_file=None,
        STRATEGY="always_long",
        STRATEGY_PARAMS={"every": 4},
        STRATEGIES_DIR=folder,
    )
    strategy = components.strategy(settings)
    assert (strategy.name, strategy.params) == ("always_long", {"every": 4})
