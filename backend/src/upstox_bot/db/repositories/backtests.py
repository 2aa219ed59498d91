"""Backtests submitted through the API: create, read, page through, and move through
pending -> running -> done | failed with guarded updates (the task's idempotency)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from upstox_bot.db.base import jsonable
from upstox_bot.db.models_backtest import BacktestRow, BacktestStatus
from upstox_bot.db.repositories._writes import execute_count
from upstox_bot.errors import NotFound


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestRecord:
    """A stored backtest. `result` is None until it is done (and in list pages)."""

    id: str
    status: BacktestStatus
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _record(row: BacktestRow, *, with_result: bool = True) -> BacktestRecord:
    return BacktestRecord(
        id=row.id,
        status=BacktestStatus(row.status),
        request=dict(row.request),
        result=dict(row.result) if with_result and row.result is not None else None,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


class BacktestRepository:
    """Stores backtests; flushes, never commits (the caller owns the transaction)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def create(self, request: Mapping[str, Any], at: datetime) -> BacktestRecord:
        """Store a new pending backtest.

        Args:
            request: `BacktestRequest.to_dict()` (plain JSON data).
            at: when it was submitted (aware).
        """
        row = BacktestRow(
            id=str(uuid.uuid4()),
            status=BacktestStatus.PENDING.value,
            request=jsonable(dict(request)),
            result=None,
            error=None,
            created_at=at,
            started_at=None,
            finished_at=None,
        )
        self._session.add(row)
        self._session.flush()
        return _record(row)

    def get_or_none(self, backtest_id: str) -> BacktestRecord | None:
        """The backtest with this id, or None."""
        row = self._session.scalar(
            select(BacktestRow)
            .where(BacktestRow.id == backtest_id)
            .execution_options(populate_existing=True)
        )
        return _record(row) if row is not None else None

    def get(self, backtest_id: str) -> BacktestRecord:
        """The backtest with this id.

        Raises:
            NotFound: no such backtest.
        """
        record = self.get_or_none(backtest_id)
        if record is None:
            raise NotFound(f"backtest {backtest_id} not found")
        return record

    def find(
        self, *, status: BacktestStatus | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[BacktestRecord], int]:
        """A page of backtests, newest first, without their results; (page, total matching)."""
        where = [] if status is None else [BacktestRow.status == status.value]
        total = self._session.scalar(select(func.count()).select_from(BacktestRow).where(*where))
        rows = self._session.scalars(
            select(BacktestRow)
            .where(*where)
            .order_by(BacktestRow.created_at.desc(), BacktestRow.id.desc())
            .limit(limit)
            .offset(offset)
            .execution_options(populate_existing=True)
        )
        return [_record(row, with_result=False) for row in rows], int(total or 0)

    def summaries(self, backtest_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The `summary` part of each done backtest's result, by id (for list pages)."""
        if not backtest_ids:
            return {}
        rows = self._session.execute(
            select(BacktestRow.id, BacktestRow.result["summary"]).where(
                BacktestRow.id.in_(backtest_ids),
                BacktestRow.status == BacktestStatus.DONE.value,
            )
        )
        return {row[0]: dict(row[1]) for row in rows if isinstance(row[1], Mapping)}

    def mark_running(self, backtest_id: str, at: datetime) -> bool:
        """Claim a pending backtest for a run: pending -> running.

        Returns:
            True if this call claimed it; False if it is not pending (already claimed, finished
            or unknown): the caller must not run it.
        """
        return self._move(backtest_id, BacktestStatus.PENDING, started_at=at) == 1

    def finish(self, backtest_id: str, result: Mapping[str, Any], at: datetime) -> bool:
        """Store the result of a running backtest: running -> done. False if it was not running.

        Args:
            result: `BacktestResult.to_dict()`.
        """
        return (
            self._move(
                backtest_id,
                BacktestStatus.RUNNING,
                status=BacktestStatus.DONE.value,
                result=jsonable(dict(result)),
                finished_at=at,
            )
            == 1
        )

    def fail(self, backtest_id: str, error: str, at: datetime) -> bool:
        """Record why a pending or running backtest failed: -> failed. False if it had ended."""
        return (
            self._move(
                backtest_id,
                BacktestStatus.PENDING,
                BacktestStatus.RUNNING,
                status=BacktestStatus.FAILED.value,
                error=error,
                finished_at=at,
            )
            == 1
        )

    def _move(self, backtest_id: str, *sources: BacktestStatus, **values: Any) -> int:
        values.setdefault("status", BacktestStatus.RUNNING.value)
        return execute_count(
            self._session,
            update(BacktestRow)
            .where(
                BacktestRow.id == backtest_id,
                BacktestRow.status.in_([s.value for s in sources]),
            )
            .values(**values)
            .execution_options(synchronize_session=False),
        )
