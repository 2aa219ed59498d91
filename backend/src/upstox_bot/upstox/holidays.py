"""NSE holidays and special sessions from Upstox's market-holidays API, into calendar days.

Upstox documents ``GET /v2/market/holidays`` (the current year) as ``data[]`` of
``{date, description, holiday_type, closed_exchanges[], open_exchanges[{exchange, start_time,
end_time}]}`` with ``holiday_type`` one of ALL, SETTLEMENT_HOLIDAY, TRADING_HOLIDAY and
SPECIAL_TIMING, and the open exchanges' times in epoch ms (API.md 7.4; Upstox docs
"get-market-holidays"; SDK ``HolidayData`` and ``ExchangeTimingData``). The bot trades NSE cash
stocks and NSE F&O, so a day counts when NSE or NFO appears in it:

- NSE or NFO among ``closed_exchanges``: a trading holiday;
- NSE or NFO among ``open_exchanges`` on a TRADING_HOLIDAY or SPECIAL_TIMING day: a special
  session with those hours (Muhurat trading);
- a SETTLEMENT_HOLIDAY closes settlement, not trading: it is skipped.

Whether ``date`` comes as ``YYYY-MM-DD`` or with a time after it varies between the docs and the
SDK (assumed: the first ten characters are the date).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any, Protocol

from sqlalchemy.orm import Session

from upstox_bot.clock import HOLIDAY, SPECIAL, CalendarDay, SpecialSession
from upstox_bot.db.repositories.calendar_days import CalendarDayRepository
from upstox_bot.domain import IST

log = logging.getLogger(__name__)

SOURCE = "Upstox GET /v2/market/holidays"
_EXCHANGES = ("NSE", "NFO")  # NSE cash and NSE equity derivatives


def _ist_time(epoch_ms: Any) -> time:
    return datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC).astimezone(IST).time()


def calendar_days_from_upstox(records: Iterable[Mapping[str, Any]]) -> list[CalendarDay]:
    """The NSE holidays and special sessions in Upstox holiday records.

    A record that cannot be read (no date, bad times) is logged and skipped: one bad row must
    not hide the rest of the year.
    """
    days: list[CalendarDay] = []
    for raw in records:
        try:
            day = date.fromisoformat(str(raw.get("date") or "")[:10])
        except ValueError:
            log.warning("calendar.upstox_bad_record", extra={"record": str(raw)[:200]})
            continue
        name = str(raw.get("description") or "").strip() or "market holiday"
        kind = str(raw.get("holiday_type") or "").upper()
        if kind == "SETTLEMENT_HOLIDAY":
            continue
        closed = {str(e).upper() for e in raw.get("closed_exchanges") or ()}
        session: SpecialSession | None = None
        for timing in raw.get("open_exchanges") or ():
            if not isinstance(timing, Mapping):
                continue
            if str(timing.get("exchange") or "").upper() not in _EXCHANGES:
                continue
            try:
                session = SpecialSession(
                    _ist_time(timing["start_time"]), _ist_time(timing["end_time"])
                )
            except (KeyError, TypeError, ValueError, OverflowError):
                log.warning("calendar.upstox_bad_timing", extra={"date": day.isoformat()})
            break
        if closed & set(_EXCHANGES):
            days.append(CalendarDay(day=day, name=name, kind=HOLIDAY, source=SOURCE))
        if session is not None and session.close > session.open:
            days.append(
                CalendarDay(day=day, name=name, kind=SPECIAL, session=session, source=SOURCE)
            )
    return sorted(days, key=lambda d: (d.day, d.kind))


class HolidaySource(Protocol):
    """What fetching needs of the Upstox client."""

    async def market_holidays(self, day: date | None = None) -> list[dict[str, Any]]: ...


async def fetch_calendar_days(client: HolidaySource) -> list[CalendarDay]:
    """The current year's NSE holidays and special sessions from Upstox.

    Raises:
        UpstoxApiError: the call failed (the caller keeps the calendar it has).
    """
    return calendar_days_from_upstox(await client.market_holidays())


def store_calendar_days(
    session: Session, days: Sequence[CalendarDay], *, year: int, at: datetime
) -> int:
    """Store a fetched year (its days replace that year's stored ones); returns rows written.

    An empty answer stores nothing: NSE always has holidays, so an empty list is a failure to
    be ignored, not a year without holidays. The caller commits.
    """
    if not days:
        log.warning("calendar.upstox_empty", extra={"year": year})
        return 0
    years = {d.day.year for d in days} | {year}
    written = CalendarDayRepository(session).replace_years(days, years, at)
    log.info("calendar.upstox_stored", extra={"years": sorted(years), "rows": written})
    return written
