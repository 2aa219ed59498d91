"""Tables of the backtests run through the API: each request, its state and its result."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from upstox_bot.db.base import Base, JsonDoc, UtcDateTime, enum_check

BACKTEST_ID = 36  # a UUID in its 36-character text form


class BacktestStatus(StrEnum):
    """Where a stored backtest is: pending -> running -> done or failed (never back)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BacktestRow(Base):
    """One backtest submitted through the API.

    `request` is `BacktestRequest.to_dict()`; `result` is `BacktestResult.to_dict()` once done;
    `error` says why a failed run failed.
    """

    __tablename__ = "backtests"
    __table_args__ = (enum_check("status", BacktestStatus), Index(None, "created_at"))

    id: Mapped[str] = mapped_column(String(BACKTEST_ID), primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    request: Mapped[Any] = mapped_column(JsonDoc)
    result: Mapped[Any | None] = mapped_column(JsonDoc)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
