"""A local stand-in for the Telegram Bot API on loopback: getUpdates and sendMessage.

It keeps the updates the test pushes and hands them out as Telegram does (long polling:
`offset` acknowledges every update before it, `timeout` is how long to hold an empty answer),
and records every message sent. Tests wait on `wait_messages`, which a sendMessage wakes.
Source: https://core.telegram.org/bots/api#getupdates and #sendmessage.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.waiting import wait_until


class TelegramStandIn:
    """Serves `/bot<token>/getUpdates` and `/bot<token>/sendMessage` on 127.0.0.1."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.sent: list[dict[str, Any]] = []
        self._updates: list[dict[str, Any]] = []
        self._next_id = 1
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        app = Starlette(
            routes=[
                Route(f"/bot{token}/getUpdates", self._get_updates, methods=["GET", "POST"]),
                Route(f"/bot{token}/sendMessage", self._send_message, methods=["POST"]),
            ]
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> TelegramStandIn:
        self._thread.start()
        wait_until(lambda: self._server.started, within_s=30, what="the Telegram stand-in")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    # --- the test's side -------------------------------------------------------------------------

    def push(self, chat_id: int | str, text: str) -> None:
        """A message from a chat, as the next update."""
        with self._lock:
            update_id = self._next_id
            self._next_id += 1
            self._updates.append(
                {
                    "update_id": update_id,
                    "message": {
                        "message_id": update_id,
                        "chat": {"id": int(chat_id), "type": "private"},
                        "text": text,
                    },
                }
            )
        if self._loop is not None and self._arrived is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)

    def messages_to(self, chat_id: int | str) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.sent if str(m["chat_id"]) == str(chat_id)]

    def wait_messages(self, chat_id: int | str, count: int, timeout_s: float = 60) -> list[str]:
        """The messages sent to a chat, once there are at least `count`."""
        with self._lock:
            ok = self._lock.wait_for(lambda: len(self._to(chat_id)) >= count, timeout=timeout_s)
            texts = [m["text"] for m in self._to(chat_id)]
        assert ok, f"only {len(texts)} message(s) to chat {chat_id}, expected {count}: {texts}"
        return texts

    def _to(self, chat_id: int | str) -> list[dict[str, Any]]:
        return [m for m in self.sent if str(m["chat_id"]) == str(chat_id)]

    # --- the Bot API ---------------------------------------------------------------------------

    async def _get_updates(self, request: Request) -> JSONResponse:
        body = await request.json() if request.method == "POST" else dict(request.query_params)
        offset = int(body.get("offset") or 0)
        timeout_s = float(body.get("timeout") or 0)
        if self._arrived is None:
            self._loop = asyncio.get_running_loop()
            self._arrived = asyncio.Event()
        while True:
            with self._lock:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                ready = list(self._updates)
                self._arrived.clear()
            if ready or timeout_s <= 0:
                return JSONResponse({"ok": True, "result": ready})
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=timeout_s)
            except TimeoutError:
                timeout_s = 0

    async def _send_message(self, request: Request) -> JSONResponse:
        body = await request.json()
        if not body.get("text"):
            return JSONResponse(
                {"ok": False, "description": "Bad Request: message text is empty"}, 400
            )
        with self._lock:
            self.sent.append(body)
            self._lock.notify_all()
        return JSONResponse({"ok": True, "result": {"message_id": len(self.sent)}})
