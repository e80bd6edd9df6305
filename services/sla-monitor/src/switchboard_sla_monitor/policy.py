"""SLA policies and calendars from YAML, validated at start with clear errors.

A policy file has ``calendars`` (by name) and an ordered list of ``policies``; the first
policy whose ``match`` accepts a conversation applies. See the service README and the
shipped ``default_policy.yaml`` for the format. ``load_policies`` raises ``PolicyError``
whose message names the file, the field and the problem.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from switchboard_common.contract.enums import Channel, Priority, SlaMetric
from switchboard_sla_monitor.calendar import BusinessCalendar, Shift
from switchboard_sla_monitor.ical import IcsError, holidays_from_ics

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DURATION = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?")
_SHIFT = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


class PolicyError(ValueError):
    """The policy file is invalid; the message says where and what."""


def parse_duration(value: object) -> timedelta:
    """``90`` (seconds), ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` → a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match and any(match.groups()):
            d, h, m, s = (int(g) if g else 0 for g in match.groups())
            return timedelta(days=d, hours=h, minutes=m, seconds=s)
    raise ValueError(f"expected a duration such as 5m, 1h30m, 2d or seconds, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Spec):
    target: Duration
    warn_before: Duration = timedelta(0)
    #: Overrides the policy's calendar for this target.
    calendar: str | None = None


class MatchSpec(_Spec):
    """Every listed field must match (any of its values); an absent field matches all."""

    channel: list[Channel] | None = None
    priority: list[Priority] | None = None
    queue: list[str] | None = None
    tenant: list[str] | None = None
    customer_tier: list[str] | None = None


class PolicySpec(_Spec):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    match: MatchSpec = MatchSpec()
    calendar: str
    targets: dict[SlaMetric, TargetSpec] = Field(min_length=1)


class HolidaySpec(_Spec):
    date: date
    name: str | None = None


class CalendarSpec(_Spec):
    timezone: str = "UTC"
    always_open: bool = False
    #: Weekday name → shifts such as ``"09:00-13:00"``.
    hours: dict[str, list[str]] = Field(default_factory=dict)
    holidays: list[date | HolidaySpec] = Field(default_factory=list)
    #: iCalendar files, relative to the policy file.
    holiday_files: list[str] = Field(default_factory=list)


class PolicyFileSpec(_Spec):
    calendars: dict[str, CalendarSpec] = Field(min_length=1)
    policies: list[PolicySpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Labels:
    """What policies match on: the conversation's current labels (None when unknown)."""

    channel: Channel | None = None
    priority: Priority | None = None
    queue: str | None = None
    tenant: str | None = None
    customer_tier: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One SLA target of a policy, in business time on ``calendar``."""

    metric: SlaMetric
    target: timedelta
    warn_before: timedelta
    calendar: BusinessCalendar


@dataclass(frozen=True)
class Policy:
    name: str
    match: MatchSpec
    targets: Mapping[SlaMetric, Target]

    def matches(self, labels: Labels) -> bool:
        m = self.match
        return all(
            allowed is None or value in allowed
            for allowed, value in (
                (m.channel, labels.channel),
                (m.priority, labels.priority),
                (m.queue, labels.queue),
                (m.tenant, labels.tenant),
                (m.customer_tier, labels.customer_tier),
            )
        )


@dataclass(frozen=True)
class PolicySet:
    """Ordered policies: the first that matches applies."""

    policies: tuple[Policy, ...]
    calendars: Mapping[str, BusinessCalendar]
    source: str = "<memory>"
    #: Changes whenever a target, match, calendar or holiday changes (not for comments).
    fingerprint: str = ""

    def select(self, labels: Labels) -> Policy | None:
        """The first matching policy, or None (the conversation then has no clocks)."""
        return next((p for p in self.policies if p.matches(labels)), None)


def load_policies(path: Path) -> PolicySet:
    """Read and validate a policy file. Raises ``PolicyError`` naming file, field, problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PolicyError(f"{path}: cannot read policy file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"{path}: not valid YAML ({error})") from None
    return build_policies(raw, source=str(path), base=path.parent)


def build_policies(raw: Any, *, source: str = "<memory>", base: Path | None = None) -> PolicySet:
    """Validate a parsed policy document (see ``load_policies``)."""
    try:
        spec = PolicyFileSpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{_location(e['loc'])}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)[:10]
        )
        raise PolicyError(f"{source}: {problems}") from None
    calendars = {
        name: _calendar(name, cal, source, base or Path.cwd())
        for name, cal in spec.calendars.items()
    }
    seen: set[str] = set()
    policies = []
    for index, policy in enumerate(spec.policies):
        where = f"{source}: policies[{index}] ({policy.name})"
        if policy.name in seen:
            raise PolicyError(f"{where}.name: duplicate policy name")
        seen.add(policy.name)
        targets = {}
        for metric, target in policy.targets.items():
            field = f"{where}.targets.{metric.value}"
            calendar_name = target.calendar or policy.calendar
            if calendar_name not in calendars:
                known = ", ".join(sorted(calendars))
                raise PolicyError(
                    f"{field}.calendar: unknown calendar {calendar_name!r} (known: {known})"
                )
            if target.target <= timedelta(0):
                raise PolicyError(f"{field}.target: must be longer than zero")
            if not timedelta(0) <= target.warn_before < target.target:
                raise PolicyError(
                    f"{field}.warn_before: must be at least zero and shorter than the target "
                    f"({target.warn_before} is not shorter than {target.target})"
                )
            targets[metric] = Target(
                metric, target.target, target.warn_before, calendars[calendar_name]
            )
        policies.append(Policy(policy.name, policy.match, targets))
    digest = hashlib.sha256(spec.model_dump_json().encode())
    for name in sorted(calendars):
        digest.update(f"{name}:{sorted(calendars[name].holidays)}".encode())
    return PolicySet(tuple(policies), calendars, source, digest.hexdigest())


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def _calendar(name: str, spec: CalendarSpec, source: str, base: Path) -> BusinessCalendar:
    where = f"{source}: calendars.{name}"
    try:
        zone = ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"{where}.timezone: unknown time zone {spec.timezone!r}") from None
    if spec.always_open and spec.hours:
        raise PolicyError(f"{where}: always_open and hours exclude each other")
    weekly: list[tuple[Shift, ...]] = [() for _ in WEEKDAYS]
    for day, shifts in spec.hours.items():
        if day.lower() not in WEEKDAYS:
            raise PolicyError(f"{where}.hours.{day}: not a weekday ({', '.join(WEEKDAYS)})")
        weekly[WEEKDAYS.index(day.lower())] = _shifts(shifts, f"{where}.hours.{day}")
    if not spec.always_open and not any(weekly):
        raise PolicyError(f"{where}: needs hours (at least one shift) or always_open: true")
    holidays = {h.date if isinstance(h, HolidaySpec) else h for h in spec.holidays}
    for file in spec.holiday_files:
        try:
            holidays |= holidays_from_ics(base / file, zone)
        except IcsError as error:
            raise PolicyError(f"{where}.holiday_files: {error}") from None
    return BusinessCalendar(
        name=name,
        zone=zone,
        weekly=tuple(weekly),
        holidays=frozenset(holidays),
        always_open=spec.always_open,
    )


def _shifts(texts: list[str], where: str) -> tuple[Shift, ...]:
    parsed = []
    for text in texts:
        match = _SHIFT.fullmatch(text.strip())
        if match is None:
            raise PolicyError(f"{where}: {text!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise PolicyError(f"{where}: {text!r} is not a time of day")
        try:
            parsed.append(Shift(h1 * 60 + m1, h2 * 60 + m2))
        except ValueError:
            raise PolicyError(
                f"{where}: {text!r} must start before it ends (end ≤ 24:00)"
            ) from None
    parsed.sort()
    for a, b in pairwise(parsed):
        if b.start < a.end:
            raise PolicyError(f"{where}: shifts {a} and {b} overlap")
    return tuple(parsed)
