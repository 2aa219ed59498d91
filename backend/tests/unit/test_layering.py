"""The core is plain Python: it imports no framework, no database and no settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "upstox_bot"
CORE = [
    "domain.py",
    "errors.py",
    "money.py",
    "clock.py",
    "feed/candles.py",
    "feed/sim.py",
    "signals",
    "risk",
    "trading",
    "options",
]
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
)


def _core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        path = PACKAGE / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_no_framework(path: Path) -> None:
    bad = sorted(
        n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)
    )
    assert bad == [], f"{path.name} imports {bad}: keep adapters out of the core"


def test_the_core_list_covers_real_files() -> None:
    assert len(_core_files()) >= 20
