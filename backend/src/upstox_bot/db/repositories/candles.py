"""OHLCV candles: bulk upsert and range reads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from upstox_bot.db.models import CandleRow
from upstox_bot.db.repositories._writes import upsert
from upstox_bot.domain import Candle, datetime_to_ms, ms_to_datetime

CANDLE_KEY = ("instrument_key", "interval_s", "start_at")
CANDLE_DATA_COLUMNS = (
    "open_paise",
    "high_paise",
    "low_paise",
    "close_paise",
    "volume",
    "ticks",
)


def candle_values(candle: Candle) -> dict[str, Any]:
    """Column values of a candles row for `candle`."""
    return {
        "instrument_key": candle.instrument_key,
        "interval_s": candle.interval_s,
        "start_at": ms_to_datetime(candle.start_ms),
        "open_paise": candle.open_paise,
        "high_paise": candle.high_paise,
        "low_paise": candle.low_paise,
        "close_paise": candle.close_paise,
        "volume": candle.volume,
        "ticks": candle.ticks,
    }


def candle_from_row(row: CandleRow) -> Candle:
    """The domain candle stored in `row`."""
    return Candle(
        instrument_key=row.instrument_key,
        interval_s=row.interval_s,
        start_ms=datetime_to_ms(row.start_at),
        open_paise=row.open_paise,
        high_paise=row.high_paise,
        low_paise=row.low_paise,
        close_paise=row.close_paise,
        volume=row.volume,
        ticks=row.ticks,
    )


class CandleRepository:
    """Stores and reads candles (shared by every account)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def upsert_many(self, candles: Iterable[Candle]) -> int:
        """Store candles; one already stored for the same instrument, interval and start is
        replaced (a re-aggregated bar wins). Returns how many candles were given."""
        values = [candle_values(candle) for candle in candles]
        upsert(self._session, CandleRow, values, conflict=CANDLE_KEY, update=CANDLE_DATA_COLUMNS)
        return len(values)

    def find(
        self,
        instrument_key: str,
        interval_s: int,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Candles oldest first, starting at or after `since` and before `until` (aware)."""
        stmt = select(CandleRow).where(
            CandleRow.instrument_key == instrument_key, CandleRow.interval_s == interval_s
        )
        if since is not None:
            stmt = stmt.where(CandleRow.start_at >= since)
        if until is not None:
            stmt = stmt.where(CandleRow.start_at < until)
        stmt = stmt.order_by(CandleRow.start_at).limit(limit)
        rows = self._session.scalars(stmt.execution_options(populate_existing=True))
        return [candle_from_row(row) for row in rows]

    def latest(
        self, instrument_key: str, interval_s: int, count: int, *, before: datetime | None = None
    ) -> list[Candle]:
        """The last `count` candles (before `before`, if given), oldest first: strategy warm-up."""
        stmt = select(CandleRow).where(
            CandleRow.instrument_key == instrument_key, CandleRow.interval_s == interval_s
        )
        if before is not None:
            stmt = stmt.where(CandleRow.start_at < before)
        stmt = stmt.order_by(CandleRow.start_at.desc()).limit(count)
        rows = self._session.scalars(stmt.execution_options(populate_existing=True))
        return [candle_from_row(row) for row in reversed(list(rows))]
