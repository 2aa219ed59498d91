"""A new trader's first minutes: the README's commands on a fresh machine, and every start-up
failure as one line that names the cause and the fix (exit code 2, no traceback)."""

from __future__ import annotations

import os
import shlex
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from upstox_bot.diagnose import StartupError, check_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

README = Path(__file__).resolve().parents[3] / "README.md"
CLI = [sys.executable, "-m", "upstox_bot.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "DATA_DIR", "STRATEGY", "CORS", "API_"))
    }
    env.update(LOG_LEVEL="WARNING", **values)
    return env


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, not wrapped at 80 columns in a pipe
    assert lines[0].startswith("error: ")
    return lines[0]


# --- the README, as written ---------------------------------------------------------------------


def _readme_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("## Running it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith(".venv/bin/upstox-bot ") and "&&" not in command:
            commands.append(shlex.split(command)[1:])
    return commands


def test_the_readme_commands_work_on_a_fresh_data_folder(tmp_path: Path) -> None:
    commands = _readme_commands()
    sample = next(c for c in commands if c[:2] == ["data", "sample"])
    backtests = [c for c in commands if c[0] == "backtest"]
    session = next(c for c in commands if c[0] == "run" and "--duration" in c)
    assert backtests, "the README shows a backtest"
    assert any("--report" in c for c in backtests)
    assert any("--grid" in c for c in backtests)

    made = cli(sample, tmp_path)
    assert made.returncode == 0, made.stderr
    assert "simulated market" in made.stdout
    assert "not real prices" in made.stdout
    for command in backtests:
        result = cli(command, tmp_path)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert "₹" in result.stdout
    assert (tmp_path / "out.html").read_text(encoding="utf-8").startswith("<!doctype html>")

    # The one-session run, shortened; the API on a free port, no live block (not a terminal).
    short = [*session]
    short[short.index("--duration") + 1] = "20"
    result = cli([*short, "--port", str(_free_port()), "--no-live"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "first start: created the trade-scope API key 'local'" in result.stdout
    assert "session " in result.stdout  # the end-of-session summary
    assert (tmp_path / "var" / "upstox_bot.sqlite").is_file()

    # The replay of the sample bars, at full speed for a short while.
    replay = next(c for c in commands if "--market" in c and "replay" in c)
    result = cli([*replay, "--speed", "100000", "--duration", "30", "--no-api"], tmp_path)
    assert result.returncode == 0, result.stderr


# --- a busy port ------------------------------------------------------------------------------


def test_a_busy_port_is_one_line_before_anything_and_the_first_key_is_kept(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(["run", "--port", str(port), "--no-live", "--duration", "5"], tmp_path)
    line = _one_line_error(result)
    assert f"port {port}" in line
    assert "--port" in line
    assert result.stdout == ""  # nothing before it: no key printed and then lost
    # The key is created by the first start that can serve, and shown then.
    ok = cli(["run", "--port", str(_free_port()), "--no-live", "--duration", "5"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "created the trade-scope API key 'local'" in ok.stdout


# --- start-up failures ----------------------------------------------------------------------------

RUN = ["run", "--no-api", "--no-live", "--duration", "1", "--speed", "100000"]


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DATABASE_URL": "not a url"}, ("DATABASE_URL", "postgresql+psycopg://")),
        ({"DATABASE_URL": "mongodb://127.0.0.1/bot"}, ("DATABASE_URL", "unknown database kind")),
        (
            {"DATABASE_URL": "postgresql+psycopg://bot:secret@127.0.0.1:1/bot"},
            ("cannot use the database at", "check that the server runs"),
        ),
        ({"STRATEGY_PARAMS": "{fast: 9}"}, ("STRATEGY_PARAMS", "not valid JSON", '{"fast": 9')),
        ({"CORS_ORIGINS": "[http://x]"}, ("CORS_ORIGINS", "not valid JSON", '["http')),
    ],
    ids=["malformed-url", "unknown-database", "unreachable-database", "params-json", "cors-json"],
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, env: dict[str, str], words: tuple[str, ...]
) -> None:
    line = _one_line_error(cli(RUN, tmp_path, **env))
    for word in words:
        assert word in line, line
    assert "secret" not in line  # a password never shows


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("not a folder")
    line = _one_line_error(cli(RUN, tmp_path, DATA_DIR="var"))
    assert "DATA_DIR var is not a folder" in line


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this user cannot write: a chmod'ed one, or, for root (who writes anywhere on a
    normal file system), a folder of the read-only kernel file system."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        check_data_dir(folder)
    except StartupError:
        return folder
    folder.chmod(0o700)
    sysfs = Path("/sys/kernel")
    try:
        check_data_dir(sysfs)
    except StartupError:
        return sysfs
    pytest.skip("no folder here that this user cannot write")


def test_a_read_only_data_dir_is_refused_by_name(tmp_path: Path) -> None:
    folder = _read_only_folder(tmp_path)
    try:
        line = _one_line_error(cli(RUN, tmp_path, DATA_DIR=str(folder)))
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o700)
    assert f"DATA_DIR {folder} is not writable" in line
    assert "write access" in line


def test_a_damaged_database_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "upstox_bot.sqlite").write_bytes(b"this is not a database" * 100)
    line = _one_line_error(cli(RUN, tmp_path))
    assert "not a readable SQLite database" in line
    assert "move it away" in line


def test_a_locked_database_file_is_one_line(tmp_path: Path) -> None:
    assert cli(["db", "upgrade"], tmp_path).returncode == 0
    holder = sqlite3.connect(tmp_path / "var" / "upstox_bot.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another program writing and never letting go
        line = _one_line_error(cli(RUN, tmp_path))
    finally:
        holder.close()
    assert "is locked by another program" in line


def test_debug_prints_the_traceback(tmp_path: Path) -> None:
    result = cli(["--debug", *RUN], tmp_path, DATABASE_URL="not a url")
    assert result.returncode != 0
    assert "Traceback" in result.stderr or "ArgumentError" in result.stderr
