"""Stored ticks: fast bulk insert (Core executemany) and range reads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from upstox_bot.db.models import TickRow
from upstox_bot.db.repositories._writes import execute_count, insert_ignore
from upstox_bot.domain import Tick, datetime_to_ms, ms_to_datetime


def tick_values(tick: Tick) -> dict[str, Any]:
    """Column values of a ticks row for `tick`."""
    return {
        "instrument_key": tick.instrument_key,
        "ts": ms_to_datetime(tick.ts_ms),
        "ltp_paise": tick.ltp_paise,
        "ltq": tick.ltq,
        "volume": tick.volume,
        "close_paise": tick.close_paise,
        "bid_paise": tick.bid_paise,
        "ask_paise": tick.ask_paise,
        "bid_qty": tick.bid_qty,
        "ask_qty": tick.ask_qty,
        "oi": tick.oi,
        "iv": tick.iv,
        "delta": tick.delta,
        "gamma": tick.gamma,
        "theta": tick.theta,
        "vega": tick.vega,
        "rho": tick.rho,
    }


def tick_from_row(row: TickRow) -> Tick:
    """The domain tick stored in `row`."""
    return Tick(
        instrument_key=row.instrument_key,
        ts_ms=datetime_to_ms(row.ts),
        ltp_paise=row.ltp_paise,
        ltq=row.ltq,
        volume=row.volume,
        close_paise=row.close_paise,
        bid_paise=row.bid_paise,
        ask_paise=row.ask_paise,
        bid_qty=row.bid_qty,
        ask_qty=row.ask_qty,
        oi=row.oi,
        iv=row.iv,
        delta=row.delta,
        gamma=row.gamma,
        theta=row.theta,
        vega=row.vega,
        rho=row.rho,
    )


class TickRepository:
    """Stores and reads ticks (shared by every account)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def insert_many(self, ticks: Iterable[Tick]) -> int:
        """Store ticks in one executemany, skipping any already stored (an instrument has one
        stored tick per time: a batch stored twice stores nothing more); returns how many were
        written."""
        values = [tick_values(tick) for tick in ticks]
        return insert_ignore(self._session, TickRow, values, conflict=["instrument_key", "ts"])

    def find(
        self,
        instrument_key: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[Tick]:
        """Ticks oldest first, at or after `since` and before `until` (aware)."""
        stmt = select(TickRow).where(TickRow.instrument_key == instrument_key)
        if since is not None:
            stmt = stmt.where(TickRow.ts >= since)
        if until is not None:
            stmt = stmt.where(TickRow.ts < until)
        rows = self._session.scalars(stmt.order_by(TickRow.ts, TickRow.id).limit(limit))
        return [tick_from_row(row) for row in rows]

    def latest(self, instrument_key: str) -> Tick | None:
        """The newest stored tick of `instrument_key`, or None."""
        row = self._session.scalar(
            select(TickRow)
            .where(TickRow.instrument_key == instrument_key)
            .order_by(TickRow.ts.desc(), TickRow.id.desc())
            .limit(1)
        )
        return tick_from_row(row) if row is not None else None

    def delete_before(self, before: datetime) -> int:
        """Delete ticks older than `before` (retention); returns how many were deleted."""
        return execute_count(self._session, delete(TickRow).where(TickRow.ts < before))
