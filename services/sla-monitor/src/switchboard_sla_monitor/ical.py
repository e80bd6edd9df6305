"""Holidays from iCalendar files (RFC 5545): the dates that VEVENTs cover.

Supported: ``DTSTART`` as a date (``VALUE=DATE``) or a date-time (its local date in the
calendar's zone, ``Z`` and ``TZID`` honoured), ``DTEND`` (exclusive) or ``DURATION`` in
days, ``RRULE`` (any rule ``dateutil`` understands, e.g. ``FREQ=YEARLY;BYMONTH=11;
BYDAY=4TH`` for Thanksgiving) and ``EXDATE``. Rules without ``COUNT`` or ``UNTIL`` are
expanded for ``RECURRENCE_YEARS`` years after their start. Errors name the file and line.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

RECURRENCE_YEARS = 60
_MAX_DAYS_PER_EVENT = 366
_MAX_OCCURRENCES = 10_000


class IcsError(ValueError):
    """An iCalendar file that cannot be read; the message names the file and line."""


def holidays_from_ics(path: Path, zone: ZoneInfo) -> frozenset[date]:
    """Every local date covered by an event of the file. Raises ``IcsError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise IcsError(f"{path}: cannot read holiday file ({error})") from None
    return parse_holidays(text, zone, source=str(path))


def parse_holidays(text: str, zone: ZoneInfo, *, source: str = "<ics>") -> frozenset[date]:
    """The dates covered by the VEVENTs of an iCalendar text (pure)."""
    days: set[date] = set()
    event: dict[str, tuple[int, str, dict[str, str]]] | None = None
    exdates: list[tuple[int, str, dict[str, str]]] = []
    saw_calendar = False
    for number, line in _unfold(text):
        name, params, value = _split(line, number, source)
        if name == "BEGIN" and value.upper() == "VCALENDAR":
            saw_calendar = True
        elif name == "BEGIN" and value.upper() == "VEVENT":
            event, exdates = {}, []
        elif name == "END" and value.upper() == "VEVENT":
            if event is None:
                raise IcsError(f"{source}:{number}: END:VEVENT without BEGIN:VEVENT")
            days |= _event_days(event, exdates, zone, source, number)
            event = None
        elif event is not None:
            if name == "EXDATE":
                exdates.append((number, value, params))
            elif name in ("DTSTART", "DTEND", "DURATION", "RRULE"):
                event[name] = (number, value, params)
    if not saw_calendar:
        raise IcsError(f"{source}: not an iCalendar file (no BEGIN:VCALENDAR)")
    if event is not None:
        raise IcsError(f"{source}: a VEVENT is not closed (END:VEVENT missing)")
    return frozenset(days)


def _unfold(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw[:1] in (" ", "\t") and lines:
            first, previous = lines[-1]
            lines[-1] = (first, previous + raw[1:])
        elif raw.strip():
            lines.append((number, raw.rstrip("\r")))
    return lines


def _split(line: str, number: int, source: str) -> tuple[str, dict[str, str], str]:
    head, colon, value = line.partition(":")
    if not colon:
        raise IcsError(f"{source}:{number}: expected NAME:VALUE, got {line[:60]!r}")
    name, *raw_params = head.split(";")
    params = {}
    for item in raw_params:
        key, _, val = item.partition("=")
        params[key.upper()] = val.strip('"')
    return name.upper(), params, value.strip()


def _moment(
    value: str, params: dict[str, str], zone: ZoneInfo, source: str, number: int
) -> date | datetime:
    try:
        if params.get("VALUE", "").upper() == "DATE" or re.fullmatch(r"\d{8}", value):
            return datetime.strptime(value, "%Y%m%d").date()  # noqa: DTZ007 - a date, no time
        if value.endswith("Z"):
            moment = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        else:
            tz = ZoneInfo(params["TZID"]) if "TZID" in params else zone
            moment = datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=tz)
    except (ValueError, ZoneInfoNotFoundError, KeyError) as error:
        raise IcsError(f"{source}:{number}: bad date or time {value!r} ({error})") from None
    return moment.astimezone(zone)


def _local_date(moment: date | datetime) -> date:
    return moment.date() if isinstance(moment, datetime) else moment


def _event_days(
    event: dict[str, tuple[int, str, dict[str, str]]],
    exdates: list[tuple[int, str, dict[str, str]]],
    zone: ZoneInfo,
    source: str,
    end_line: int,
) -> set[date]:
    if "DTSTART" not in event:
        raise IcsError(f"{source}:{end_line}: VEVENT without DTSTART")
    number, value, params = event["DTSTART"]
    first = _local_date(_moment(value, params, zone, source, number))
    length = 1
    if "DTEND" in event:
        n, v, p = event["DTEND"]
        end = _moment(v, p, zone, source, n)
        # A date end is exclusive; a date-time end covers the day it falls on (if not 00:00).
        last = (
            _local_date(end)
            if isinstance(end, datetime) and end.time() != end.time().min
            else (_local_date(end) - timedelta(days=1))
        )
        length = (last - first).days + 1
    elif "DURATION" in event:
        n, v, _ = event["DURATION"]
        match = re.fullmatch(r"P(\d+)D", v)
        if match is None:
            raise IcsError(f"{source}:{n}: only whole-day DURATION (PnD) is supported, got {v!r}")
        length = max(1, int(match.group(1)))
    if not 1 <= length <= _MAX_DAYS_PER_EVENT:
        raise IcsError(f"{source}:{number}: event ends before it starts or is longer than a year")
    starts = [first]
    if "RRULE" in event:
        n, rule, _ = event["RRULE"]
        starts = _expand(rule, first, source, n)
    excluded = {
        _local_date(_moment(piece, p, zone, source, n))
        for n, v, p in exdates
        for piece in v.split(",")
    }
    return {
        start + timedelta(days=offset)
        for start in starts
        if start not in excluded
        for offset in range(length)
    }


def _expand(rule: str, first: date, source: str, number: int) -> list[date]:
    dtstart = datetime(first.year, first.month, first.day)  # noqa: DTZ001 - floating dates
    try:
        recurrence = rrulestr(rule, dtstart=dtstart, ignoretz=True)
        bounded = "COUNT=" in rule.upper() or "UNTIL=" in rule.upper()
        limit = dtstart.replace(year=dtstart.year + RECURRENCE_YEARS)
        occurrences = recurrence if bounded else recurrence.between(dtstart, limit, inc=True)
        dates = list(islice(occurrences, _MAX_OCCURRENCES))
    except (ValueError, TypeError) as error:
        raise IcsError(f"{source}:{number}: unsupported RRULE {rule!r} ({error})") from None
    return [d.date() for d in dates]
