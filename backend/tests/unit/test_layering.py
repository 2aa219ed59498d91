"""The core is plain Python: its packages import no framework, no database, no settings and no
adapter package. A module added to a core package is guarded without being listed here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "upstox_bot"
# The core: packages (every module in them, now and later) and the neutral top-level modules.
CORE = [
    "domain.py",
    "errors.py",
    "money.py",
    "clock.py",
    "faults.py",
    "live_events.py",
    "feed",
    "screening",
    "signals",
    "risk",
    "trading",
    "options",
    "backtest",
]
# Modules of a core package that are its adapters, each with what makes it one. Nothing else in
# a core package may import an adapter.
ADAPTERS_IN_CORE = {
    "backtest/cli.py": "the `upstox-bot backtest` commands (Typer, settings, the database)",
    "backtest/download.py": "downloads candles through the Upstox client",
    "backtest/jobs.py": "stores backtest jobs and their results in the database",
    "backtest/service.py": "builds a backtest from Settings (the composition root of a run)",
    "backtest/grid.py": "builds the runs of a grid from Settings",
}
FORBIDDEN = (
    "fastapi",
    "starlette",
    "celery",
    "kombu",
    "sqlalchemy",
    "alembic",
    "redis",
    "prometheus_client",
    "httpx",
    "uvicorn",
    "websockets",
    "pydantic",
    "typer",
    "upstox_bot.db",
    "upstox_bot.api",
    "upstox_bot.worker",
    "upstox_bot.config",
    "upstox_bot.runtime",
    "upstox_bot.upstox",
    "upstox_bot.monitoring",
    "upstox_bot.cli",
)


def _core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        path = PACKAGE / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return [f for f in files if str(f.relative_to(PACKAGE)) not in ADAPTERS_IN_CORE]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(path: Path) -> list[str]:
    return sorted(
        n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)
    )


@pytest.mark.parametrize("entry", CORE)
def test_core_package_imports_no_adapter(entry: str) -> None:
    root = PACKAGE / entry
    bad = {
        str(path.relative_to(PACKAGE)): found
        for path in _core_files()
        if (path == root or root in path.parents) and (found := _forbidden(path))
    }
    assert bad == {}, f"{entry} imports adapters {bad}: keep them out of the core"


def test_the_core_covers_real_files() -> None:
    assert len(_core_files()) >= 60
    for module in ADAPTERS_IN_CORE:
        assert (PACKAGE / module).is_file(), f"{module} is listed as an adapter but is gone"
