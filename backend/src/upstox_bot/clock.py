"""Time for the trading core: the Clock protocol, live and simulated clocks, and the NSE calendar.

Market logic runs in Asia/Kolkata (IST, UTC+05:30, no daylight saving time). Clocks return aware
datetimes in IST and epoch milliseconds (UTC). The calendar knows weekends, the trading holidays of
a CSV file (the packaged one by default, or days fetched from Upstox's market-holidays API) and
optional special sessions such as Muhurat trading. It also knows which years it has a list for:
outside them it can only guess (weekdays trade), and the harnesses take no entries there.
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
from typing import ClassVar, Final, Protocol

from upstox_bot.domain import IST, reduce_to_fields

# Session time in epoch milliseconds. India has kept UTC+05:30, without daylight saving time,
# since 1945: an instant's IST date and time of day are plain arithmetic on its epoch ms.
IST_OFFSET_MS: Final = 19_800_000
DAY_MS: Final = 86_400_000
MINUTE_MS: Final = 60_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# India has kept +05:30 since 1945, so adding a duration to the epoch read in IST gives the
# same aware datetime as converting the UTC sum, for a fraction of the cost.
_EPOCH_IST = _EPOCH.astimezone(IST)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Holidays never run for weeks on end; a longer search means the calendar is broken.
_MAX_CLOSED_RUN_DAYS = 60


def ist_day_number(ms: int) -> int:
    """Days from 1970-01-01 to the IST date of the instant `ms`."""
    return (ms + IST_OFFSET_MS) // DAY_MS


def ist_day_start_ms(ms: int) -> int:
    """Epoch ms of the IST midnight that starts the IST day of the instant `ms`."""
    return (ms + IST_OFFSET_MS) // DAY_MS * DAY_MS - IST_OFFSET_MS


def minute_of_ist_day(ms: int) -> int:
    """Minutes from IST midnight to the instant `ms` (09:15 IST is 555)."""
    return (ms + IST_OFFSET_MS) % DAY_MS // MINUTE_MS


def ist_date_of_ms(ms: int) -> date:
    """The IST calendar date of the instant `ms`."""
    return date.fromordinal(_EPOCH_ORDINAL + ist_day_number(ms))


def ist_midnight_ms(day: date) -> int:
    """Epoch ms of the IST midnight that starts `day`."""
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY_MS - IST_OFFSET_MS


def time_of_day_ms(at: time) -> int:
    """Milliseconds from midnight to the time of day `at`."""
    return ((at.hour * 60 + at.minute) * 60 + at.second) * 1000 + at.microsecond // 1000


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


class MarketClock:
    """Market time for a harness's engine: moved forward by the harness as trades arrive, never
    backwards (a trade stamped earlier than one already applied leaves it where it is).

    Args:
        start_ms: the time to start at (epoch ms).
        ist: `now()` in Asia/Kolkata (a backtest's reports read local times); else in UTC,
            as the live harnesses record and serve times.
    """

    def __init__(self, start_ms: int, *, ist: bool = False) -> None:
        self._ms = start_ms
        self._epoch = _EPOCH_IST if ist else _EPOCH
        self._at: datetime | None = None

    def now(self) -> datetime:
        """The market time as an aware datetime (UTC, or IST when asked)."""
        if self._at is None:
            self._at = self._epoch + timedelta(milliseconds=self._ms)
        return self._at

    def now_ms(self) -> int:
        """The market time in epoch milliseconds (UTC)."""
        return self._ms

    def advance_to(self, ms: int) -> None:
        """Move to `ms` (epoch ms) if it is later than now; an earlier time changes nothing."""
        if ms > self._ms:
            self._ms = ms
            self._at = None


@dataclass(frozen=True, slots=True)
class SpecialSession:
    """A session with its own hours (IST) on a day that is otherwise closed or shortened."""

    open: time
    close: time

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)


HOLIDAY = "holiday"
SPECIAL = "special"


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarDay:
    """One listed day of the NSE calendar: a trading holiday or a special session.

    Attributes:
        day: the IST date.
        name: what it is, in NSE's words (shortened).
        kind: HOLIDAY (no regular session) or SPECIAL (a session with its own hours, such as
            Muhurat trading).
        session: the special session's hours; None for a holiday, or a special session whose
            times were not announced.
        provisional: assumed rather than taken from the exchange's list for that year.
        source: where the row comes from (an NSE circular, Upstox's API, or why it is assumed).
    """

    day: date
    name: str
    kind: str = HOLIDAY
    session: SpecialSession | None = None
    provisional: bool = False
    source: str = ""

    def __reduce__(self) -> tuple[object, ...]:
        return reduce_to_fields(self)

    def describe(self) -> str:
        """One line for people: the name, the special session's hours and the provisional mark."""
        text = self.name
        if self.kind == SPECIAL:
            hours = (
                f"{self.session.open:%H:%M}-{self.session.close:%H:%M} IST"
                if self.session is not None
                else "times not announced"
            )
            text = f"{text} [special session {hours}]"
        if self.provisional:
            text = f"{text} (provisional)"
        return text


def merge_calendar_days(
    base: Iterable[CalendarDay], newer: Iterable[CalendarDay]
) -> list[CalendarDay]:
    """The days of `base`, with every year that `newer` lists replaced by `newer`'s days of it.

    `newer` is the fresher source (Upstox's API over the shipped file): a year it lists is taken
    from it whole, so a holiday withdrawn by the exchange disappears too.
    """
    fresh = list(newer)
    years = {d.day.year for d in fresh}
    kept = [d for d in base if d.day.year not in years]
    return sorted([*kept, *fresh], key=lambda d: (d.day, d.kind))


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
        listed: Iterable[CalendarDay] = (),
        known_years: Iterable[int] | None = None,
    ) -> None:
        """Build a calendar.

        Args:
            holidays: weekdays with no regular session (weekends are closed anyway).
            special_sessions: days that trade with their own hours, even if a holiday or weekend
                (Muhurat trading); they replace the regular hours on that day.
            session_open: regular open (IST) instead of 09:15.
            session_close: regular close (IST) instead of 15:30.
            listed: the named days behind the calendar (for `days_of_year` and provenance).
            known_years: the years the calendar has a list for; None: the years of `holidays`,
                `special_sessions` and `listed`.

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
        self._listed = tuple(sorted(listed, key=lambda d: (d.day, d.kind)))
        if known_years is None:
            known_years = {d.year for d in self._holidays} | {d.year for d in self._special}
            known_years |= {d.day.year for d in self._listed}
        self._known_years = frozenset(known_years)
        # A year is provisional when every row listed for it is assumed, not published.
        provisional: set[int] = set()
        for year in self._known_years:
            rows = [d for d in self._listed if d.day.year == year]
            if rows and all(d.provisional for d in rows):
                provisional.add(year)
        self._provisional_years = frozenset(provisional)

    @classmethod
    def from_days(
        cls, days: Iterable[CalendarDay], *, known_years: Iterable[int] | None = None
    ) -> NseCalendar:
        """A calendar of listed days: holidays close the day; special sessions are listed only.

        A special session (Muhurat trading: an hour on a holiday or a Sunday) is not traded by
        the bot, whose entry window and square-off assume the regular session: its day counts as
        closed. Pass `special_sessions` to the constructor to trade one deliberately.
        """
        rows = list(days)
        closed = [d.day for d in rows if d.kind == HOLIDAY]
        return cls(closed, listed=rows, known_years=known_years)

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
            days = read_calendar_days(handle, str(path))
        if special_sessions is None:
            return cls.from_days(days)
        closed = [d.day for d in days if d.kind == HOLIDAY]
        return cls(closed, special_sessions=special_sessions, listed=days)

    @classmethod
    def default(cls) -> NseCalendar:
        """The calendar of the holiday file shipped with the package (NSE 2025-2026, and the
        provisional fixed-date holidays of 2027)."""
        return cls.from_days(shipped_calendar_days())

    @property
    def holidays(self) -> frozenset[date]:
        """The holiday dates this calendar was built with."""
        return self._holidays

    @property
    def covered_years(self) -> frozenset[int]:
        """The years the calendar has a list for: outside them it knows only weekends."""
        return self._known_years

    @property
    def provisional_years(self) -> frozenset[int]:
        """Known years whose list is assumed (fixed-date holidays), not the exchange's."""
        return self._provisional_years

    def knows(self, d: date) -> bool:
        """Whether the calendar has a list for `d`'s year (else a weekday only looks open)."""
        return d.year in self._known_years

    def is_provisional(self, d: date) -> bool:
        """Whether `d`'s year is known only provisionally."""
        return d.year in self._provisional_years

    def unknown_date_warning(self, d: date) -> str | None:
        """Why the bot must not trade on `d`, or None when the calendar knows `d`'s year."""
        if self.knows(d):
            return None
        years = ", ".join(str(y) for y in sorted(self._known_years)) or "none"
        return (
            f"the NSE calendar does not know {d.isoformat()} (it lists {years}): no new "
            "entries until the year's holidays are loaded (log in to Upstox and run "
            "`upstox-bot calendar --fetch`, or set HOLIDAYS_FILE)"
        )

    def days_of_year(self, year: int) -> list[CalendarDay]:
        """The listed holidays and special sessions of `year`, by date."""
        return [d for d in self._listed if d.day.year == year]

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


# The regular session, in ms after IST midnight; a calendar's own hours, and its special
# sessions, come from `NseCalendar.session_bounds_ms`.
SESSION_OPEN_MS: Final = time_of_day_ms(NseCalendar.SESSION_OPEN)
SESSION_CLOSE_MS: Final = time_of_day_ms(NseCalendar.SESSION_CLOSE)
SESSION_MS: Final = SESSION_CLOSE_MS - SESSION_OPEN_MS


def session_open_ms(day: date) -> int:
    """Epoch ms of the regular session's open (09:15 IST) on `day`, trading day or not."""
    return ist_midnight_ms(day) + SESSION_OPEN_MS


def shipped_calendar_days() -> list[CalendarDay]:
    """The days of the holiday file shipped with the package."""
    text = resources.files("upstox_bot.data").joinpath("nse_holidays.csv").read_text("utf-8")
    return read_calendar_days(io.StringIO(text, newline=""), "nse_holidays.csv")


def _clock_time(text: str, source: str, line: int, column: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"{source} line {line}: bad {column} {text!r}, expected HH:MM") from e


def read_calendar_days(handle: Iterable[str], source: str) -> list[CalendarDay]:
    """Read a holiday file: a `date` column (YYYY-MM-DD) and optional columns `weekday`
    (checked against the date), `description`, `kind` (holiday or special), `open` and `close`
    (HH:MM IST, a special session's hours), `status` (confirmed or provisional) and `source`.

    Raises:
        ValueError: no `date` column, or a malformed row (the line is named).
    """
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or "date" not in reader.fieldnames:
        raise ValueError(f"{source}: holiday file needs a 'date' column (YYYY-MM-DD)")
    days: list[CalendarDay] = []
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
        kind = (row.get("kind") or HOLIDAY).strip().lower()
        if kind not in (HOLIDAY, SPECIAL):
            raise ValueError(f"{source} line {line}: kind {kind!r} is not holiday or special")
        opens, closes = (row.get("open") or "").strip(), (row.get("close") or "").strip()
        session = None
        if kind == SPECIAL and opens and closes:
            session = SpecialSession(
                _clock_time(opens, source, line, "open"), _clock_time(closes, source, line, "close")
            )
            if session.close <= session.open:
                raise ValueError(f"{source} line {line}: close must be after open")
        status = (row.get("status") or "confirmed").strip().lower()
        if status not in ("confirmed", "provisional"):
            raise ValueError(
                f"{source} line {line}: status {status!r} is not confirmed or provisional"
            )
        days.append(
            CalendarDay(
                day=day,
                name=(row.get("description") or "").strip() or kind,
                kind=kind,
                session=session,
                provisional=status == "provisional",
                source=(row.get("source") or "").strip() or source,
            )
        )
    return days
