"""Clocks and the NSE calendar: holidays from the shipped file, weekends, IST session hours."""

from __future__ import annotations

import copy
import pickle
import time as wall
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from upstox_bot.clock import (
    DAY_MS,
    SESSION_CLOSE_MS,
    SESSION_MS,
    SESSION_OPEN_MS,
    CalendarDay,
    Clock,
    LiveClock,
    NseCalendar,
    SimClock,
    SpecialSession,
    ist_date_of_ms,
    ist_day_start_ms,
    ist_midnight_ms,
    merge_calendar_days,
    minute_of_ist_day,
    session_open_ms,
    time_of_day_ms,
)
from upstox_bot.domain import IST, datetime_to_ms

HOLIDAY_CSV = Path(__file__).parents[2] / "src" / "upstox_bot" / "data" / "nse_holidays.csv"

THU_JAN_15 = date(2026, 1, 15)  # ad-hoc closure (Maharashtra municipal elections)
FRI_JAN_16 = date(2026, 1, 16)


@pytest.fixture(scope="module")
def cal() -> NseCalendar:
    return NseCalendar.default()


def ist(d: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(d, time(hour, minute, second, micro), tzinfo=IST)


# --- calendar: days -------------------------------------------------------------------------


def test_default_calendar_closes_on_the_ad_hoc_jan_15_holiday_and_opens_the_next_day(
    cal: NseCalendar,
) -> None:
    assert not cal.is_trading_day(THU_JAN_15)
    assert cal.is_trading_day(FRI_JAN_16)
    assert cal.is_trading_day(date(2026, 1, 14))


def test_default_calendar_carries_the_shipped_file(cal: NseCalendar) -> None:
    assert len(cal.holidays) == 31  # 14 in 2025, 16 in 2026, 1 provisional in 2027
    assert cal.covered_years == frozenset({2025, 2026, 2027})
    assert date(2025, 12, 25) in cal.holidays
    assert date(2026, 11, 24) in cal.holidays  # Guru Nanak Jayanti, a Tuesday
    assert NseCalendar.from_csv(HOLIDAY_CSV).holidays == cal.holidays


def test_weekends_are_closed_even_without_holidays() -> None:
    cal = NseCalendar()
    assert not cal.is_trading_day(date(2026, 1, 17))  # Saturday
    assert not cal.is_trading_day(date(2026, 1, 18))  # Sunday
    assert cal.is_trading_day(date(2026, 1, 19))  # Monday


def test_next_trading_day_skips_weekend_and_republic_day(cal: NseCalendar) -> None:
    friday = date(2026, 1, 23)
    assert cal.next_trading_day(friday) == date(2026, 1, 27)  # Mon 26 Jan closed
    assert cal.previous_trading_day(date(2026, 1, 27)) == friday
    assert cal.next_trading_day(date(2026, 1, 14)) == FRI_JAN_16
    assert cal.previous_trading_day(FRI_JAN_16) == date(2026, 1, 14)


def test_next_trading_day_is_strictly_after_a_trading_day(cal: NseCalendar) -> None:
    assert cal.next_trading_day(date(2026, 1, 13)) == date(2026, 1, 14)
    assert cal.previous_trading_day(date(2026, 1, 14)) == date(2026, 1, 13)


def test_trading_days_lists_open_days_inclusive(cal: NseCalendar) -> None:
    days = cal.trading_days(date(2026, 1, 12), date(2026, 1, 18))
    assert days == [date(2026, 1, 12), date(2026, 1, 13), date(2026, 1, 14), FRI_JAN_16]
    assert cal.trading_days(date(2026, 1, 18), date(2026, 1, 12)) == []


def test_a_calendar_closed_for_ever_raises_instead_of_looping() -> None:
    start = date(2026, 1, 1)
    cal = NseCalendar(start + timedelta(days=i) for i in range(400))
    with pytest.raises(ValueError, match="no trading day"):
        cal.next_trading_day(start)


# --- calendar: hours ------------------------------------------------------------------------


def test_session_open_and_close_are_ist_and_convert_to_utc(cal: NseCalendar) -> None:
    opens = cal.session_open(FRI_JAN_16)
    closes = cal.session_close(FRI_JAN_16)
    assert opens.utcoffset() == timedelta(hours=5, minutes=30)
    assert opens.astimezone(UTC) == datetime(2026, 1, 16, 3, 45, tzinfo=UTC)
    assert closes.astimezone(UTC) == datetime(2026, 1, 16, 10, 0, tzinfo=UTC)
    assert cal.session_bounds_ms(FRI_JAN_16) == (datetime_to_ms(opens), datetime_to_ms(closes))
    assert closes - opens == timedelta(hours=6, minutes=15)


def test_session_hours_of_a_holiday_raise(cal: NseCalendar) -> None:
    with pytest.raises(ValueError, match="not an NSE trading day"):
        cal.session_open(THU_JAN_15)
    with pytest.raises(ValueError, match="not an NSE trading day"):
        cal.session_close(date(2026, 1, 17))


def test_is_open_from_the_open_inclusive_to_the_close_exclusive(cal: NseCalendar) -> None:
    assert not cal.is_open(ist(FRI_JAN_16, 9, 14, 59))
    assert cal.is_open(ist(FRI_JAN_16, 9, 15))
    assert cal.is_open(ist(FRI_JAN_16, 15, 29, 59, 999_000))
    assert not cal.is_open(ist(FRI_JAN_16, 15, 30))
    assert cal.is_open(datetime(2026, 1, 16, 3, 45, tzinfo=UTC))  # 09:15 IST
    assert not cal.is_open(ist(THU_JAN_15, 11))
    assert not cal.is_open(ist(date(2026, 1, 17), 11))


def test_pre_open_is_not_open(cal: NseCalendar) -> None:
    at = ist(FRI_JAN_16, 9, 5)
    assert cal.is_pre_open(at)
    assert not cal.is_open(at)
    assert not cal.is_pre_open(ist(FRI_JAN_16, 9, 8))
    assert not cal.is_pre_open(ist(THU_JAN_15, 9, 5))


def test_trading_date_is_the_ist_date(cal: NseCalendar) -> None:
    late_utc = datetime(2026, 1, 16, 20, 0, tzinfo=UTC)  # 01:30 IST on the 17th
    assert cal.trading_date(late_utc) == date(2026, 1, 17)
    assert cal.trading_date(ist(FRI_JAN_16, 0, 0)) == FRI_JAN_16


def test_minutes_into_session(cal: NseCalendar) -> None:
    assert cal.minutes_into_session(ist(FRI_JAN_16, 10, 15)) == 60.0
    assert cal.minutes_into_session(datetime(2026, 1, 16, 3, 45, 30, tzinfo=UTC)) == 0.5
    assert cal.minutes_into_session(ist(FRI_JAN_16, 9, 0)) == -15.0
    assert cal.minutes_into_session(ist(FRI_JAN_16, 15, 30)) == 375.0
    with pytest.raises(ValueError, match="not an NSE trading day"):
        cal.minutes_into_session(ist(THU_JAN_15, 10))


def test_naive_datetimes_are_refused(cal: NseCalendar) -> None:
    naive = datetime(2026, 1, 16, 10, 0)  # noqa: DTZ001 - the point of the test
    for call in (cal.is_open, cal.trading_date, cal.minutes_into_session, cal.is_pre_open):
        with pytest.raises(ValueError, match="naive"):
            call(naive)


def test_session_hours_can_be_overridden() -> None:
    cal = NseCalendar(session_open=time(10, 0), session_close=time(15, 0))
    assert cal.session_open(FRI_JAN_16) == ist(FRI_JAN_16, 10)
    assert not cal.is_open(ist(FRI_JAN_16, 9, 30))
    assert not cal.is_open(ist(FRI_JAN_16, 15, 10))
    with pytest.raises(ValueError, match="after"):
        NseCalendar(session_open=time(15, 0), session_close=time(9, 0))


def test_special_session_opens_a_holiday_with_its_own_hours() -> None:
    muhurat = date(2025, 10, 21)
    cal = NseCalendar.from_csv(
        HOLIDAY_CSV, special_sessions={muhurat: SpecialSession(time(13, 45), time(14, 45))}
    )
    assert cal.is_trading_day(muhurat)
    assert cal.session_open(muhurat) == ist(muhurat, 13, 45)
    assert cal.is_open(ist(muhurat, 14, 0))
    assert not cal.is_open(ist(muhurat, 10, 0))
    assert not cal.is_trading_day(date(2025, 10, 22))
    assert not NseCalendar.default().is_trading_day(muhurat)


# --- calendar: files ------------------------------------------------------------------------


def test_from_csv_reads_a_trader_supplied_file(tmp_path: Path) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text("date,description\n2027-01-26,Republic Day\n\n", encoding="utf-8")
    cal = NseCalendar.from_csv(path)
    assert cal.holidays == frozenset({date(2027, 1, 26)})
    assert not cal.is_trading_day(date(2027, 1, 26))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("day,description\n2027-01-26,x\n", "'date' column"),
        ("date,description\n26-01-2027,x\n", "line 2: bad date"),
        ("date,weekday\n2027-01-26,Monday\n", "is a Tuesday, not a Monday"),
    ],
)
def test_from_csv_rejects_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        NseCalendar.from_csv(path)


def test_shipped_holiday_weekdays_match_their_dates() -> None:
    # from_csv checks every `weekday` cell; loading the shipped file proves it consistent.
    cal = NseCalendar.from_csv(HOLIDAY_CSV)
    assert all(day.weekday() < 5 for day in cal.holidays)


# --- calendar: 2027, provisional years, unknown dates, listing ------------------------------


def test_republic_day_2027_is_a_provisional_holiday_of_the_shipped_calendar(
    cal: NseCalendar,
) -> None:
    tue_jan_26 = date(2027, 1, 26)
    assert tue_jan_26.weekday() == 1  # a Tuesday
    assert not cal.is_trading_day(tue_jan_26)
    assert cal.next_trading_day(date(2027, 1, 25)) == date(2027, 1, 27)
    assert cal.knows(tue_jan_26)
    assert cal.is_provisional(tue_jan_26)
    assert cal.provisional_years == frozenset({2027})
    assert not cal.is_provisional(date(2026, 6, 1))
    (row,) = cal.days_of_year(2027)
    assert row.source  # the source is written beside the data
    assert row.describe() == "Republic Day (provisional)"


def test_2027_lists_only_the_fixed_date_holidays_that_fall_on_weekdays(cal: NseCalendar) -> None:
    # 1 May (Sat), 15 Aug (Sun), 2 Oct (Sat) and 25 Dec (Sat) 2027 are closed as weekends anyway.
    fixed = [date(2027, 5, 1), date(2027, 8, 15), date(2027, 10, 2), date(2027, 12, 25)]
    assert [d.weekday() for d in fixed] == [5, 6, 5, 5]
    assert [d.day for d in cal.days_of_year(2027)] == [date(2027, 1, 26)]
    assert not any(cal.is_trading_day(d) for d in fixed)


def test_a_year_without_a_list_is_unknown_and_says_why(cal: NseCalendar) -> None:
    monday = date(2028, 1, 3)
    assert not cal.knows(monday)
    assert cal.is_trading_day(monday)  # only looks open: the risk checks refuse entries
    warning = cal.unknown_date_warning(monday)
    assert warning is not None
    assert "does not know 2028-01-03" in warning
    assert cal.unknown_date_warning(date(2026, 6, 1)) is None


def test_special_sessions_of_the_file_are_listed_but_not_traded(cal: NseCalendar) -> None:
    sunday = date(2026, 11, 8)  # Muhurat trading, times not announced
    assert not cal.is_trading_day(sunday)
    rows = {(d.day, d.kind): d for d in cal.days_of_year(2025)}
    muhurat = rows[(date(2025, 10, 21), "special")]
    assert muhurat.session == SpecialSession(time(13, 45), time(14, 45))
    assert muhurat.describe() == "Muhurat trading (Samvat 2082) [special session 13:45-14:45 IST]"
    assert not cal.is_trading_day(date(2025, 10, 21))  # the regular session was closed
    listed = [d for d in cal.days_of_year(2026) if d.day == sunday]
    assert [d.describe() for d in listed] == [
        "Muhurat trading (Diwali Laxmi Pujan; timings to be notified) "
        "[special session times not announced]"
    ]


def test_a_fetched_year_replaces_that_year_of_the_file_whole() -> None:
    base = [
        CalendarDay(day=date(2026, 1, 26), name="Republic Day"),
        CalendarDay(day=date(2027, 1, 26), name="Republic Day", provisional=True),
    ]
    fetched = [
        CalendarDay(day=date(2027, 1, 26), name="Republic Day", source="upstox"),
        CalendarDay(day=date(2027, 3, 22), name="Holi", source="upstox"),
    ]
    merged = merge_calendar_days(base, fetched)
    assert [(d.day, d.provisional) for d in merged] == [
        (date(2026, 1, 26), False),
        (date(2027, 1, 26), False),
        (date(2027, 3, 22), False),
    ]
    cal = NseCalendar.from_days(merged)
    assert not cal.is_trading_day(date(2027, 3, 22))
    assert not cal.is_provisional(date(2027, 3, 22))


def test_from_csv_reads_kinds_hours_status_and_source(tmp_path: Path) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text(
        "date,description,kind,open,close,status,source\n"
        "2028-01-26,Republic Day,holiday,,,provisional,assumed\n"
        "2028-10-17,Muhurat,special,18:00,19:00,confirmed,circular X\n",
        encoding="utf-8",
    )
    cal = NseCalendar.from_csv(path)
    assert cal.covered_years == frozenset({2028})
    assert not cal.is_provisional(date(2028, 5, 2))  # one confirmed row: the list is NSE's
    holiday, special = cal.days_of_year(2028)
    assert (holiday.provisional, holiday.source) == (True, "assumed")
    assert special.session == SpecialSession(time(18, 0), time(19, 0))
    assert cal.is_trading_day(date(2028, 10, 17))  # a Tuesday: the listed session is not a closure


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2028-01-26,x,closure,,,confirmed", "kind 'closure'"),
        ("2028-01-26,x,special,18:00,17:00,confirmed", "close must be after open"),
        ("2028-01-26,x,special,6pm,19:00,confirmed", "bad open"),
        ("2028-01-26,x,holiday,,,maybe", "status 'maybe'"),
    ],
)
def test_from_csv_rejects_bad_kinds_hours_and_status(
    tmp_path: Path, row: str, message: str
) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text(f"date,description,kind,open,close,status\n{row}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        NseCalendar.from_csv(path)


def test_calendar_values_pickle_through_their_constructor() -> None:
    day = CalendarDay(
        day=date(2027, 1, 26), name="x", kind="special", session=SpecialSession(time(9), time(10))
    )
    assert pickle.loads(pickle.dumps(day)) == day  # noqa: S301 - our own bytes
    assert copy.copy(day) == day


# --- clocks ---------------------------------------------------------------------------------


def test_sim_clock_moves_forward_only() -> None:
    start = ist(FRI_JAN_16, 9, 15)
    clock: Clock = SimClock(start)
    assert clock.now() == start
    assert clock.now_ms() == datetime_to_ms(start)
    assert isinstance(clock, SimClock)
    clock.advance(1.5)
    assert clock.now_ms() == datetime_to_ms(start) + 1500
    assert clock.now() == start + timedelta(seconds=1.5)
    clock.advance_to(ist(FRI_JAN_16, 10))
    assert clock.now() == ist(FRI_JAN_16, 10)
    clock.advance_to(clock.now_ms())  # staying put is fine
    clock.advance_to(clock.now_ms() + 250)
    assert clock.now() == ist(FRI_JAN_16, 10, 0, 0, 250_000)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(start)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(clock.now_ms() - 1)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-0.001)
    assert clock.now() == ist(FRI_JAN_16, 10, 0, 0, 250_000)


def test_sim_clock_reports_ist_whatever_zone_it_started_in() -> None:
    clock = SimClock(datetime(2026, 1, 16, 3, 45, tzinfo=UTC))
    assert clock.now().utcoffset() == timedelta(hours=5, minutes=30)
    assert clock.now() == ist(FRI_JAN_16, 9, 15)


def test_sim_clock_refuses_a_naive_start() -> None:
    with pytest.raises(ValueError, match="naive"):
        SimClock(datetime(2026, 1, 16, 9, 15))  # noqa: DTZ001 - the point of the test


def test_live_clock_is_aware_ist_wall_time() -> None:
    clock: Clock = LiveClock()
    before = wall.time()
    now = clock.now()
    now_ms = clock.now_ms()
    after = wall.time()
    assert now.utcoffset() == timedelta(hours=5, minutes=30)
    assert before - 1 <= now.timestamp() <= after + 1
    assert before * 1000 - 1000 <= now_ms <= after * 1000 + 1000


# --- session time in epoch ms ---------------------------------------------------------------------


def test_the_regular_session_is_the_calendars() -> None:
    calendar = NseCalendar.default()
    day = date(2026, 1, 16)
    assert (
        time_of_day_ms(calendar.session_open_time),
        time_of_day_ms(calendar.session_close_time),
    ) == (SESSION_OPEN_MS, SESSION_CLOSE_MS)
    assert SESSION_MS == 375 * 60_000
    assert (session_open_ms(day), session_open_ms(day) + SESSION_MS) == (
        calendar.session_bounds_ms(day)
    )


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 16, 0, 0, tzinfo=IST),
        datetime(2026, 1, 16, 5, 29, 59, 999_000, tzinfo=IST),
        datetime(2026, 1, 16, 5, 30, tzinfo=IST),  # 00:00 UTC
        datetime(2026, 1, 16, 9, 15, tzinfo=IST),
        datetime(2026, 1, 16, 23, 59, 59, 999_000, tzinfo=IST),
        datetime(1969, 12, 31, 23, 0, tzinfo=IST),  # before the epoch
    ],
)
def test_ist_days_and_minutes_of_an_instant(at: datetime) -> None:
    ms = datetime_to_ms(at)
    midnight = datetime.combine(at.date(), time(0), tzinfo=IST)
    assert ist_date_of_ms(ms) == at.date()
    assert ist_day_start_ms(ms) == datetime_to_ms(midnight) == ist_midnight_ms(at.date())
    assert minute_of_ist_day(ms) == at.hour * 60 + at.minute
    assert ist_day_start_ms(ms) + DAY_MS == ist_midnight_ms(at.date() + timedelta(days=1))
