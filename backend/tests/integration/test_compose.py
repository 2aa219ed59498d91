"""docker-compose.yml is valid for a Docker client (`docker compose config`), where one exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_file_validates_with_the_example_env(tmp_path: Path) -> None:
    compose = _compose()
    if compose is None:
        pytest.skip("no Docker Compose client on this machine")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [*compose, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = result.stdout
    for service in ("postgres:", "redis:", "api:", "beat:"):
        assert service in rendered
    assert "healthcheck:" in rendered
