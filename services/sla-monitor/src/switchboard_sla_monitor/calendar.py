"""Business-hours calendars and business-time arithmetic (pure: no clock, no I/O).

A calendar is a time zone, a list of shifts per weekday (several for split shifts), a
set of holidays (local dates) or "always open" (24/7). Shifts are local wall-clock
times; each is turned into a real interval of instants for each date, so a shift on a
daylight-saving day lasts the real time that passes (a 00:00-24:00 day is 23 or 25 hours
long). Local times that do not exist (spring forward) are read with the offset before
the change, i.e. moved forward by the gap, as a wall clock would show them; ambiguous
times (fall back) mean their first occurrence.

All arithmetic is in exact ``timedelta`` on time-zone-aware instants. Pauses (the
conversation waits on the customer) are intervals of instants that do not count, the
last one possibly open-ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

#: Searching for business time stops this far ahead (a calendar with no open hours left).
HORIZON = timedelta(days=3 * 366)
_DAY = timedelta(days=1)
_FAR = datetime(9000, 1, 1, tzinfo=UTC)

Interval = tuple[datetime, datetime]
#: A pause: from, and until (None while it lasts).
Pause = tuple[datetime, datetime | None]


class CalendarError(ValueError):
    """A calendar cannot answer (for example: no business time within the horizon)."""


@dataclass(frozen=True, slots=True, order=True)
class Shift:
    """Open from ``start`` to ``end`` minutes after local midnight (end ≤ 1440 = 24:00)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= 1440:
            raise ValueError(f"a shift must satisfy 00:00 <= start < end <= 24:00, got {self}")

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _local_instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    extra, minutes = divmod(minutes, 1440)
    local = datetime.combine(day + timedelta(days=extra), time(minutes // 60, minutes % 60))
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class BusinessCalendar:
    """When the support team works; see the module docs for the time rules."""

    name: str
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    #: Shifts for Monday (index 0) to Sunday (6), sorted and not overlapping.
    weekly: tuple[tuple[Shift, ...], ...] = ((),) * 7
    holidays: frozenset[date] = frozenset()
    always_open: bool = False

    def __post_init__(self) -> None:
        if len(self.weekly) != 7:
            raise ValueError("weekly needs exactly 7 days (Monday to Sunday)")
        for shifts in self.weekly:
            for a, b in pairwise(shifts):
                if b.start < a.end:
                    raise ValueError(f"shifts {a} and {b} overlap or are not in order")
        if not self.always_open and not any(self.weekly):
            raise ValueError("a calendar needs at least one shift, or always_open")

    @classmethod
    def twenty_four_seven(cls, name: str = "24x7") -> BusinessCalendar:
        return cls(name=name, always_open=True)

    def open_intervals(self, start: datetime) -> Iterator[Interval]:
        """Business intervals (UTC instants) in time order, clipped to begin at ``start``.

        Never yields empty or overlapping intervals; stops at ``start + HORIZON``.
        """
        start = _utc(start)
        if self.always_open:
            yield start, start + HORIZON
            return
        day = start.astimezone(self.zone).date() - _DAY
        last_end = start
        horizon = start + HORIZON
        while True:
            if day not in self.holidays:
                for shift in self.weekly[day.weekday()]:
                    begin = max(_local_instant(day, shift.start, self.zone), last_end)
                    end = _local_instant(day, shift.end, self.zone)
                    if end > begin:
                        yield begin, end
                        last_end = end
            day += _DAY
            if _local_instant(day, 0, self.zone) > horizon:
                return

    def working_intervals(
        self, start: datetime, pauses: Sequence[Pause] = ()
    ) -> Iterator[Interval]:
        """Business intervals from ``start`` with the pauses cut out."""
        return _subtract(self.open_intervals(start), merge_pauses(pauses))

    def add(
        self, start: datetime, amount: timedelta, pauses: Sequence[Pause] = ()
    ) -> datetime | None:
        """The instant when ``amount`` of business time has passed since ``start``.

        Returns None when an open-ended pause stops the clock before that (the deadline
        is unknown until the pause ends). Raises ``CalendarError`` when the calendar has
        no business time left within ``HORIZON``.
        """
        if amount < timedelta(0):
            raise ValueError("amount must not be negative")
        remaining = amount
        open_ended = any(end is None for _, end in pauses)
        for begin, end in self.working_intervals(start, pauses):
            available = end - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        if open_ended:
            return None
        raise CalendarError(
            f"calendar {self.name!r}: no {amount} of business time within {HORIZON.days} days"
        )

    def elapsed(self, start: datetime, end: datetime, pauses: Sequence[Pause] = ()) -> timedelta:
        """Business time between two instants, pauses excluded (zero if end ≤ start)."""
        end = _utc(end)
        total = timedelta(0)
        for begin, stop in self.working_intervals(start, pauses):
            if begin >= end:
                break
            total += min(stop, end) - begin
        return total


def merge_pauses(pauses: Iterable[Pause]) -> list[Interval]:
    """Pauses as sorted, disjoint intervals (an open end becomes the far future)."""
    ordered = sorted((_utc(s), _FAR if e is None else _utc(e)) for s, e in pauses)
    merged: list[Interval] = []
    for begin, end in ordered:
        if end <= begin:
            continue
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def _subtract(intervals: Iterable[Interval], cuts: Sequence[Interval]) -> Iterator[Interval]:
    index = 0
    for begin, end in intervals:
        while index < len(cuts) and cuts[index][1] <= begin:
            index += 1
        cursor, j = begin, index
        while j < len(cuts) and cuts[j][0] < end:
            cut_begin, cut_end = cuts[j]
            if cut_begin > cursor:
                yield cursor, cut_begin
            cursor = max(cursor, cut_end)
            if cursor >= end:
                break
            j += 1
        if cursor < end:
            yield cursor, end
        if cursor >= _FAR:
            return


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: SLA arithmetic needs time-zone-aware instants")
    return moment.astimezone(UTC)
