"""Business-time arithmetic: examples from the issue, DST in two zones, and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_sla_monitor.calendar import BusinessCalendar, CalendarError, Shift
from switchboard_sla_monitor.ical import IcsError, parse_holidays

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NINE_TO_FIVE = (Shift(9 * 60, 17 * 60),)


def office(zone: ZoneInfo = BERLIN, holidays: frozenset[date] = frozenset()) -> BusinessCalendar:
    """Monday to Friday, 09:00-17:00."""
    return BusinessCalendar("office", zone, (NINE_TO_FIVE,) * 5 + ((), ()), holidays)


def whole_days(zone: ZoneInfo) -> BusinessCalendar:
    """Every day 00:00-24:00 written as shifts (must behave exactly like 24/7)."""
    return BusinessCalendar("days", zone, ((Shift(0, 1440),),) * 7)


def local(  # noqa: PLR0917 - reads like datetime(...)
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def test_friday_afternoon_plus_one_hour_is_due_monday_morning() -> None:
    friday = local(BERLIN, 2026, 11, 20, 16, 30)
    assert friday.weekday() == 4
    due = office().add(friday, timedelta(hours=1))
    assert due == local(BERLIN, 2026, 11, 23, 9, 30)


def test_within_the_day_and_exactly_at_closing() -> None:
    cal = office()
    assert cal.add(local(BERLIN, 2026, 11, 18, 10), timedelta(hours=2)) == local(
        BERLIN, 2026, 11, 18, 12
    )
    assert cal.add(local(BERLIN, 2026, 11, 18, 16), timedelta(hours=1)) == local(
        BERLIN, 2026, 11, 18, 17
    )


def test_a_message_before_opening_starts_counting_at_opening() -> None:
    cal = office()
    assert cal.add(local(BERLIN, 2026, 11, 18, 6), timedelta(minutes=5)) == local(
        BERLIN, 2026, 11, 18, 9, 5
    )
    saturday = local(BERLIN, 2026, 11, 21, 12)
    assert cal.add(saturday, timedelta(minutes=5)) == local(BERLIN, 2026, 11, 23, 9, 5)


def test_twenty_four_seven_has_no_gap_at_midnight() -> None:
    start = datetime(2026, 11, 18, 23, 50, tzinfo=UTC)
    for cal in (BusinessCalendar.twenty_four_seven(), whole_days(ZoneInfo("UTC"))):
        assert cal.add(start, timedelta(minutes=20)) == datetime(2026, 11, 19, 0, 10, tzinfo=UTC)
        assert cal.elapsed(start, start + timedelta(minutes=20)) == timedelta(minutes=20)


def test_split_shifts_skip_the_lunch_break() -> None:
    split = (Shift(9 * 60, 13 * 60), Shift(14 * 60, 18 * 60))
    cal = BusinessCalendar("split", BERLIN, (split,) * 5 + ((), ()))
    start = local(BERLIN, 2026, 11, 18, 12, 30)
    assert cal.add(start, timedelta(hours=1)) == local(BERLIN, 2026, 11, 18, 14, 30)
    assert cal.elapsed(start, local(BERLIN, 2026, 11, 18, 14, 30)) == timedelta(hours=1)
    # 4.5 h left on Wednesday, 4 h on Thursday morning, 1.5 h after Thursday's lunch.
    assert cal.add(start, timedelta(hours=10)) == local(BERLIN, 2026, 11, 19, 15, 30)


def test_holidays_are_skipped() -> None:
    cal = office(holidays=frozenset({date(2026, 12, 24), date(2026, 12, 25)}))
    wednesday = local(BERLIN, 2026, 12, 23, 16)
    assert cal.add(wednesday, timedelta(hours=2)) == local(BERLIN, 2026, 12, 28, 10)


@pytest.mark.parametrize(
    ("zone", "day"),
    [(BERLIN, date(2026, 3, 29)), (NEW_YORK, date(2026, 3, 8))],
    ids=["europe-spring-forward", "america-spring-forward"],
)
def test_spring_forward_day_is_23_hours_long(zone: ZoneInfo, day: date) -> None:
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    next_midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    cal = whole_days(zone)
    assert cal.elapsed(midnight, next_midnight) == timedelta(hours=23)
    assert cal.add(midnight, timedelta(hours=23)) == next_midnight
    # 01:30 + 1 h of business time lands at 03:30 local: the hour 02:00-03:00 never was.
    due = cal.add(midnight + timedelta(hours=1, minutes=30), timedelta(hours=1))
    assert due is not None
    assert (due.astimezone(zone).hour, due.astimezone(zone).minute) == (3, 30)


@pytest.mark.parametrize(
    ("zone", "day"),
    [(BERLIN, date(2026, 10, 25)), (NEW_YORK, date(2026, 11, 1))],
    ids=["europe-fall-back", "america-fall-back"],
)
def test_fall_back_day_is_25_hours_long(zone: ZoneInfo, day: date) -> None:
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    next_midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    cal = whole_days(zone)
    assert cal.elapsed(midnight, next_midnight) == timedelta(hours=25)
    assert cal.add(midnight, timedelta(hours=25)) == next_midnight


@pytest.mark.parametrize(
    ("zone", "sunday"),
    [
        (BERLIN, date(2026, 3, 29)),
        (BERLIN, date(2026, 10, 25)),
        (NEW_YORK, date(2026, 3, 8)),
        (NEW_YORK, date(2026, 11, 1)),
    ],
    ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall"],
)
def test_office_hours_keep_their_wall_clock_times_across_dst(zone: ZoneInfo, sunday: date) -> None:
    """Friday 16:30 + 1 h over a DST weekend is Monday 09:30 local, whatever the offset."""
    friday = datetime.combine(sunday - timedelta(days=2), datetime.min.time(), tzinfo=zone)
    due = office(zone).add(friday.replace(hour=16, minute=30), timedelta(hours=1))
    assert due is not None
    monday = due.astimezone(zone)
    assert (monday.date(), monday.hour, monday.minute) == (sunday + timedelta(days=1), 9, 30)
    # The business day itself is eight real hours long.
    opening = datetime.combine(sunday + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    assert office(zone).elapsed(opening, opening + timedelta(days=1)) == timedelta(hours=8)


def test_pause_and_resume_stop_business_time() -> None:
    cal = BusinessCalendar.twenty_four_seven()
    start = datetime(2026, 11, 18, 10, tzinfo=UTC)
    pause = (start + timedelta(minutes=10), start + timedelta(minutes=40))
    assert cal.add(start, timedelta(hours=1), [pause]) == start + timedelta(hours=1, minutes=30)
    assert cal.elapsed(start, start + timedelta(hours=1), [pause]) == timedelta(minutes=30)
    # While the pause lasts (no end yet) the deadline is unknown.
    assert cal.add(start, timedelta(hours=1), [(pause[0], None)]) is None
    # A pause that ends before the target is used up changes nothing after it.
    assert cal.add(start, timedelta(minutes=5), [(pause[0], None)]) == start + timedelta(minutes=5)


def test_a_calendar_with_no_time_left_says_so() -> None:
    every_day_a_holiday = frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(4 * 366))
    cal = office(holidays=every_day_a_holiday)
    with pytest.raises(CalendarError, match=r"no .* of business time"):
        cal.add(local(BERLIN, 2026, 1, 1, 9), timedelta(hours=1))


def test_shifts_must_be_ordered_and_not_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        BusinessCalendar("bad", BERLIN, ((Shift(540, 780), Shift(720, 900)),) + ((),) * 6)
    with pytest.raises(ValueError, match="start < end"):
        Shift(600, 600)
    with pytest.raises(ValueError, match="at least one shift"):
        BusinessCalendar("empty", BERLIN)


# --------------------------------------------------------------------------- iCalendar

ICS = """BEGIN:VCALENDAR
VERSION:2.0
BEGIN:VEVENT
SUMMARY:Christmas
DTSTART;VALUE=DATE:20261225
DTEND;VALUE=DATE:20261227
END:VEVENT
BEGIN:VEVENT
SUMMARY:Thanksgiving
DTSTART;VALUE=DATE:20241128
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH
 ;COUNT=5
END:VEVENT
BEGIN:VEVENT
SUMMARY:New year
DTSTART:20250101T000000Z
RRULE:FREQ=YEARLY
EXDATE;VALUE=DATE:20270101
END:VEVENT
END:VCALENDAR
"""


def test_holidays_from_icalendar_with_ranges_rules_and_exceptions() -> None:
    days = parse_holidays(ICS, NEW_YORK)
    assert {date(2026, 12, 25), date(2026, 12, 26)} <= days
    assert date(2026, 12, 27) not in days
    assert date(2026, 11, 26) in days  # fourth Thursday of November 2026
    assert date(2028, 11, 23) in days
    assert date(2029, 11, 22) not in days  # COUNT=5 ended in 2028
    # 2025-01-01T00:00Z is New Year's Eve in New York.
    assert date(2024, 12, 31) in days
    assert date(2026, 12, 31) not in days or date(2027, 1, 1) not in days


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("SUMMARY:a text file\n", "not an iCalendar file"),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR\n",
            "without DTSTART",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:2026-12-25\nEND:VEVENT\nEND:VCALENDAR\n",
            r"h\.ics:3: bad date",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\nRRULE:FREQ=SOMETIMES\n"
            "END:VEVENT\nEND:VCALENDAR\n",
            r"h\.ics:4: unsupported RRULE",
        ),
    ],
)
def test_bad_icalendar_files_name_file_and_line(text: str, problem: str) -> None:
    with pytest.raises(IcsError, match=problem):
        parse_holidays(text, BERLIN, source="h.ics")


# --------------------------------------------------------------------------- properties

instants = st.datetimes(
    min_value=datetime(2025, 1, 1),  # noqa: DTZ001 - hypothesis adds the zone
    max_value=datetime(2028, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
#: Up to five days of business time: a calendar generated below has at least 2 h a week.
amounts = st.integers(min_value=0, max_value=5 * 24 * 3600).map(lambda s: timedelta(seconds=s))
zones = st.sampled_from([BERLIN, NEW_YORK, ZoneInfo("Asia/Kolkata"), ZoneInfo("UTC")])
shift_lists = st.lists(
    st.tuples(st.integers(0, 1439), st.integers(1, 720)), min_size=1, max_size=3
).map(
    lambda pairs: tuple(
        sorted({Shift(s, min(1440, s + n)) for s, n in pairs}, key=lambda x: x.start)
    )
)


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    if draw(st.booleans()) and draw(st.booleans()):
        return BusinessCalendar.twenty_four_seven()
    zone = draw(zones)
    days = []
    for _ in range(7):
        shifts = draw(st.one_of(st.just(()), shift_lists))
        merged: list[Shift] = []
        for shift in shifts:  # drop overlaps so the calendar is valid
            if not merged or shift.start >= merged[-1].end:
                merged.append(shift)
        days.append(tuple(merged))
    if sum((s.end - s.start) for shifts in days for s in shifts) < 120:
        days[0] = NINE_TO_FIVE
    holidays = frozenset(draw(st.lists(st.dates(date(2025, 1, 1), date(2029, 1, 1)), max_size=20)))
    return BusinessCalendar("generated", zone, tuple(days), holidays)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, amounts)
def test_elapsed_until_the_due_instant_is_the_amount(
    cal: BusinessCalendar, start: datetime, amount: timedelta
) -> None:
    due = cal.add(start, amount)
    assert due is not None
    assert due >= start
    assert cal.elapsed(start, due) == amount


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, amounts, amounts)
def test_adding_in_two_steps_is_adding_once(
    cal: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    middle = cal.add(start, first)
    assert middle is not None
    assert cal.add(middle, second) == cal.add(start, first + second) or second == timedelta(0)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, amounts, st.integers(0, 10 * 24 * 3600))
def test_business_time_never_exceeds_wall_time_and_grows_with_the_end(
    cal: BusinessCalendar, start: datetime, amount: timedelta, extra: int
) -> None:
    end = start + amount
    later = end + timedelta(seconds=extra)
    assert timedelta(0) <= cal.elapsed(start, end) <= end - start
    assert cal.elapsed(start, end) <= cal.elapsed(start, later)


@settings(max_examples=100, deadline=None)
@given(instants, amounts, zones)
def test_whole_days_in_any_zone_equal_twenty_four_seven(
    start: datetime, amount: timedelta, zone: ZoneInfo
) -> None:
    assert whole_days(zone).add(start, amount) == start + amount


@settings(max_examples=100, deadline=None)
@given(instants, amounts, st.integers(0, 48 * 3600), st.integers(1, 48 * 3600))
def test_a_pause_moves_the_deadline_by_its_overlap(
    start: datetime, amount: timedelta, offset: int, length: int
) -> None:
    cal = BusinessCalendar.twenty_four_seven()
    pause = (start + timedelta(seconds=offset), start + timedelta(seconds=offset + length))
    due = cal.add(start, amount, [pause])
    plain = start + amount
    assert due is not None
    overlap = max(timedelta(0), min(pause[1], due) - max(pause[0], start))
    assert due == plain + overlap
