"""The compiled hot path: built and loaded, trading exactly as its interpreted source, and never
run stale after its source changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import upstox_bot
from upstox_bot import _native
from upstox_bot.trading import engine

BACKEND = Path(__file__).resolve().parents[2]

# A child process: a multi-symbol sma_crossover backtest with every exit and shorts on, run
# through the fast path and the full path; prints whether the engine ran compiled, and the runs.
CHILD = """
import json, sys
from dataclasses import replace
from decimal import Decimal
from upstox_bot import _native
from upstox_bot.backtest.data import Dataset
from upstox_bot.backtest.models import BacktestRequest
from upstox_bot.backtest.runner import Backtest
from upstox_bot.backtest.service import build_config
from upstox_bot.signals.strategies.sma_crossover import SmaCrossoverStrategy
from upstox_bot.trading import engine
from tests.unit.backtest.conftest import settings
from tests.unit.backtest.test_fast_path import random_series

series = tuple(random_series(f"NSE_EQ|S{i}", days=6, seed=40 + i, drop=0.05) for i in range(3))
dataset = Dataset(series=series, interval_s=60)
request = BacktestRequest(
    data="-", strategy="sma_crossover", slippage_bps=Decimal(5),
    stop_loss_pct=Decimal("0.5"), take_profit_pct=Decimal("0.8"), trailing_stop_pct=Decimal("0.3"),
)
config, _ = build_config(request, settings(ALLOW_SHORT=True, SIGNAL_COOLDOWN_MINUTES=0), dataset)
runs = []
for fast in (True, False):
    strategy = SmaCrossoverStrategy(fast=5, slow=20)
    out = Backtest(dataset, strategy, replace(config, fast_path=fast)).run()
    runs.append({
        "trades": [repr(t) for t in out.trades],
        "open": [repr(p) for p in out.open_positions],
        "equity": [repr(e) for e in out.equity],
        "exposure": out.exposure,
    })
print(json.dumps({"compiled": _native.compiled(engine), "runs": runs}))
"""


def run_child(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=BACKEND,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def built() -> bool:
    return (Path(upstox_bot.__file__).parent / "_compiled.json").exists()


def test_the_installed_build_is_current_and_loaded() -> None:
    if not built():
        pytest.skip("no build of the compiled modules in this environment")
    if os.environ.get(_native.ENV, "") not in ("", "0"):
        pytest.skip(f"{_native.ENV} is set: the sources run")
    assert upstox_bot.INTERPRETED == ()
    assert _native.compiled(engine)


@pytest.mark.slow
def test_compiled_and_interpreted_engines_trade_alike() -> None:
    compiled = run_child(**{_native.ENV: "0"})
    interpreted = run_child(**{_native.ENV: "1"})
    assert interpreted["compiled"] is False
    assert compiled["compiled"] is built()
    runs = compiled["runs"]
    assert isinstance(runs, list)
    assert runs[0]["trades"], "the run made no trades: it compares nothing"
    assert runs == interpreted["runs"]
    assert runs[0] == runs[1]  # and the fast path trades as the full path, compiled or not


def make_build(tmp_path: Path, sources: dict[str, str]) -> None:
    package = tmp_path / "upstox_bot"
    package.mkdir()
    recorded = {}
    for name, text in sources.items():
        (package / f"{name}.py").write_text(text)
        recorded[f"upstox_bot.{name}"] = hashlib.sha256(text.encode()).hexdigest()
    (package / "_compiled.json").write_text(json.dumps(recorded))


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_build(tmp_path, {"alpha": "A = 1\n", "beta": "B = 2\n"})
    monkeypatch.setattr(_native, "_ROOT", tmp_path / "upstox_bot")
    monkeypatch.setattr(_native, "_MANIFEST", tmp_path / "upstox_bot" / "_compiled.json")
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not _is_source(f)])
    monkeypatch.delenv(_native.ENV, raising=False)
    return tmp_path / "upstox_bot"


def _is_source(finder: object) -> bool:
    return isinstance(finder, _native._SourceFinder)


def test_a_current_build_runs_compiled(fake_build: Path) -> None:
    assert _native.select() == ()
    assert not any(_is_source(f) for f in sys.meta_path)


def test_a_changed_source_runs_the_whole_group_from_source_and_warns(fake_build: Path) -> None:
    (fake_build / "beta.py").write_text("B = 3\n")
    with pytest.warns(_native.StaleBuildWarning, match=r"upstox_bot\.beta changed"):
        chosen = _native.select()
    assert chosen == ("upstox_bot.alpha", "upstox_bot.beta")  # alpha too: the group is one
    finder = next(f for f in sys.meta_path if isinstance(f, _native._SourceFinder))
    spec = finder.find_spec("upstox_bot.alpha")
    assert spec is not None
    assert spec.origin == str(fake_build / "alpha.py")
    assert finder.find_spec("upstox_bot.gamma") is None


def test_the_environment_forces_the_sources_without_a_warning(
    fake_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_native.ENV, "1")
    assert _native.select() == ("upstox_bot.alpha", "upstox_bot.beta")
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not _is_source(f)])
    monkeypatch.setenv(_native.ENV, "0")
    assert _native.select() == ()


def test_no_build_means_nothing_to_choose(fake_build: Path) -> None:
    (fake_build / "_compiled.json").unlink()
    assert _native.select() == ()


def test_a_file_strategy_can_extend_a_compiled_built_in_one() -> None:
    from upstox_bot.signals.base import Strategy
    from upstox_bot.signals.strategies import sma_crossover

    class Slower(sma_crossover.SmaCrossoverStrategy):
        name = "slower_sma"

        @property
        def startup_candles(self) -> int:
            return super().startup_candles + 1

    strategy = Slower(fast=3, slow=5)
    assert isinstance(strategy, Strategy)
    assert strategy.params == {"fast": 3, "slow": 5}
    assert strategy.startup_candles == 7
