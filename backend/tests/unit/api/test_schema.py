"""Schemathesis over the app's OpenAPI schema: no server error, no response off its schema."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.unit.api.conftest import Keys, bot_settings, make_keys
from upstox_bot.api.app import create_app
from upstox_bot.config import Settings

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 8  # per operation: the whole run stays well under a minute


def _refresh_from_the_shipped_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    # The universe refresh reads the shipped instrument master instead of downloading it.
    from upstox_bot.screening import universe

    real = universe.refresh_universe
    sample = Path(universe.__file__).parents[1] / "data" / "upstox_instruments_sample.json.gz"

    async def from_sample(session: Any, settings: Any) -> Any:
        return await real(session, settings, source=sample)

    monkeypatch.setattr(universe, "refresh_universe", from_sample)


@pytest.fixture(scope="module")
def fuzzed(played_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Keys]:
    data_dir = tmp_path_factory.mktemp("fuzzed")
    for path in played_dir.iterdir():
        shutil.copy(path, data_dir / path.name)
    # Any Upstox call goes to a closed local port and fails fast (no network in tests).
    settings = bot_settings(data_dir, UPSTOX_API_BASE_URL="http://127.0.0.1:9")
    return settings, make_keys(settings)


def test_api_conforms_to_its_schema(
    fuzzed: tuple[Settings, Keys], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_, keys = fuzzed
    _refresh_from_the_shipped_sample(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        api = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_))
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers={"X-API-Key": keys.trade}, checks=checks)

        try:
            exercise()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)
