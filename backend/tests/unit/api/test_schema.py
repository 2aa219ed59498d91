"""Schemathesis over the served API with every check: no server error, no response off its
schema, no valid request refused, no invalid one accepted, 405 with the right Allow header.

The API runs in uvicorn with the limits it is deployed with (api/server.py); `schemathesis run`
drives it over HTTP through every phase (examples, coverage, fuzzing, stateful), positive and
negative data, with a trade key.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.api.conftest import Keys, bot_settings, make_keys
from tests.unit.api.served import serve
from upstox_bot.config import Settings

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 20  # per operation and phase: the run takes a minute or two on a busy machine
SEED = 20261125
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# Operations that check what a JSON schema cannot say answer 422 to some schema-valid bodies;
# positive_data_acceptance takes 422 from them only, for the reason given.
SEMANTIC_422 = {
    ("PATCH", "/api/v1/settings"): "settings are checked together (ENTRY_START_TIME before "
    "ENTRY_END_TIME) and the strategy must build with its parameters",
    ("PUT", "/api/v1/strategies/{name}/parameters"): "the strategy must build with them",
    ("POST", "/api/v1/signals/test"): "candles must be in time order with high >= low, and the "
    "strategy must build with its parameters",
    ("POST", "/api/v1/backtests"): "the data path must exist inside the allowed folders",
    ("POST", "/api/v1/options/greeks"): "the price must lie inside the no-arbitrage bounds",
}


def _config(path: Path) -> Path:
    lines = ["[checks]", "enabled = true", ""]
    for (method, route), reason in SEMANTIC_422.items():
        lines += [
            f"# {reason}",
            "[[operations]]",
            f'include-path = "{route}"',
            f'include-method = "{method}"',
            'checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", '
            '"409", "422", "429"]',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def fuzzed(played_dir: Path, tmp_path: Path) -> tuple[Settings, Keys]:
    for path in played_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    settings = bot_settings(
        tmp_path,
        # Any Upstox call goes to a closed local port and fails fast (no network in tests).
        UPSTOX_API_BASE_URL="http://127.0.0.1:9",
        # The ignored_auth check sends wrong keys on purpose: a limit it would reach turns the
        # rest of the run into 429s (the limiter has its own tests).
        API_AUTH_FAILURE_LIMIT=1_000_000,
    )
    return settings, make_keys(settings)


@pytest.mark.usefixtures("universe_from_sample")
def test_api_passes_every_schemathesis_check(fuzzed: tuple[Settings, Keys], tmp_path: Path) -> None:
    settings, keys = fuzzed
    with serve(settings) as base_url:
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(_config(tmp_path / "schemathesis.toml")),
                "--no-color",
                "run",
                f"{base_url}/openapi.json",
                "--checks",
                "all",
                "--mode",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--header",
                f"X-API-Key: {keys.trade}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--output-truncate",
                "false",
                "--suppress-health-check",
                "all",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
    report = result.stdout + result.stderr
    assert result.returncode == 0, textwrap.shorten(report, 60_000, placeholder=" ...")
    generated = re.search(r"(\d+) generated", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert generated is not None, report
    assert tested is not None, report
    print(f"schemathesis: {generated[1]} cases over {tested[1]} operations")  # noqa: T201
    assert int(tested[1]) >= 45  # every operation of the schema
    assert int(generated[1]) >= 2000
