"""The KPI report of a period, computed from conversations' facts and clocks (pure).

Each figure belongs to the period in which its moment falls, and to the group in force
at that moment (channel and queue of the clock or of the routing decision in force,
agent group of who last replied, else who held the conversation):

- ``opened``: conversations whose first customer message is in the period;
- ``resolved``: resolutions in the period (a conversation reopened and resolved again
  counts twice); resolution times are those of these resolutions;
- first response: first-response clocks stopped by an agent reply in the period;
  ``within_target`` counts clocks met (at their stop) and breached (at their deadline,
  also while still running), as the Prometheus counters do;
- FCR: conversations whose first resolution is in the period; ``pending`` ones are still
  inside their reopen window at ``now``;
- CSAT and NPS: ratings given in the period.

Quantiles are nearest-rank (the median of 1, 2, 3, 4 is 2): every one is a real value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from switchboard_common.agent_groups import AgentGroups
from switchboard_common.contract import FeedbackKind
from switchboard_sla_monitor.clocks import ClockState, labels_at
from switchboard_sla_monitor.facts import Fact, FeedbackFact
from switchboard_sla_monitor.kpis import agent_at, first_contact, opened_at
from switchboard_sla_monitor.store import ConversationRecord

GroupBy = Literal["channel", "queue", "agent_group"]
GROUP_BY: tuple[GroupBy, ...] = ("channel", "queue", "agent_group")
#: Wall-clock resolution within this counts as "resolved within 24 h".
DAY = 86400.0


class Quantiles(BaseModel):
    median: float | None
    p90: float | None


class Durations(BaseModel):
    count: int
    wall_seconds: Quantiles
    business_seconds: Quantiles


class FirstResponse(Durations):
    met: int
    breached: int
    within_target_percent: float | None


class Resolution(Durations):
    within_24h: int
    within_24h_percent: float | None


class Fcr(BaseModel):
    fcr: int
    not_fcr: int
    pending: int
    rate_percent: float | None


class Csat(BaseModel):
    count: int
    mean: float | None
    satisfied: int
    satisfied_percent: float | None


class Nps(BaseModel):
    count: int
    promoters: int
    passives: int
    detractors: int
    score: float | None


class GroupFigures(BaseModel):
    group: str
    opened: int
    resolved: int
    first_response: FirstResponse
    resolution: Resolution
    fcr: Fcr
    csat: Csat
    nps: Nps


class KpiReport(BaseModel):
    """The answer of ``GET /reports/kpis``."""

    from_: datetime = Field(serialization_alias="from")
    to: datetime
    by: GroupBy | None
    generated_at: datetime
    fcr_reopen_window_seconds: float
    groups: list[GroupFigures]


@dataclass
class _Tally:
    opened: int = 0
    first_wall: list[float] = field(default_factory=list)
    first_business: list[float] = field(default_factory=list)
    met: int = 0
    breached: int = 0
    resolution_wall: list[float] = field(default_factory=list)
    resolution_business: list[float] = field(default_factory=list)
    fcr: dict[str, int] = field(default_factory=lambda: {"fcr": 0, "not_fcr": 0, "pending": 0})
    csat: list[int] = field(default_factory=list)
    nps: list[int] = field(default_factory=list)


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def percent(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 2)


@dataclass(frozen=True)
class _Conversation:
    """One conversation's facts, with how to name its group at any moment."""

    facts: list[Fact]
    by: GroupBy | None
    groups: AgentGroups

    def group(self, at: datetime, clock: ClockState | None = None) -> str:
        if self.by is None:
            return "all"
        if self.by == "agent_group":
            return self.groups.label(agent_at(self.facts, at))
        labels = labels_at(self.facts, at)
        if self.by == "channel":
            channel = clock.channel if clock else labels.channel
            return channel.value if channel else "unknown"
        return (clock.queue if clock else labels.queue) or "none"


def kpi_report(
    records: Iterable[ConversationRecord],
    start: datetime,
    end: datetime,
    now: datetime,
    by: GroupBy | None,
    *,
    groups: AgentGroups,
    fcr_window: timedelta,
) -> list[GroupFigures]:
    """The figures of [start, end) per group, sorted by group name (see module docs)."""
    tallies: dict[str, _Tally] = {}

    def inside(at: datetime | None) -> bool:
        return at is not None and start <= at < end

    def tally(name: str) -> _Tally:
        return tallies.setdefault(name, _Tally())

    for record in records:
        conv = _Conversation(list(record.facts.values()), by, groups)
        opened = opened_at(conv.facts)
        if opened is not None and inside(opened):
            tally(conv.group(opened)).opened += 1
        for clock in record.clocks:
            _count_clock(clock, conv, inside, now, tally)
        fcr = first_contact(conv.facts, fcr_window)
        if fcr is not None and inside(fcr.resolved_at):
            outcome = fcr.outcome if fcr.decided(now) else "pending"
            tally(conv.group(fcr.resolved_at)).fcr[outcome] += 1
        for fact in conv.facts:
            if isinstance(fact, FeedbackFact) and inside(fact.at):
                scores = tally(conv.group(fact.at))
                target = scores.csat if fact.feedback_kind is FeedbackKind.CSAT else scores.nps
                target.append(fact.score)
    return [_figures(name, tallies[name]) for name in sorted(tallies)]


def _count_clock(
    clock: ClockState,
    conv: _Conversation,
    inside: Callable[[datetime | None], bool],
    now: datetime,
    tally: Callable[[str], _Tally],
) -> None:
    metric = clock.metric.value
    if metric == "first_response":
        if clock.stop_reason == "reply" and inside(clock.stopped_at):
            assert clock.stopped_at is not None  # noqa: S101 - inside() checked it
            t = tally(conv.group(clock.stopped_at, clock))
            t.first_wall.append(clock.wall_seconds or 0.0)
            t.first_business.append(clock.achieved_seconds or 0.0)
        if clock.outcome == "met" and inside(clock.stopped_at):
            assert clock.stopped_at is not None  # noqa: S101 - inside() checked it
            tally(conv.group(clock.stopped_at, clock)).met += 1
        elif (
            clock.due_at is not None
            and clock.due_at <= now
            and inside(clock.due_at)
            and (clock.is_open or clock.outcome == "breached")
        ):
            tally(conv.group(clock.due_at, clock)).breached += 1
    elif metric == "resolution" and clock.stopped_at is not None and inside(clock.stopped_at):
        t = tally(conv.group(clock.stopped_at, clock))
        t.resolution_wall.append(clock.wall_seconds or 0.0)
        t.resolution_business.append(clock.achieved_seconds or 0.0)


def _durations(wall: list[float], business: list[float]) -> dict[str, object]:
    return {
        "count": len(wall),
        "wall_seconds": Quantiles(median=quantile(wall, 0.5), p90=quantile(wall, 0.9)),
        "business_seconds": Quantiles(median=quantile(business, 0.5), p90=quantile(business, 0.9)),
    }


def _figures(name: str, t: _Tally) -> GroupFigures:
    within = sum(1 for s in t.resolution_wall if s <= DAY)
    decided = t.fcr["fcr"] + t.fcr["not_fcr"]
    satisfied = sum(1 for s in t.csat if s >= 4)
    promoters = sum(1 for s in t.nps if s >= 9)
    detractors = sum(1 for s in t.nps if s <= 6)
    return GroupFigures(
        group=name,
        opened=t.opened,
        resolved=len(t.resolution_wall),
        first_response=FirstResponse.model_validate(
            {
                **_durations(t.first_wall, t.first_business),
                "met": t.met,
                "breached": t.breached,
                "within_target_percent": percent(t.met, t.met + t.breached),
            }
        ),
        resolution=Resolution.model_validate(
            {
                **_durations(t.resolution_wall, t.resolution_business),
                "within_24h": within,
                "within_24h_percent": percent(within, len(t.resolution_wall)),
            }
        ),
        fcr=Fcr(
            fcr=t.fcr["fcr"],
            not_fcr=t.fcr["not_fcr"],
            pending=t.fcr["pending"],
            rate_percent=percent(t.fcr["fcr"], decided),
        ),
        csat=Csat(
            count=len(t.csat),
            mean=round(sum(t.csat) / len(t.csat), 3) if t.csat else None,
            satisfied=satisfied,
            satisfied_percent=percent(satisfied, len(t.csat)),
        ),
        nps=Nps(
            count=len(t.nps),
            promoters=promoters,
            passives=len(t.nps) - promoters - detractors,
            detractors=detractors,
            score=None if not t.nps else round(100.0 * (promoters - detractors) / len(t.nps), 2),
        ),
    )
