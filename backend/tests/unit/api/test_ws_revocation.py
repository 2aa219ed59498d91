"""The stream's revocation check ends the streams of revoked keys, and only those."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.waiting import wait_until_async
from upstox_bot.api import ws


class Stream:
    """Stands in for a stream's subscriber: records how it was ended."""

    def __init__(self) -> None:
        self.ended: tuple[Any, ...] | None = None

    def end(self, *reason: Any) -> None:
        self.ended = reason


async def test_a_stream_opened_while_keys_are_checked_is_not_taken_for_revoked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    revoked, kept, late = Stream(), Stream(), Stream()
    streams: dict[Any, int] = {revoked: 1, kept: 2}
    asked: list[set[int]] = []

    def active_key_ids(sessions: object, ids: set[int]) -> set[int]:
        asked.append(set(ids))
        streams[late] = 3  # a new stream, authenticated with key 3, opens meanwhile
        return ids - {1}

    monkeypatch.setattr(ws, "active_key_ids", active_key_ids)
    app = SimpleNamespace(state=SimpleNamespace(ws_streams=streams, sessions=None))
    task = asyncio.create_task(ws.close_revoked(app, every_s=0))  # type: ignore[arg-type]
    try:
        await wait_until_async(lambda: len(asked) >= 2, what="two revocation checks")
    finally:
        task.cancel()
    assert revoked.ended == ws.REVOKED
    assert kept.ended is None
    assert late.ended is None  # its key was never asked about before the second check
    assert 3 in asked[1]
