"""NSE calendar days fetched from Upstox, stored so every process and restart uses them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, extract, select
from sqlalchemy.orm import Session

from upstox_bot.clock import CalendarDay, SpecialSession
from upstox_bot.db.models_upstox import MarketCalendarDayRow


class CalendarDayRepository:
    """Reads and replaces the stored calendar days, a year at a time."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def find(self) -> list[CalendarDay]:
        """Every stored day, by date."""
        rows = self._session.scalars(
            select(MarketCalendarDayRow).order_by(
                MarketCalendarDayRow.day, MarketCalendarDayRow.kind
            )
        )
        days: list[CalendarDay] = []
        for row in rows:
            session = None
            if row.session_open is not None and row.session_close is not None:
                session = SpecialSession(row.session_open, row.session_close)
            days.append(
                CalendarDay(
                    day=row.day,
                    name=row.name,
                    kind=row.kind,
                    session=session,
                    provisional=row.provisional,
                    source=row.source,
                )
            )
        return days

    def replace_years(self, days: Iterable[CalendarDay], years: Iterable[int], at: datetime) -> int:
        """Store `days` as the whole list of each year in `years` (older rows of those years go).

        Returns how many rows were written. The caller commits.
        """
        chosen = sorted(set(years))
        unique = {(d.day, d.kind): d for d in days if d.day.year in chosen}
        rows = list(unique.values())
        if chosen:
            self._session.execute(
                delete(MarketCalendarDayRow).where(
                    extract("year", MarketCalendarDayRow.day).in_(chosen)
                )
            )
        for d in rows:
            self._session.add(
                MarketCalendarDayRow(
                    day=d.day,
                    kind=d.kind,
                    name=d.name,
                    session_open=d.session.open if d.session else None,
                    session_close=d.session.close if d.session else None,
                    provisional=d.provisional,
                    source=d.source,
                    fetched_at=at,
                )
            )
        self._session.flush()
        return len(rows)

    def years(self) -> set[int]:
        """The years with stored rows."""
        return {d.year for d in self._session.scalars(select(MarketCalendarDayRow.day))}
