"""The control port of the distributed harness, over Redis.

A command goes on the account's control stream (`ub:control:<account>`); the worker holding the
account reads it between two market events, applies it in the account's kernel, commits, and
pushes the answer on the command's reply list. The kernel's last committed view is kept in
Redis too (`ub:view:<account>`, refreshed while a kernel runs and gone soon after it stops), so
that every API process shows live positions and figures.

The control stream's position is part of the kernel's checkpoint: a worker that dies after
applying a command and before committing it leaves the command to its successor, which applies
it; a command committed is never applied twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from upstox_bot.runtime.control import (
    COMMAND_TIMEOUT_S,
    Command,
    CommandResult,
    KernelView,
    NoKernel,
    view_from_json,
    view_to_json,
)
from upstox_bot.worker.state import Keys

log = logging.getLogger(__name__)

REPLY_TTL_S = 60
VIEW_TTL_S = 10  # a view older than this is of no kernel that still runs
CONTROL_STREAM_MAXLEN = 10_000


class RedisControl:
    """The API side: send commands to whichever worker holds the account; read its view."""

    def __init__(self, redis_url: str, account: str) -> None:
        self.redis_url = redis_url
        self.account = account
        self._sync = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    async def send(
        self, command: Command, *, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> CommandResult:
        client = aioredis.Redis.from_url(
            self.redis_url, socket_timeout=timeout_s + 2, socket_connect_timeout=2
        )
        try:
            if not await client.exists(Keys.account_lock(self.account)):
                raise NoKernel(
                    "no worker holds the account: start a session (`upstox-bot session start`)"
                )
            await client.xadd(
                Keys.controls(self.account),
                {"command": json.dumps(command.to_json())},
                maxlen=CONTROL_STREAM_MAXLEN,
                approximate=True,
            )
            reply = await client.blpop([Keys.reply(command.command_id)], timeout=timeout_s)
        finally:
            await client.aclose()
        if reply is None:
            raise TimeoutError(command.command_id)
        return CommandResult.from_json(json.loads(reply[1]))

    def view(self) -> KernelView | None:
        try:
            raw = cast(bytes | None, self._sync.get(Keys.view(self.account)))
        except redis.RedisError:
            log.warning("control.view_unreadable", extra={"account": self.account})
            return None
        if raw is None:
            return None
        return view_from_json(json.loads(raw))


class ControlInbox:
    """The holder side: the commands after the last applied one, and the answers."""

    def __init__(self, client: redis.Redis, account: str, last_id: str = "0-0") -> None:
        self.client = client
        self.account = account
        self.last_id = last_id

    def pending(self, count: int = 100) -> list[tuple[str, Command]]:
        """Commands sent after the last applied one, oldest first (an unreadable one is
        logged and skipped)."""
        entries = cast(
            Sequence[tuple[bytes, dict[bytes, bytes]]],
            self.client.xrange(
                Keys.controls(self.account), min=f"({self.last_id}", max="+", count=count
            ),
        )
        out: list[tuple[str, Command]] = []
        for entry_id, fields in entries:
            ident = entry_id.decode()
            try:
                out.append((ident, Command.from_json(json.loads(fields[b"command"]))))
            except (KeyError, ValueError, TypeError):
                log.error("control.unreadable", extra={"account": self.account, "id": ident})
                self.last_id = ident
        return out

    def reply(self, command: Command, result: CommandResult) -> None:
        """Answer the sender (fire and forget: a sender that gave up never reads it)."""
        key = Keys.reply(command.command_id)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(key, json.dumps(result.to_json()))
            pipe.expire(key, REPLY_TTL_S)
            pipe.execute()
        except redis.RedisError:
            log.warning("control.reply_failed", extra={"command_id": command.command_id})


def store_view(client: redis.Redis, account: str, view: KernelView) -> None:
    """Keep the kernel's view for the API processes (expires when the kernel stops)."""
    data: dict[str, Any] = view_to_json(view)
    try:
        client.set(Keys.view(account), json.dumps(data), ex=VIEW_TTL_S)
    except redis.RedisError:
        log.warning("control.view_not_stored", extra={"account": account})
