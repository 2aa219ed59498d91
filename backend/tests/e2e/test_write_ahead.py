"""An order is durable before the broker sees it, as a write-ahead beside the checkpoint, and in
its table once its market event is done (runtime/kernel.py `_write_ahead`)."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from upstox_bot.config import Settings
from upstox_bot.db.models import OrderRow, PendingWriteRow
from upstox_bot.db.repositories import pending_writes
from upstox_bot.domain import Order, OrderPurpose
from upstox_bot.runtime.embedded import EmbeddedBot, RunOptions

pytestmark = [pytest.mark.e2e]


def test_entries_are_written_ahead_before_the_broker_and_settled_after(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"DATA_DIR": tmp_path, "SIM_SYMBOLS": 12, "TICK_STORE_INTERVAL_SECONDS": 30}
    )
    bot = EmbeddedBot(
        settings,
        RunOptions(
            speed=100_000,
            duration_minutes=120,
            seed=7,
            start_date=date(2026, 11, 25),
            serve_api=False,
            live_console=False,
        ),
    )
    seen: list[tuple[str, bool, bool]] = []  # (tag, in its table, in a pending write)

    def at_the_broker(order: Order) -> None:
        if order.purpose is not OrderPurpose.ENTRY:
            return

        def look(session: Session) -> tuple[bool, bool]:
            in_table = session.scalar(
                select(func.count())
                .select_from(OrderRow)
                .where(OrderRow.client_order_id == order.client_order_id)
            )
            payloads = session.scalars(select(PendingWriteRow.payload)).all()
            written_ahead = any(
                name == "order" and args[0].client_order_id == order.client_order_id
                for payload in payloads
                for name, args in pending_writes.decode(payload)[0]
            )
            return bool(in_table), written_ahead

        seen.append((order.client_order_id, *bot.store.run(look)))

    bot.kernel.executor.after_place = at_the_broker
    try:
        asyncio.run(bot.run_market())

        assert len(seen) >= 3, "the session needs entries to check"
        # At the broker: durable as a write-ahead, not yet in the table (the settle follows).
        assert [s for s in seen if not (s[2] and not s[1])] == []

        def after(session: Session) -> tuple[int, set[str]]:
            pending = session.scalar(select(func.count()).select_from(PendingWriteRow))
            tags = set(session.scalars(select(OrderRow.client_order_id)).all())
            return int(pending or 0), tags

        pending, tags = bot.store.run(after)
        assert pending == 0
        assert {tag for tag, _, _ in seen} <= tags
    finally:
        bot.close()
