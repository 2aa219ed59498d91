"""The API served by uvicorn in a thread, with the limits it is deployed with (api/server.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests.support.waiting import wait_until
from upstox_bot.api.app import create_app
from upstox_bot.api.server import uvicorn_options
from upstox_bot.config import Settings

STARTUP_TIMEOUT_S = 60.0  # generous: the machine may be busy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(settings: Settings, app: FastAPI | None = None) -> Iterator[str]:
    """Serve `app` (default: the API alone over `settings`) on a free loopback port; yields its
    base URL, e.g. http://127.0.0.1:PORT."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app or create_app(settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            **uvicorn_options(settings),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(
        lambda: server.started or not thread.is_alive(),
        what="the API server to start",
        within_s=STARTUP_TIMEOUT_S,
    )
    assert server.started, "the API server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
