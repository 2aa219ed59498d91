"""The limits of the served API, over raw sockets: body size, body and header read times, and a
revoked key's live stream.

The body limit must hold before the body is read: a client that announces 10 MB and sends
none of it gets its 413 at once, and a chunked body is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.unit.api.conftest import Keys, bot_settings, make_keys
from tests.unit.api.served import serve
from upstox_bot.api.app import create_app
from upstox_bot.config import Settings
from upstox_bot.db.repositories.api_keys import ApiKeyRepository
from upstox_bot.db.session import make_engine, make_session_factory, session_scope

TEN_MB = 10 * 1024 * 1024
READ_TIMEOUT_S = 60.0  # how long the test waits for an answer (a bound, never a pace)


@pytest.fixture
def limited(played_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Keys]]:
    for path in played_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    settings = bot_settings(tmp_path, API_HEADER_TIMEOUT_SECONDS=0.5, API_BODY_TIMEOUT_SECONDS=0.5)
    keys = make_keys(settings)
    with serve(settings) as base_url:
        yield base_url.split("//")[1], keys


def _connect(address: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=READ_TIMEOUT_S)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Read one HTTP response to its end (the server closes these connections)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def test_a_10_mb_body_is_refused_before_a_byte_of_it_is_read(
    limited: tuple[str, Keys],
) -> None:
    address, keys = limited
    for key in (keys.trade, keys.read, "ubk_nope", None):
        sock = _connect(address)
        auth = f"X-API-Key: {key}\r\n" if key else ""
        # The headers only: the body never comes, and the answer must not wait for it.
        sock.sendall(
            (
                "POST /api/v1/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"{auth}Content-Length: {TEN_MB}\r\n\r\n"
            ).encode()
        )
        status, headers, body = _response(sock)
        sock.close()
        assert status == 413, body
        assert body["error"] == "too_large"
        assert "1048576 bytes" in body["detail"]
        assert headers["connection"] == "close"


def test_a_chunked_body_is_cut_off_at_the_limit(limited: tuple[str, Keys]) -> None:
    address, keys = limited
    sock = _connect(address)
    sock.sendall(
        (
            "PATCH /api/v1/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {keys.trade}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    chunk = b"x" * 65536
    sent = 0
    # Send until the server answers (it must, once the limit is passed); read its answer
    # before sending more, or its close would reset the connection under the answer.
    while not select.select([sock], [], [], 0)[0]:
        assert sent <= 2 * 1_048_576, "no answer a whole megabyte past the limit"
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        sent += len(chunk)
        if sent > 1_048_576:
            select.select([sock], [], [], READ_TIMEOUT_S)
    status, _headers, body = _response(sock)
    sock.close()
    assert status == 413, body
    assert sent <= 2 * 1_048_576


def test_a_body_slower_than_the_read_timeout_answers_408(limited: tuple[str, Keys]) -> None:
    address, keys = limited
    sock = _connect(address)
    sock.sendall(
        (
            "PATCH /api/v1/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-API-Key: {keys.trade}\r\nContent-Length: 100\r\n\r\n"
            '{"changes": '
        ).encode()
    )  # ... and the rest never comes
    status, _headers, body = _response(sock)
    sock.close()
    assert status == 408, body
    assert body["error"] == "request_timeout"


def test_headers_slower_than_the_header_timeout_close_the_connection(
    limited: tuple[str, Keys],
) -> None:
    address, _keys = limited
    stalled = _connect(address)
    stalled.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: never finished
    status, _headers, body = _response(stalled)
    stalled.close()
    assert status == 408
    assert body["error"] == "request_timeout"
    silent = _connect(address)  # connects and says nothing at all
    assert silent.recv(65536).startswith(b"HTTP/1.1 408")
    assert silent.recv(65536) == b""  # closed
    silent.close()
    # A well-behaved client on a kept-alive connection is not hurried.
    ok = _connect(address)
    ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _response(ok)[0] == 200
    ok.close()


# --- a revoked key's live stream -------------------------------------------------------------


def _read_until_closed(ws: Any) -> None:
    while True:  # events may still arrive until the revocation check comes round
        ws.receive_json()


def test_a_revoked_keys_stream_is_closed(settings: Settings, keys: Keys) -> None:
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as session:
        record, key = ApiKeyRepository(session).create(
            "dashboard", ApiKeyRepository(session).find()[0].scope, datetime.now(UTC)
        )
    with TestClient(create_app(settings)) as client:
        with (
            client.websocket_connect("/api/v1/ws") as doomed,
            client.websocket_connect("/api/v1/ws", headers={"X-API-Key": keys.read}) as other,
        ):
            doomed.send_json({"action": "auth", "key": key})
            assert doomed.receive_json()["type"] == "authenticated"
            doomed.send_json({"action": "ping"})
            assert doomed.receive_json() == {"type": "pong"}
            with session_scope(sessions) as session:
                ApiKeyRepository(session).revoke(record.id, datetime.now(UTC))
            revoked_at = time.monotonic()
            with pytest.raises(WebSocketDisconnect) as closed:
                _read_until_closed(doomed)
            waited = time.monotonic() - revoked_at
            assert (closed.value.code, closed.value.reason) == (1008, "this API key was revoked")
            other.send_json({"action": "ping"})  # the other key's stream goes on
            assert other.receive_json() == {"type": "pong"}
        # The REST API refuses the key at once.
        assert client.get("/api/v1/risk", headers={"X-API-Key": key}).status_code == 401
    engine.dispose()
    print(f"revoked stream closed {waited:.2f} s after the revocation")  # noqa: T201
