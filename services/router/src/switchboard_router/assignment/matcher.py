"""The matcher (pure): which agents may take a conversation now, which one is best, and
which waiting conversation a freed agent takes. Plain data in, decisions out; the time
is a parameter, never read from a clock.

Eligibility: the agent is online, not excluded (rejected or let the offer expire), of
the conversation's tenant when both have one, has a free slot on the conversation's
channel (and room in its total capacity), and has every required skill at its minimum
level. Required skills = the queue's own requirements + the conversation's (all, only
the language, or none, per queue) + the *preferred* skills of the step that applies
after the time waited. While a sticky window or a pin applies, only that agent may.

Score (see ``policy.Scoring``): weighted skill fit (over the required skills, every skill
the conversation names and the first step's preferences), spare capacity and idle time; ties go
to the agent idle longer, then the smaller agent id, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from switchboard_common.contract import AgentStatus, Priority
from switchboard_router.assignment.model import Agent, RouteState
from switchboard_router.assignment.policy import (
    LANGUAGE_SKILL_PREFIX,
    QueuePolicy,
    RoutingPolicy,
)

_ORDER = [Priority.URGENT, Priority.HIGH, Priority.NORMAL, Priority.LOW]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An agent with its load as the deciding replica sees it."""

    agent: Agent
    #: Slots held on the conversation's channel.
    load: int
    #: Units of total capacity held (all channels).
    total_load: int = 0
    last_assigned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Requirements:
    """What an agent needs to take a conversation at a given moment."""

    skills: dict[str, int]
    #: Skills that count towards skill fit: requirements, every skill the conversation
    #: names and the first step's preferences.
    ideal: dict[str, int]
    step: int
    #: Only this agent may take it (sticky window or pin).
    only_agent: str | None


@dataclass(frozen=True, slots=True)
class Choice:
    agent_id: str
    score: float
    reason: dict[str, Any]


def queue_key(conversation: RouteState) -> tuple[int, datetime, str]:
    """Queue order: most urgent first, then longest waiting, then id (deterministic)."""
    return (conversation.priority.rank, conversation.waiting_since, conversation.conversation_id)


def queue_of(conversation: RouteState, policy: RoutingPolicy) -> QueuePolicy:
    queue = policy.queue(conversation.queue)
    if queue is None:  # a queue removed from the policy since: treat as overflow
        fallback = policy.queue(policy.overflow.name)
        assert fallback is not None  # noqa: S101 - the overflow queue always exists
        return fallback
    return queue


def active_step(queue: QueuePolicy, waited: float) -> int:
    """Index of the step that applies after ``waited`` seconds (-1: none yet)."""
    index = -1
    for i, step in enumerate(queue.steps):
        if waited >= step.after_seconds:
            index = i
    return index


def requirements(conversation: RouteState, policy: RoutingPolicy, now: datetime) -> Requirements:
    queue = queue_of(conversation, policy)
    waited = max(0.0, (now - conversation.waiting_since).total_seconds())
    own = conversation.skills
    if queue.target.conversation_skills == "language":
        own = {k: v for k, v in own.items() if k.startswith(LANGUAGE_SKILL_PREFIX)}
    elif queue.target.conversation_skills == "none":
        own = {}
    skills = _merge(queue.target.required, own)
    step = active_step(queue, waited)
    if step >= 0:
        skills = _merge(skills, queue.steps[step].preferred)
    # Skill fit counts every skill the conversation names, required or not: a topic the
    # queue does not require is still a preference.
    ideal = _merge(skills, conversation.skills)
    if queue.steps:
        ideal = _merge(ideal, queue.steps[0].preferred)
    only = conversation.pinned_agent
    if only is None and conversation.sticky_agent and conversation.sticky_until is not None:
        only = conversation.sticky_agent if now < conversation.sticky_until else None
    return Requirements(skills, ideal, step, only)


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for name, level in b.items():
        out[name] = max(level, out.get(name, 0))
    return out


def is_eligible(
    candidate: Candidate, conversation: RouteState, needs: Requirements, weight: int = 1
) -> bool:
    agent = candidate.agent
    if agent.status != AgentStatus.ONLINE:
        return False
    if needs.only_agent is not None and agent.agent_id != needs.only_agent:
        return False
    if agent.agent_id in conversation.excluded_agents:
        return False
    if conversation.tenant and agent.tenant and conversation.tenant != agent.tenant:
        return False
    if candidate.load >= agent.capacity.get(conversation.channel, 0):
        return False
    if agent.total_capacity is not None and candidate.total_load + weight > agent.total_capacity:
        return False
    return all(agent.level(skill) >= level for skill, level in needs.skills.items())


def score(
    candidate: Candidate,
    conversation: RouteState,
    needs: Requirements,
    policy: RoutingPolicy,
    now: datetime,
) -> tuple[float, dict[str, float]]:
    """The documented score and its terms (for ``reason``)."""
    weights = policy.scoring
    agent = candidate.agent
    ideal = tuple(needs.ideal)
    fit = sum(min(agent.level(s), 10) for s in ideal) / (10 * len(ideal)) if ideal else 1.0
    capacity = agent.capacity.get(conversation.channel, 0)
    spare = (capacity - candidate.load) / capacity if capacity > 0 else 0.0
    last = candidate.last_assigned_at
    if last is None:
        idle = 1.0
    else:
        idle_cap = weights.idle_cap_seconds
        idle = min(max(0.0, (now - last).total_seconds()), idle_cap) / idle_cap
    total = weights.skill_fit * fit + weights.spare_capacity * spare + weights.idle_time * idle
    terms = {"skill_fit": round(fit, 4), "spare": round(spare, 4), "idle": round(idle, 4)}
    return round(total, 9), terms


def choose_agent(
    conversation: RouteState,
    candidates: Iterable[Candidate],
    policy: RoutingPolicy,
    now: datetime,
    needs: Requirements | None = None,
) -> Choice | None:
    """The best eligible agent, or None. The sticky agent wins when eligible.

    One pass over the candidates with the rules of ``is_eligible`` and ``score`` inlined
    (the same arithmetic, so the same values): this loop is what grows with the number
    of agents, so it avoids calls and allocations per candidate. ``needs`` is
    ``requirements(conversation, policy, now)`` when the caller has it already."""
    needs = requirements(conversation, policy, now) if needs is None else needs
    weights = policy.scoring
    weight = policy.capacity.weight(conversation.channel)
    channel = conversation.channel
    required = tuple(needs.skills.items())
    ideal = tuple(needs.ideal)
    per_fit = 10 * len(ideal)
    excluded = frozenset(conversation.excluded_agents)
    tenant = conversation.tenant
    only = needs.only_agent
    idle_cap, online = weights.idle_cap_seconds, AgentStatus.ONLINE
    w_fit, w_spare, w_idle = weights.skill_fit, weights.spare_capacity, weights.idle_time
    best: tuple[float, datetime | None, str] | None = None
    best_candidate: Candidate | None = None
    sticky: Candidate | None = None
    eligible = 0
    for candidate in candidates:
        agent = candidate.agent
        if agent.status != online:
            continue
        agent_id = agent.agent_id
        if (only is not None and agent_id != only) or agent_id in excluded:
            continue
        if tenant and agent.tenant and tenant != agent.tenant:
            continue
        capacity = agent.capacity.get(channel, 0)
        load = candidate.load
        if load >= capacity:
            continue
        total = agent.total_capacity
        if total is not None and candidate.total_load + weight > total:
            continue
        levels = agent.levels
        if any(levels.get(skill, 0) < level for skill, level in required):
            continue
        eligible += 1
        fit = sum(min(levels.get(s, 0), 10) for s in ideal) / per_fit if ideal else 1.0
        spare = (capacity - load) / capacity
        last = candidate.last_assigned_at
        if last is None:
            idle = 1.0
        else:
            idle = min(max(0.0, (now - last).total_seconds()), idle_cap) / idle_cap
        value = round(w_fit * fit + w_spare * spare + w_idle * idle, 9)
        key = (-value, last, agent_id)
        if best is None or _less(key, best):
            best, best_candidate = key, candidate
        if agent_id == conversation.sticky_agent:
            sticky = candidate
    if best_candidate is None:
        return None
    return _choice(
        sticky or best_candidate,
        conversation,
        needs,
        policy,
        now,
        sticky=sticky is not None,
        eligible=eligible,
    )


def _choice(
    chosen: Candidate,
    conversation: RouteState,
    needs: Requirements,
    policy: RoutingPolicy,
    now: datetime,
    *,
    sticky: bool,
    eligible: int,
) -> Choice:
    """The choice with its decision inputs (for ``reason``)."""
    value, terms = score(chosen, conversation, needs, policy, now)
    return Choice(
        chosen.agent.agent_id,
        value,
        {
            "score": value,
            "terms": dict(terms),
            "eligible_agents": eligible,
            "sticky": sticky,
            "step": needs.step,
            "required": dict(needs.skills),
            "load": chosen.load,
            "capacity": chosen.agent.capacity.get(conversation.channel, 0),
        },
    )


def _less(a: tuple[float, datetime | None, str], b: tuple[float, datetime | None, str]) -> bool:
    """Tie order: higher score, then idle longer (never assigned first), then agent id."""
    if a[0] != b[0]:
        return a[0] < b[0]
    if a[1] != b[1]:
        if a[1] is None:
            return True
        if b[1] is None:
            return False
        return a[1] < b[1]
    return a[2] < b[2]


def pick_conversation(
    candidate: Candidate,
    waiting: Iterable[RouteState],
    policy: RoutingPolicy,
    now: datetime,
) -> RouteState | None:
    """The first conversation in queue order (``waiting`` is sorted by ``queue_key``) that
    the agent may take now: what a freed agent gets."""
    weight_of = policy.capacity.weight
    for conversation in waiting:
        if conversation.channel not in candidate.agent.capacity:
            continue
        needs = requirements(conversation, policy, now)
        if is_eligible(candidate, conversation, needs, weight_of(conversation.channel)):
            return conversation
    return None


def change_moments(conversation: RouteState, policy: RoutingPolicy) -> list[datetime]:
    """The moments the conversation's requirements or queue change just by waiting: each
    relaxation step, the end of a sticky window, the overflow deadline (sorted)."""
    queue = queue_of(conversation, policy)
    moments = [
        conversation.waiting_since + timedelta(seconds=step.after_seconds)
        for step in queue.steps
        if step.after_seconds > 0
    ]
    if conversation.sticky_until is not None:
        moments.append(conversation.sticky_until)
    deadline = overflow_due_at(conversation, policy)
    if deadline is not None:
        moments.append(deadline)
    return sorted(moments)


def overflow_due_at(conversation: RouteState, policy: RoutingPolicy) -> datetime | None:
    queue = policy.queue(conversation.queue)
    after = None if queue is None else queue.overflow_after(conversation.channel)
    if after is None:
        return None
    return conversation.waiting_since + timedelta(seconds=after)


def raised(priority: Priority) -> Priority:
    """One step more urgent (urgent stays urgent)."""
    return _ORDER[max(0, _ORDER.index(priority) - 1)]
