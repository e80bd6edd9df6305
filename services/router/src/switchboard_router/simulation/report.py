"""The report's numbers (pure): two replays of one trace side by side.

Per queue (where the conversation was first routed) and channel: waiting time from
the start of waiting until an agent has it (assigned: an offer that may still expire
does not count) or it is resolved from the queue (p50, p90; a conversation nobody took
by the end of the trace counts with its wait so far, so a policy that strands work looks
no better for it), first-response SLA attainment, conversations moved to overflow and
those still waiting (queued or only offered) at the end. Per channel: agent occupancy,
the capacity held by offered or assigned conversations over the capacity of the agents
online. Then the decisions that
changed between the two replays, with a few examples and their reasons; and, when the
trace holds the router's recorded decisions, how many the current policy's replay
reproduced (a check of the replay itself).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from switchboard_common.contract import ASSIGNMENTS, Channel
from switchboard_common.contract.events import AssignmentDecision
from switchboard_router.assignment.model import HOLDING, RouteStatus
from switchboard_router.assignment.store import Decision
from switchboard_router.simulation.replay import Outcome
from switchboard_router.simulation.trace import Trace

#: First-response targets by channel (seconds) for every priority, on a 24/7 clock: the
#: normal-priority targets of the SLA monitor's default policy (minutes on chat, an hour
#: on social media, a day by email). Not the monitor's own figures: it measures chat and
#: social in business hours and gives urgent work shorter targets, and the router does
#: not read its policy; ``--first-response-target`` sets others.
FIRST_RESPONSE_TARGETS: dict[str, float] = {
    str(Channel.WHATSAPP): 300,
    str(Channel.MESSENGER): 300,
    str(Channel.TELEGRAM): 300,
    str(Channel.WEBCHAT): 300,
    str(Channel.INSTAGRAM): 3600,
    str(Channel.X): 3600,
    str(Channel.EMAIL): 86400,
}
EXAMPLES = 5

#: What one published decision looks like in a comparison.
Signature = tuple[str, str | None, str, str]


@dataclass(frozen=True)
class Row:
    """One queue and channel in one replay."""

    conversations: int
    wait_p50: float | None
    wait_p90: float | None
    sla_met: int
    sla_missed: int
    overflowed: int
    still_waiting: int

    @property
    def sla_attainment(self) -> float | None:
        judged = self.sla_met + self.sla_missed
        return None if judged == 0 else self.sla_met / judged


@dataclass(frozen=True)
class Figures:
    """One replay's numbers."""

    label: str
    rows: dict[tuple[str, str], Row]
    occupancy: dict[str, float | None]
    #: Every conversation's wait (seconds), for the plots.
    waits: list[float]
    scripts: dict[str, int]
    dropped: dict[str, int]


@dataclass(frozen=True)
class Example:
    """A conversation decided differently, at its first differing decision."""

    conversation_id: str
    current: Decision | None
    candidate: Decision | None
    wait_current: float | None
    wait_candidate: float | None
    #: The decisions both replays made alike before it (what it had waited through).
    before: tuple[Decision, ...] = ()


@dataclass(frozen=True)
class Report:
    window: tuple[datetime, datetime]
    current: Figures
    candidate: Figures
    conversations: int
    changed: int
    changes: dict[str, int]
    examples: list[Example]
    #: (reproduced, recorded) decisions, when the trace holds recorded ones.
    fidelity: tuple[int, int] | None
    undecodable: int
    problems: list[str] = field(default_factory=list)
    targets: dict[str, float] = field(default_factory=dict)
    donors: int = 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank: a value that occurred, the same on every machine."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _seconds(a: datetime, b: datetime) -> float:
    return round((b - a).total_seconds(), 3)


#: Where a conversation's first wait ends: an agent has it, or it was closed unserved.
SERVED_OR_CLOSED = frozenset({RouteStatus.ASSIGNED, RouteStatus.RESOLVED})


def wait_of(steps: Sequence[Decision], end: datetime) -> float | None:
    """Seconds from the start of waiting until an agent has the conversation or it is
    resolved from the queue (to ``end`` if neither)."""
    if not steps:
        return None
    since = steps[0].state.waiting_since
    for decision in steps:
        if decision.state.status in SERVED_OR_CLOSED:
            return _seconds(since, decision.state.decided_at)
    return _seconds(since, end)


def still_waiting(steps: Sequence[Decision]) -> bool:
    """Queued, or only offered, when the trace ends."""
    return bool(steps) and steps[-1].state.status in (RouteStatus.WAITING, RouteStatus.OFFERED)


def resolved_at(steps: Sequence[Decision]) -> datetime | None:
    for decision in steps:
        if decision.state.status is RouteStatus.RESOLVED:
            return decision.state.decided_at
    return None


@dataclass
class _Group:
    waits: list[float] = field(default_factory=list)
    met: int = 0
    missed: int = 0
    overflowed: int = 0
    still_waiting: int = 0

    def row(self) -> Row:
        return Row(
            conversations=len(self.waits),
            wait_p50=percentile(self.waits, 0.5),
            wait_p90=percentile(self.waits, 0.9),
            sla_met=self.met,
            sla_missed=self.missed,
            overflowed=self.overflowed,
            still_waiting=self.still_waiting,
        )


def figures(outcome: Outcome, targets: Mapping[str, float]) -> Figures:
    """One replay's numbers (see the module's docstring)."""
    overflow = outcome.policy.overflow.name
    groups: dict[tuple[str, str], _Group] = {}
    waits: list[float] = []
    held: dict[str, float] = {}
    for cid, steps in outcome.decisions.items():
        first = steps[0].state
        group = groups.setdefault((first.queue, str(first.channel)), _Group())
        wait = wait_of(steps, outcome.end)
        if wait is not None:
            group.waits.append(wait)
            waits.append(wait)
        if first.queue != overflow and any(d.state.queue == overflow for d in steps):
            group.overflowed += 1
        if still_waiting(steps):
            group.still_waiting += 1
        verdict = first_response_met(outcome, cid, targets)
        if verdict is True:
            group.met += 1
        elif verdict is False:
            group.missed += 1
        for before, after in zip(steps, [*steps[1:], None], strict=True):
            if before.state.status in HOLDING:
                until = outcome.end if after is None else after.state.decided_at
                start = max(before.state.decided_at, outcome.start)
                channel = str(before.state.channel)
                seconds = max(0.0, (until - start).total_seconds())
                held[channel] = held.get(channel, 0.0) + seconds
    channels = sorted(set(outcome.capacity_seconds) | set(held))
    occupancy = {
        c: (held.get(c, 0.0) / outcome.capacity_seconds[c])
        if outcome.capacity_seconds.get(c)
        else None
        for c in channels
    }
    return Figures(
        outcome.label,
        {key: group.row() for key, group in sorted(groups.items())},
        occupancy,
        sorted(waits),
        dict(sorted(outcome.scripts.items())),
        dict(sorted(outcome.dropped.items())),
    )


def first_response_met(outcome: Outcome, cid: str, targets: Mapping[str, float]) -> bool | None:
    """Whether the first reply came within the channel's target of the message that
    opened the conversation. None when it cannot be told: the conversation opened before
    the trace (its first message here is a follow-up), or it has no reply and neither
    the trace's end nor its resolution came after the target (a resolution stops the
    clock, as in the SLA monitor)."""
    opened = outcome.opened.get(cid)
    if opened is None or opened.kind != "opened":
        return None
    target = targets.get(str(opened.channel))
    if target is None:
        return None
    replied = outcome.first_reply.get(cid)
    if replied is not None:
        return (replied - opened.received_at).total_seconds() <= target
    stopped = resolved_at(outcome.decisions.get(cid, ())) or outcome.end
    if (stopped - opened.received_at).total_seconds() > target:
        return False
    return None


def signature(decision: Decision) -> Signature:
    state = decision.state
    agent = state.agent_id if state.status in HOLDING else None
    return (str(decision.kind), agent, state.queue, str(state.priority))


def published(steps: Sequence[Decision]) -> list[Decision]:
    return [d for d in steps if d.kind is not None]


def _change_kind(a: Sequence[Decision], b: Sequence[Decision]) -> str:
    """What differs first between two conversations' decisions, in words."""
    agents_a = [d.state.agent_id for d in a if d.state.status in HOLDING]
    agents_b = [d.state.agent_id for d in b if d.state.status in HOLDING]
    if bool(agents_a) != bool(agents_b):
        return "assigned in one replay only"
    if agents_a[:1] != agents_b[:1]:
        return "another first agent"
    if [d.state.queue for d in a] != [d.state.queue for d in b]:
        return "another queue or overflow"
    if [d.state.priority for d in a] != [d.state.priority for d in b]:
        return "another priority"
    return "the same agent at another step"


def compare(
    current: Outcome,
    candidate: Outcome,
    trace: Trace,
    *,
    targets: Mapping[str, float] | None = None,
    donors: int = 0,
) -> Report:
    """The report of two replays of ``trace``."""
    targets = dict(FIRST_RESPONSE_TARGETS if targets is None else targets)
    ids = sorted(set(current.decisions) | set(candidate.decisions))
    changes: Counter[str] = Counter()
    examples: list[tuple[float, str, Example]] = []
    for cid in ids:
        a = published(current.decisions.get(cid, []))
        b = published(candidate.decisions.get(cid, []))
        if [signature(d) for d in a] == [signature(d) for d in b]:
            continue
        changes[_change_kind(a, b)] += 1
        at = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if signature(x) != signature(y)),
            min(len(a), len(b)),
        )
        wait_a = wait_of(current.decisions.get(cid, []), current.end)
        wait_b = wait_of(candidate.decisions.get(cid, []), candidate.end)
        example = Example(
            cid,
            a[at] if at < len(a) else None,
            b[at] if at < len(b) else None,
            wait_a,
            wait_b,
            tuple(a[:at]),
        )
        gain = abs((wait_a or 0.0) - (wait_b or 0.0))
        examples.append((-gain, cid, example))
    examples.sort(key=lambda e: (e[0], e[1]))
    return Report(
        window=(current.start, current.end),
        current=figures(current, targets),
        candidate=figures(candidate, targets),
        conversations=len(ids),
        changed=sum(changes.values()),
        changes=dict(sorted(changes.items())),
        examples=[e for _, _, e in examples[:EXAMPLES]],
        fidelity=fidelity(current, trace),
        undecodable=trace.undecodable,
        problems=[f"line {p.line}: {p.reason}: {p.message}" for p in trace.problems],
        targets=targets,
        donors=donors,
    )


def fidelity(outcome: Outcome, trace: Trace) -> tuple[int, int] | None:
    """How many of the router's recorded decisions the replay made the same way (kind,
    agent, queue, priority at the same step); None without recorded decisions."""
    recorded: dict[tuple[str, int], Signature] = {}
    for record in trace.records:
        event = record.event
        if record.topic == ASSIGNMENTS and isinstance(event, AssignmentDecision):
            kind = event.ce_type.rsplit(".", 1)[-1]
            recorded[(event.conversation_id, event.seq)] = (
                kind,
                event.agent_id,
                event.queue,
                str(event.priority),
            )
    if not recorded:
        return None
    replayed = {
        (cid, d.state.seq): signature(d)
        for cid, steps in outcome.decisions.items()
        for d in published(steps)
    }
    same = sum(1 for key, value in recorded.items() if replayed.get(key) == value)
    return same, len(recorded)


#: The reason's fields that explain a decision best, shown first (the rest follow, sorted).
LEADING_REASONS = (
    "trigger",
    "why",
    "step",
    "required",
    "waited_seconds",
    "eligible_agents",
    "sticky",
    "score",
)


def reason_text(decision: Decision | None, limit: int = 300) -> str:
    """A decision's reason as compact JSON, the telling fields first (a fixed order: the
    same text every time), cut at ``limit`` characters."""
    if decision is None:
        return "(no such decision)"
    reason = decision.reason
    ordered = {k: reason[k] for k in LEADING_REASONS if k in reason}
    ordered.update({k: reason[k] for k in sorted(reason) if k not in ordered})
    text = json.dumps(ordered, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"
