"""Thousands of junk requests over every operation of the API: never a server error, and every
refusal in the one error body.

The junk is what an abuse run sends: wrong types, NaN and Infinity written into the JSON, numbers
too large to be finite, lone surrogates (escaped and as raw bytes), NUL and other control
characters, 10,000-character strings, extreme and malformed dates, deep nesting, bodies that
are not JSON or not UTF-8, unknown fields, and bodies over the size limit. Each operation is
called with a trade key, so the junk reaches the validation and the routes behind it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.api.conftest import Keys, bot_settings, make_keys
from upstox_bot.api.app import create_app

pytestmark = pytest.mark.slow

EXAMPLES = 2500  # requests: about a minute on a busy machine
MAX_BODY = 65_536  # the app's API_MAX_BODY_BYTES in this test (small, so bodies go over it)
MAX_QUERY = 32_768  # longer query strings are refused by the test client itself

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x02\x1f\x7f",
    "\t\n\r",
    "x" * 10_000,
    "é" * 3000,
    "../../etc/passwd",
    "%00",
    "'; DROP TABLE orders; --",
    "<script>alert(1)</script>",
    "NSE_EQ|INE002A01018",
    "SBIN",
    "ema_rsi",
    "\u202e\ufeff\u200b",
    "𝕳𝖊𝖑𝖑𝖔",
    "a" * 256 + "/" + "b" * 300 + ".csv",
]
NASTY_TIMES = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01",
    "9999-12-31",
    "0",
    "-1",
    "1e400",
    "2026-13-45",
    "2026-02-30T25:61:61Z",
    "2026-11-25T09:15:00+24:00",
    "2026-11-25T09:15:00.123456789Z",
    "20261125",
    "now",
]
NUMBERS = [0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324, 0.1, 1.5]
# Raw JSON tokens that json.dumps will not write: spliced into bodies as text.
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000, '"\\ud800"']

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NASTY_TEXT),
    st.sampled_from(NASTY_TIMES),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
path_values = st.one_of(
    st.sampled_from(NASTY_TEXT + NASTY_TIMES),
    st.text(min_size=1, max_size=30),
    st.integers().map(str),
)


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, operation))
    return found


@st.composite
def bodies(draw: st.DrawFn, operation: dict[str, Any], app: Any) -> tuple[bytes, str]:
    """A request body and its content type: valid-looking JSON with junk in its fields, raw
    junk JSON, text that is not JSON, bytes that are not UTF-8, or too many bytes."""
    fields: list[str] = []
    ref = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
        .get("$ref")
    )
    if ref:
        schema = app.openapi()["components"]["schemas"][ref.rsplit("/", 1)[1]]
        fields = sorted(schema.get("properties", {}))
    kind = draw(st.sampled_from(["fields", "fields", "raw", "not_json", "not_utf8", "huge"]))
    if kind == "fields":
        body: dict[str, Any] = {}
        for name in fields:
            if draw(st.booleans()):
                body[name] = draw(values)
        body.update(draw(st.dictionaries(st.text(max_size=8), values, max_size=2)))
        text = json.dumps(body)  # ensure_ascii: lone surrogates become \\udXXX escapes
        splice = draw(st.booleans())
        if fields and splice:  # NaN, Infinity, huge numbers in a field
            name = draw(st.sampled_from(fields))
            text = text.rstrip("}") + (", " if body else "") + f'"{name}": '
            text += draw(st.sampled_from(RAW_TOKENS)) + "}"
        return text.encode(), "application/json"
    if kind == "raw":
        token = draw(st.sampled_from(RAW_TOKENS))
        depth = draw(st.sampled_from([1, 2, 100, 5000]))
        return ("[" * depth + token + "]" * depth).encode(), "application/json"
    if kind == "not_json":
        return draw(st.text(max_size=200)).encode(), draw(
            st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"])
        )
    if kind == "not_utf8":
        raw = b'{"reason": "\xed\xa0\x80", "active": true}'  # an encoded lone surrogate
        return draw(st.sampled_from([raw, b"\xff\xfe\x00{", b'{"a": "\xc3"}'])), "application/json"
    return b'{"pad": "' + b"x" * (MAX_BODY + 1) + b'"}', "application/json"


@pytest.fixture(scope="module")
def junk_client(
    played_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Keys]]:
    data_dir = tmp_path_factory.mktemp("junk")
    for path in played_dir.iterdir():
        shutil.copy(path, data_dir / path.name)
    settings_ = bot_settings(
        data_dir,
        UPSTOX_API_BASE_URL="http://127.0.0.1:9",  # Upstox: a closed local port, fails fast
        API_MAX_BODY_BYTES=MAX_BODY,
        API_AUTH_FAILURE_LIMIT=1_000_000,  # junk keys must not turn the run into 429s
    )
    keys = make_keys(settings_)
    with TestClient(create_app(settings_), headers={"X-API-Key": keys.trade}) as client:
        yield client, keys


def _check(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str), f"{what}: {body}"
        assert isinstance(body.get("detail"), str), f"{what}: {body}"
        if response.status_code == 422:
            assert body["errors"], f"{what}: {body}"


@pytest.mark.usefixtures("universe_from_sample")
def test_junk_requests_over_every_operation_never_get_a_server_error(
    junk_client: tuple[TestClient, Keys],
) -> None:
    client, keys = junk_client
    app = client.app
    operations = _operations(app)
    assert len(operations) >= 45
    statuses: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one_request(data: st.DataObject) -> None:
        method, template, operation = data.draw(st.sampled_from(operations), "operation")
        path = template
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                value = data.draw(path_values, parameter["name"])
                path = path.replace("{" + parameter["name"] + "}", quote(value, safe=""))
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        query = {
            name: data.draw(st.one_of(path_values, values.map(json.dumps)), name)
            for name in names
            if data.draw(st.booleans())
        }
        while len(urlencode(query)) > MAX_QUERY and query:  # what an HTTP client will send
            query.pop(next(iter(query)))
        headers: dict[str, str] = {}
        content: bytes | None = None
        if operation.get("requestBody") or data.draw(st.integers(0, 9)) == 0:
            content, headers["Content-Type"] = data.draw(bodies(operation, app), "body")
        key = data.draw(st.sampled_from([keys.trade, keys.trade, keys.read, "", "ubk_nope"]))
        headers["X-API-Key"] = key
        response = client.request(method, path, params=query, content=content, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        _check(response, f"{method} {path} {query!r:.300} {content!r:.300}")

    one_request()
    print(f"junk: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")  # noqa: T201
    assert sum(statuses.values()) == EXAMPLES
    # The junk reached the routes: refusals of each kind, and some requests that succeeded.
    assert {401, 403, 413, 422} <= set(statuses), statuses
    assert any(200 <= status < 300 for status in statuses), statuses
