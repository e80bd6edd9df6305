"""SLA clocks of a conversation, derived from its facts (pure: no clock, no I/O).

``derive`` replays a conversation's facts in the order of their own timestamps (never in
the order they were consumed) and returns its clocks:

- ``first_response`` (cycle ``1``) starts at the earliest customer message (or, before
  the router's activity arrived, at the ``waiting_since`` of a routing decision) and
  stops at the first agent reply after it;
- ``next_response`` (cycle ``m<hash of the message>``) starts at the first customer
  message after a reply and stops at the next reply;
- ``resolution`` (cycle ``e<n>``, one per open/reopen episode) starts when the
  conversation opens or reopens and stops when it is resolved;
- resolving stops every open clock; a customer message after a resolution reopens the
  conversation (as the router's ``reopened`` activity says) and starts new clocks;
- a reply with ``awaiting_customer`` puts the conversation in that status: while the
  status is one of the pause statuses, clocks pause, until the customer writes again, an
  agent replies without it, or the conversation is resolved.

Deadlines come from the policy that matches the conversation's labels (channel, the
priority and queue of the routing decision in force, tenant, customer tier), so a new
priority, queue or policy file recomputes every open clock. Auto-submitted customer
messages (out-of-office replies) start nothing and end no pause.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from switchboard_common.contract import Channel, Priority, SlaAtRisk, SlaBreached, SlaMetric
from switchboard_sla_monitor.calendar import Pause
from switchboard_sla_monitor.facts import (
    AssignmentFact,
    EmittedFact,
    Fact,
    MessageFact,
    ReopenedFact,
    ReplyFact,
    ResolvedFact,
    emission_id,
)
from switchboard_sla_monitor.policy import Labels, PolicySet

AWAITING_CUSTOMER = "awaiting_customer"
EmissionKind = Literal["at_risk", "breached"]


class ClockState(BaseModel):
    """One SLA clock: when it started and stopped, its deadline and outcome."""

    model_config = ConfigDict(frozen=True)

    metric: SlaMetric
    cycle: str
    policy: str
    channel: Channel | None
    priority: Priority | None
    queue: str | None
    started_at: AwareDatetime
    stopped_at: AwareDatetime | None = None
    #: ``reply`` or ``resolved`` once stopped.
    stop_reason: str | None = None
    target_seconds: float
    #: None while an open-ended pause holds the clock (the deadline is not known yet).
    due_at: AwareDatetime | None
    warn_at: AwareDatetime | None
    #: Business seconds from start to stop, pauses excluded (once stopped).
    achieved_seconds: float | None = None
    outcome: Literal["met", "breached"] | None = None
    paused: bool = False

    @property
    def id(self) -> str:
        return f"{self.metric.value}:{self.cycle}"

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None

    @property
    def wall_seconds(self) -> float | None:
        """Wall-clock seconds from start to stop, pauses and closed hours included."""
        if self.stopped_at is None:
            return None
        return (self.stopped_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class _Span:
    metric: SlaMetric
    cycle: str
    started_at: datetime
    stopped_at: datetime | None = None
    stop_reason: str | None = None

    def stop(self, at: datetime, reason: str) -> _Span:
        return _Span(self.metric, self.cycle, self.started_at, at, reason)


@dataclass(frozen=True, slots=True)
class Emission:
    """An at-risk or breach event that is due for one clock."""

    id: str
    conversation_id: str
    kind: EmissionKind
    clock: ClockState

    def event(self) -> SlaAtRisk | SlaBreached:
        """The payload: ``at`` is when the clock crossed the line (deterministic)."""
        c = self.clock
        model = SlaAtRisk if self.kind == "at_risk" else SlaBreached
        at = c.warn_at if self.kind == "at_risk" else c.due_at
        assert c.due_at is not None  # noqa: S101 - pending_emissions only lists such clocks
        assert at is not None  # noqa: S101 - same
        return model(
            conversation_id=self.conversation_id,
            metric=c.metric,
            policy=c.policy,
            due_at=c.due_at,
            at=at,
            channel=c.channel,
            priority=c.priority,
            queue=c.queue,
            cycle=c.cycle,
        )


_RANK = {"reopened": 0, "message": 1, "reply": 2, "resolved": 3}


def _timeline(facts: Sequence[Fact]) -> list[tuple[datetime, int, str, Fact]]:
    events: list[tuple[datetime, int, str, Fact]] = []
    messages = [f for f in facts if isinstance(f, MessageFact) and f.awaits_answer]
    for fact in facts:
        match fact:
            case MessageFact() if fact.awaits_answer:
                events.append((fact.received_at, _RANK["message"], fact.key, fact))
            case ReplyFact():
                events.append((fact.sent_at, _RANK["reply"], fact.key, fact))
            case ResolvedFact():
                events.append((fact.at, _RANK["resolved"], fact.key, fact))
            case ReopenedFact():
                events.append((fact.at, _RANK["reopened"], fact.key, fact))
    if not messages:
        # The routing decision arrived before the router's activity: start the clocks
        # provisionally from when the conversation began waiting.
        waiting = [f for f in facts if isinstance(f, AssignmentFact) and f.waiting_since]
        if waiting:
            first = min(waiting, key=lambda f: (f.seq, f.key))
            assert first.waiting_since is not None  # noqa: S101 - filtered above
            synthetic = MessageFact(
                message_id="~waiting-since",
                received_at=first.waiting_since,
                activity="opened",
                channel=first.channel,
            )
            events.append((first.waiting_since, _RANK["message"], synthetic.key, synthetic))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return events


def spans(  # noqa: PLR0912 - one replay loop reads better than split state handling
    facts: Sequence[Fact], pause_statuses: Collection[str]
) -> tuple[list[_Span], list[Pause]]:
    """Replay the facts in time order: the clock spans and the pauses."""
    pausing = AWAITING_CUSTOMER in pause_statuses
    done: list[_Span] = []
    resolution: _Span | None = None
    response: _Span | None = None
    episode, first_started, resolved = -1, False, True
    pause_start: datetime | None = None
    pauses: list[Pause] = []

    def end_pause(at: datetime) -> None:
        nonlocal pause_start
        if pause_start is not None:
            pauses.append((pause_start, at))
            pause_start = None

    for at, _, _, fact in _timeline(facts):
        if isinstance(fact, MessageFact | ReopenedFact) and resolved:
            episode += 1
            resolution = _Span(SlaMetric.RESOLUTION, f"e{episode}", at)
            resolved = False
        if isinstance(fact, MessageFact):
            end_pause(at)
            if response is None:
                if not first_started:
                    response, first_started = _Span(SlaMetric.FIRST_RESPONSE, "1", at), True
                else:
                    digest = hashlib.sha256(fact.message_id.encode()).hexdigest()[:12]
                    response = _Span(SlaMetric.NEXT_RESPONSE, f"m{digest}", at)
        elif isinstance(fact, ReplyFact) and not resolved:
            if response is not None:
                done.append(response.stop(at, "reply"))
                response = None
            if fact.awaiting_customer and pausing:
                if pause_start is None:
                    pause_start = at
            else:
                end_pause(at)
        elif isinstance(fact, ResolvedFact) and not resolved:
            done.extend(s.stop(at, "resolved") for s in (resolution, response) if s is not None)
            resolution = response = None
            end_pause(at)
            resolved = True
    if pause_start is not None:
        pauses.append((pause_start, None))
    done.extend(s for s in (resolution, response) if s is not None)
    return done, pauses


def labels_at(facts: Sequence[Fact], at: datetime | None) -> Labels:
    """The conversation's labels in force at ``at`` (None: now, i.e. the latest).

    The routing decision in force is the latest (by ``seq``) decided by then; before the
    first decision, the first one applies (it classifies the conversation from its start).
    """
    assignments = sorted((f for f in facts if isinstance(f, AssignmentFact)), key=lambda f: f.seq)
    decision = None
    if assignments:
        in_force = [a for a in assignments if at is None or a.decided_at <= at]
        decision = in_force[-1] if in_force else assignments[0]
    messages = sorted(
        (f for f in facts if isinstance(f, MessageFact)), key=lambda f: (f.received_at, f.key)
    )
    first = messages[0] if messages else None
    tier = next((m.customer_tier for m in reversed(messages) if m.customer_tier), None)
    return Labels(
        channel=first.channel if first else (decision.channel if decision else None),
        priority=decision.priority if decision else None,
        queue=decision.queue if decision else None,
        tenant=(decision.tenant if decision and decision.tenant else None)
        or (first.tenant if first else None),
        customer_tier=tier,
    )


def derive(
    facts: Iterable[Fact], policies: PolicySet, pause_statuses: Collection[str]
) -> list[ClockState]:
    """Every clock of a conversation with deadlines and outcomes (pure, deterministic).

    A clock exists only when a policy matches and sets a target for its metric. Raises
    ``CalendarError`` only for a calendar with no business time within its horizon.
    """
    facts = list(facts)
    raw, pauses = spans(facts, pause_statuses)
    clocks = []
    for span in raw:
        labels = labels_at(facts, span.stopped_at)
        policy = policies.select(labels)
        target = policy.targets.get(span.metric) if policy else None
        if policy is None or target is None:
            continue
        relevant: list[Pause] = pauses
        if span.stopped_at is not None:
            stop = span.stopped_at
            relevant = [(s, stop if e is None else min(e, stop)) for s, e in pauses if s < stop]
        calendar = target.calendar
        due = calendar.add(span.started_at, target.target, relevant)
        warn = (
            calendar.add(span.started_at, target.target - target.warn_before, relevant)
            if target.warn_before > timedelta(0)
            else None
        )
        achieved: timedelta | None = None
        outcome: Literal["met", "breached"] | None = None
        if span.stopped_at is not None:
            achieved = calendar.elapsed(span.started_at, span.stopped_at, relevant)
            outcome = "met" if due is not None and span.stopped_at <= due else "breached"
        clocks.append(
            ClockState(
                metric=span.metric,
                cycle=span.cycle,
                policy=policy.name,
                channel=labels.channel,
                priority=labels.priority,
                queue=labels.queue,
                started_at=span.started_at,
                stopped_at=span.stopped_at,
                stop_reason=span.stop_reason,
                target_seconds=target.target.total_seconds(),
                due_at=due,
                warn_at=warn,
                achieved_seconds=None if achieved is None else achieved.total_seconds(),
                outcome=outcome,
                paused=span.stopped_at is None and due is None,
            )
        )
    clocks.sort(key=lambda c: (c.started_at, c.metric.value, c.cycle))
    return clocks


def due_times(clocks: Iterable[ClockState]) -> dict[str, datetime]:
    """When each clock running now is due, by metric: the SLA monitor's published read
    model (the router shows it to agents). A paused clock has no deadline yet and a
    stopped one none any more, so neither is listed. Due times are the ones emissions
    use, in the policy's business time."""
    due: dict[str, datetime] = {}
    for clock in clocks:
        if clock.is_open and not clock.paused and clock.due_at is not None:
            metric = clock.metric.value
            due[metric] = min(clock.due_at, due.get(metric, clock.due_at))
    return due


def emitted(facts: Iterable[Fact]) -> set[str]:
    """Emission ids the monitor has seen come back on ``support.sla-events.v1``."""
    return {f.emission_id for f in facts if isinstance(f, EmittedFact)}


def pending_emissions(
    conversation_id: str, clocks: Iterable[ClockState], now: datetime, done: Collection[str]
) -> list[Emission]:
    """Emissions due at ``now`` and not done yet, at-risk before breach.

    At-risk is due from ``warn_at`` while the clock runs (a stale warning about a stopped
    clock helps nobody); a breach is due from ``due_at`` if the clock is still running or
    stopped late (a breach is a fact even when noticed late).
    """
    out = []
    for clock in clocks:
        for kind, moment in _checkpoints(clock):
            eid = emission_id(conversation_id, clock.metric.value, clock.cycle, kind)
            if moment <= now and eid not in done:
                out.append(Emission(eid, conversation_id, kind, clock))
    return out


def next_check(
    conversation_id: str, clocks: Iterable[ClockState], done: Collection[str]
) -> datetime | None:
    """The earliest instant at which an emission of this conversation becomes due."""
    moments = [
        moment
        for clock in clocks
        for kind, moment in _checkpoints(clock)
        if emission_id(conversation_id, clock.metric.value, clock.cycle, kind) not in done
    ]
    return min(moments, default=None)


def _checkpoints(clock: ClockState) -> list[tuple[EmissionKind, datetime]]:
    points: list[tuple[EmissionKind, datetime]] = []
    if clock.due_at is None:
        return points
    if clock.is_open and clock.warn_at is not None:
        points.append(("at_risk", clock.warn_at))
    if clock.is_open or (clock.stopped_at is not None and clock.stopped_at > clock.due_at):
        points.append(("breached", clock.due_at))
    return points
