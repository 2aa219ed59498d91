"""Time for the trading core: the Clock protocol, live and simulated clocks, and the NSE calendar.

Market logic runs in Asia/Kolkata (IST, UTC+05:30, no daylight saving time). Clocks return aware
datetimes in IST and epoch milliseconds (UTC). The calendar knows weekends, the trading holidays of
a CSV file (the packaged one by default) and optional special sessions such as Muhurat trading.
"""

from __future__ import annotations

import csv
import io
import time as _time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import ClassVar, Protocol
from zoneinfo import ZoneInfo

from upstox_bot.domain import reduce_to_fields

IST = ZoneInfo("Asia/Kolkata")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# India has kept +05:30 since 1945, so adding a duration to the epoch read in IST gives the
# same aware datetime as converting the UTC sum, for a fraction of the cost.
_EPOCH_IST = _EPOCH.astimezone(IST)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Holidays never run for weeks on end; a longer search means the calendar is broken.
_MAX_CLOSED_RUN_DAYS = 60


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("naive datetime: every time in upstox-bot is timezone-aware")


def _ms_to_ist(ms: int) -> datetime:
    return _EPOCH_IST + timedelta(milliseconds=ms)


def _to_ms(at: datetime) -> int:
    _require_aware(at)
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class Clock(Protocol):
    """The source of "now" for the core; injected, never read from the system directly."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    def now_ms(self) -> int:
        """The current time in epoch milliseconds (UTC)."""
        ...


class LiveClock:
    """Wall-clock time, in IST."""

    def now(self) -> datetime:
        """The current wall-clock time as an aware datetime in Asia/Kolkata."""
        return datetime.now(tz=IST)

    def now_ms(self) -> int:
        """The current wall-clock time in epoch milliseconds (UTC)."""
        return _time.time_ns() // 1_000_000


class SimClock:
    """A clock that moves only when told to, and only forwards; millisecond resolution."""

    def __init__(self, start: datetime) -> None:
        """Start the clock at `start` (aware; truncated to the millisecond).

        Raises:
            ValueError: `start` is naive.
        """
        self._ms = _to_ms(start)
        self._at: datetime | None = None

    def now(self) -> datetime:
        """The simulated time as an aware datetime in Asia/Kolkata."""
        if self._at is None:
            self._at = _ms_to_ist(self._ms)
        return self._at

    def now_ms(self) -> int:
        """The simulated time in epoch milliseconds (UTC)."""
        return self._ms

    def advance_to(self, at: datetime | int) -> None:
        """Move the clock to `at` (an aware datetime or epoch ms); staying put is allowed.

        Raises:
            ValueError: `at` is before the current time, or a naive datetime.
        """
        ms = at if isinstance(at, int) else _to_ms(at)
        if ms < self._ms:
            raise ValueError(f"SimClock cannot go backwards: {ms} < {self._ms} (epoch ms)")
        if ms != self._ms:
            self._ms = ms
            self._at = None

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (rounded to the millisecond).

        Raises:
            ValueError: `seconds` is negative.
        """
        if seconds < 0:
            raise ValueError(f"SimClock cannot go backwards: advance({seconds})")
        self.advance_to(self._ms + round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class SpecialSession:
    """A session with its own hours (IST) on a day that is otherwise closed or shortened."""

    open: time
    close: time

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


class NseCalendar:
    """NSE equity and F&O trading days and normal-market hours, in IST.

    A day is a trading day when it is a weekday and not a holiday, or when it carries a special
    session. The normal market runs from `SESSION_OPEN` (inclusive) to `SESSION_CLOSE` (exclusive);
    the pre-open call auction before it is not "open" for continuous trading.
    """

    SESSION_OPEN: ClassVar[time] = time(9, 15)
    SESSION_CLOSE: ClassVar[time] = time(15, 30)
    PRE_OPEN_START: ClassVar[time] = time(9, 0)
    PRE_OPEN_END: ClassVar[time] = time(9, 8)

    def __init__(
        self,
        holidays: Iterable[date] = (),
        *,
        special_sessions: Mapping[date, SpecialSession] | None = None,
        session_open: time | None = None,
        session_close: time | None = None,
    ) -> None:
        """Build a calendar.

        Args:
            holidays: weekdays with no regular session (weekends are closed anyway).
            special_sessions: days that trade with their own hours, even if a holiday or weekend
                (Muhurat trading); they replace the regular hours on that day.
            session_open: regular open (IST) instead of 09:15.
            session_close: regular close (IST) instead of 15:30.

        Raises:
            ValueError: a session closes at or before it opens.
        """
        self.session_open_time = session_open or self.SESSION_OPEN
        self.session_close_time = session_close or self.SESSION_CLOSE
        if self.session_close_time <= self.session_open_time:
            raise ValueError("session_close must be after session_open")
        self._holidays = frozenset(holidays)
        self._special = dict(special_sessions or {})
        for day, session in self._special.items():
            if session.close <= session.open:
                raise ValueError(f"special session on {day}: close must be after open")

    @classmethod
    def from_csv(
        cls,
        path: Path | str,
        *,
        special_sessions: Mapping[date, SpecialSession] | None = None,
    ) -> NseCalendar:
        """Load holidays from a CSV with a `date` column (YYYY-MM-DD), one row per holiday.

        An optional `weekday` column is checked against the date, to catch typos.

        Raises:
            ValueError: the file has no `date` column, or a row is malformed.
        """
        with Path(path).open(newline="", encoding="utf-8") as handle:
            return cls(_read_holidays(handle, str(path)), special_sessions=special_sessions)

    @classmethod
    def default(cls) -> NseCalendar:
        """The calendar of the holiday file shipped with the package (NSE 2025-2026)."""
        text = resources.files("upstox_bot.data").joinpath("nse_holidays.csv").read_text("utf-8")
        return cls(_read_holidays(io.StringIO(text, newline=""), "nse_holidays.csv"))

    @property
    def holidays(self) -> frozenset[date]:
        """The holiday dates this calendar was built with."""
        return self._holidays

    @property
    def covered_years(self) -> frozenset[int]:
        """Years with at least one listed holiday: outside them the calendar knows only weekends."""
        return frozenset(day.year for day in self._holidays)

    def is_trading_day(self, d: date) -> bool:
        """Whether NSE holds a session on `d` (an IST date)."""
        if d in self._special:
            return True
        return d.weekday() < 5 and d not in self._holidays

    def _hours(self, d: date) -> tuple[time, time]:
        special = self._special.get(d)
        if special is not None:
            return special.open, special.close
        if not self.is_trading_day(d):
            raise ValueError(f"{d.isoformat()} is not an NSE trading day")
        return self.session_open_time, self.session_close_time

    def session_open(self, d: date) -> datetime:
        """The normal-market open of trading day `d`, aware, in IST.

        Raises:
            ValueError: `d` is not a trading day.
        """
        return datetime.combine(d, self._hours(d)[0], tzinfo=IST)

    def session_close(self, d: date) -> datetime:
        """The normal-market close of trading day `d` (exclusive), aware, in IST.

        Raises:
            ValueError: `d` is not a trading day.
        """
        return datetime.combine(d, self._hours(d)[1], tzinfo=IST)

    def session_bounds_ms(self, d: date) -> tuple[int, int]:
        """Open (inclusive) and close (exclusive) of trading day `d` in epoch ms (UTC).

        Raises:
            ValueError: `d` is not a trading day.
        """
        return _to_ms(self.session_open(d)), _to_ms(self.session_close(d))

    def trading_date(self, at: datetime) -> date:
        """The IST calendar date of `at` (whether or not NSE trades that day).

        Raises:
            ValueError: `at` is naive.
        """
        _require_aware(at)
        return at.astimezone(IST).date()

    def is_open(self, at: datetime) -> bool:
        """Whether the normal market is open at `at`: open <= at < close on a trading day.

        Raises:
            ValueError: `at` is naive.
        """
        d = self.trading_date(at)
        if not self.is_trading_day(d):
            return False
        opens, closes = self._hours(d)
        moment = at.astimezone(IST).time()
        return opens <= moment < closes

    def is_pre_open(self, at: datetime) -> bool:
        """Whether `at` falls in the pre-open order-entry window (09:00-09:08 IST) of a regular
        trading day. Orders placed then join the opening call auction, not continuous trading.

        Raises:
            ValueError: `at` is naive.
        """
        d = self.trading_date(at)
        if d in self._special or not self.is_trading_day(d):
            return False
        return self.PRE_OPEN_START <= at.astimezone(IST).time() < self.PRE_OPEN_END

    def minutes_into_session(self, at: datetime) -> float:
        """Minutes from the open of `at`'s trading day to `at`.

        Negative before the open; at or beyond the session length after the close.

        Raises:
            ValueError: `at` is naive, or its IST date is not a trading day.
        """
        _require_aware(at)
        opens = self.session_open(self.trading_date(at))
        return (at - opens).total_seconds() / 60.0

    def next_trading_day(self, d: date) -> date:
        """The first trading day strictly after `d`.

        Raises:
            ValueError: no trading day within 60 days (a broken calendar).
        """
        return self._step(d, 1)

    def previous_trading_day(self, d: date) -> date:
        """The last trading day strictly before `d`.

        Raises:
            ValueError: no trading day within 60 days (a broken calendar).
        """
        return self._step(d, -1)

    def _step(self, d: date, days: int) -> date:
        candidate = d
        for _ in range(_MAX_CLOSED_RUN_DAYS):
            candidate += timedelta(days=days)
            if self.is_trading_day(candidate):
                return candidate
        raise ValueError(f"no trading day within {_MAX_CLOSED_RUN_DAYS} days of {d.isoformat()}")

    def trading_days(self, start: date, end: date) -> list[date]:
        """Trading days from `start` to `end`, both inclusive, in order (none if end < start)."""
        days: list[date] = []
        current = start
        while current <= end:
            if self.is_trading_day(current):
                days.append(current)
            current += timedelta(days=1)
        return days


def _read_holidays(handle: Iterable[str], source: str) -> list[date]:
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or "date" not in reader.fieldnames:
        raise ValueError(f"{source}: holiday file needs a 'date' column (YYYY-MM-DD)")
    days: list[date] = []
    for row in reader:
        line = reader.line_num
        text = (row.get("date") or "").strip()
        try:
            day = date.fromisoformat(text)
        except ValueError as e:
            raise ValueError(f"{source} line {line}: bad date {text!r}, expected YYYY-MM-DD") from e
        weekday = (row.get("weekday") or "").strip()
        if weekday and weekday.lower() != _WEEKDAYS[day.weekday()].lower():
            raise ValueError(
                f"{source} line {line}: {text} is a {_WEEKDAYS[day.weekday()]}, not a {weekday}"
            )
        days.append(day)
    return days
