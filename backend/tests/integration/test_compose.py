"""docker-compose.yml is valid for a Docker client (`docker compose config`), where one exists."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _config(tmp_path: Path, **env: str) -> dict[str, Any]:
    compose = _compose()
    if compose is None:
        pytest.skip("no Docker Compose client on this machine")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [*compose, "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("API_")}, **env},
    )
    assert result.returncode == 0, result.stderr
    rendered: dict[str, Any] = yaml.safe_load(result.stdout)
    return rendered


def _published(port: str | dict[str, Any]) -> tuple[str, str, str]:
    """(host address, host port, container port) of a port, in either Compose's rendering."""
    if isinstance(port, dict):  # Compose v2: the long form
        return str(port.get("host_ip", "")), str(port["published"]), str(port["target"])
    host_ip, published, target = port.split("/")[0].rsplit(":", 2)  # v1: "ip:port:port/tcp"
    return host_ip, published, target


def test_compose_file_validates_with_the_example_env(tmp_path: Path) -> None:
    rendered = _config(tmp_path)
    assert {"postgres", "redis", "api", "beat"} <= set(rendered["services"])
    assert "healthcheck" in rendered["services"]["api"]


def test_compose_publishes_the_api_on_loopback_only_unless_told(tmp_path: Path) -> None:
    services = _config(tmp_path)["services"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert [name for name, _ in published] == ["api"]  # PostgreSQL and Redis stay inside
    assert [_published(port) for _, port in published] == [("127.0.0.1", "8000", "8000")]
    (port,) = _config(tmp_path, API_BIND="0.0.0.0")["services"]["api"]["ports"]  # noqa: S104
    assert _published(port)[0] == "0.0.0.0"  # noqa: S104
