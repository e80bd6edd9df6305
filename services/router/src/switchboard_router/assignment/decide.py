"""Routing decisions (pure): from a conversation's state, what happened, the policy, the
agents' view and ``now`` to the next step and what it publishes. No I/O, no awaits, no
clock; ``executor`` applies what these return.

A decision is a ``Change``: the conversation's next state (``seq + 1``), the event kind
it publishes (None for a silent step), the reason people read, the slots of the previous
step it frees, and — for a step that gives the conversation to an agent — a ``Routing``
that the executor completes with the agent it reserves (``assigned``) or, when nobody has
room, with the waiting state (``waiting``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from switchboard_common.contract import (
    AgentStatus,
    Channel,
    ConversationActivity,
    ConversationTransferred,
    Priority,
    SlaEvent,
)
from switchboard_router.assignment.classify import Classified, queue_for
from switchboard_router.assignment.matcher import overflow_due_at, raised, requirements
from switchboard_router.assignment.model import HOLDING, Agent, RouteState, RouteStatus
from switchboard_router.assignment.policy import RoutingPolicy


@dataclass(frozen=True)
class Routing:
    """Give the conversation to the best agent with room (or only to ``only``)."""

    only: str | None = None
    #: The event when no agent has room: the conversation is decided waiting. None:
    #: nothing is decided then (a retry of a waiting conversation).
    queued_kind: str | None = "queued"


@dataclass(frozen=True)
class Handled:
    """An agent's hold on a conversation ended: resolved, or transferred away."""

    agent_id: str
    #: From the assignment to now (None: the state never recorded when it was assigned).
    seconds: float | None
    resolved: bool


def handled(current: RouteState, now: datetime, *, resolved: bool) -> Handled | None:
    """The hold that ends when ``current`` is resolved or transferred (None: no agent
    had it — waiting, or only offered)."""
    if current.agent_id is None or current.status not in (
        RouteStatus.ASSIGNED,
        RouteStatus.AWAITING_CUSTOMER,
    ):
        return None
    since = current.assigned_at
    seconds = None if since is None else max(0.0, (now - since).total_seconds())
    return Handled(current.agent_id, seconds, resolved)


@dataclass(frozen=True)
class Change:
    """One step of one conversation, to be claimed as decision ``after.seq``."""

    #: The next state; with ``routing``, the waiting state the agent is chosen for.
    after: RouteState
    kind: str | None
    reason: Mapping[str, Any]
    #: Slots of the previous step, released once this step is claimed.
    release: tuple[str, ...] = ()
    routing: Routing | None = None
    #: False for steps between statuses no listing looks for (readers probe past the
    #: head, so a head that lags them is harmless and saves a write).
    write_head: bool = True
    #: The offer outcome this step records (``accepted``, ``rejected``, ``timed_out``),
    #: and the agent it was offered to.
    offer: str | None = None
    offered_to: str | None = None
    #: The agent's hold this step ends (per-agent figures).
    handled: Handled | None = None

    @property
    def conversation_id(self) -> str:
        return self.after.conversation_id


# ------------------------------------------------------------------------ states
def waiting_state(base: RouteState, policy: RoutingPolicy, now: datetime) -> tuple[RouteState, str]:
    """``base`` queued (no agent had room), and why."""
    waiting = base.model_copy(
        update={
            "status": RouteStatus.WAITING,
            "agent_id": None,
            "slots": [],
            "offer_expires_at": None,
            "decided_at": now,
        }
    )
    why = (
        "waiting for the sticky agent"
        if requirements(waiting, policy, now).only_agent
        else "no eligible agent with free capacity"
    )
    return waiting, why


def assigned_state(
    base: RouteState, agent_id: str, slots: list[str], policy: RoutingPolicy, now: datetime
) -> RouteState:
    """``base`` given to the agent holding ``slots`` (offered if the policy says so)."""
    offer = policy.offers.require_acceptance
    return base.model_copy(
        update={
            "status": RouteStatus.OFFERED if offer else RouteStatus.ASSIGNED,
            "agent_id": agent_id,
            "slots": list(slots),
            "offer_expires_at": (
                now + timedelta(seconds=policy.offers.timeout_seconds) if offer else None
            ),
            "assigned_at": None if offer else now,
            "pinned_agent": None,
            "sticky_until": None,
            "decided_at": now,
        }
    )


def advanced(current: RouteState, cause: str | None, now: datetime, **fields: Any) -> RouteState:
    """The next step of ``current`` (``seq + 1``, the cause recorded) with ``fields``."""
    return current.model_copy(
        update={
            "seq": current.seq + 1,
            "causes": current.with_cause(cause),
            "decided_at": now,
            **fields,
        }
    )


def rewait(
    current: RouteState, cause: str | None, now: datetime, *, waiting_since: datetime | None = None
) -> RouteState:
    """The next step of ``current`` as a waiting conversation (slots not yet freed)."""
    return advanced(
        current,
        cause,
        now,
        status=RouteStatus.WAITING,
        agent_id=None,
        slots=[],
        offer_expires_at=None,
        assigned_at=None,
        waiting_since=waiting_since or current.waiting_since,
    )


def sticky_until(agent: Agent | None, policy: RoutingPolicy, now: datetime) -> datetime | None:
    """Wait for the sticky agent only while they are online (full or not)."""
    if agent is None or policy.sticky.wait_seconds <= 0 or agent.status != AgentStatus.ONLINE:
        return None
    return now + timedelta(seconds=policy.sticky.wait_seconds)


def last_served(states: Sequence[RouteState]) -> tuple[str, datetime] | None:
    """Who served the most recently decided of these conversations (a customer's
    earlier ones), and when: the agent it was assigned to, still or until it was
    resolved. None when no agent took any of them."""
    served = [
        s
        for s in states
        if s.agent_id
        and s.status in (RouteStatus.ASSIGNED, RouteStatus.AWAITING_CUSTOMER, RouteStatus.RESOLVED)
    ]
    if not served:
        return None
    last = max(served, key=lambda s: (s.decided_at, s.conversation_id))
    return str(last.agent_id), last.decided_at


def remembered(
    last: tuple[str, datetime] | None, policy: RoutingPolicy, now: datetime
) -> str | None:
    """The agent who last served the customer (``last_served``) while recent enough."""
    if last is None or not policy.sticky.enabled:
        return None
    agent_id, at = last
    if (now - at).total_seconds() > policy.sticky.remember_seconds:
        return None
    return agent_id


# ------------------------------------------------------------------------ events
def wants_routing(current: RouteState | None, cause: str) -> bool:
    """Whether a customer message routes the conversation (not already applied, not
    already waiting or with an agent)."""
    return current is None or not (
        current.applied(cause) or current.status in (RouteStatus.WAITING, *HOLDING)
    )


def known_agent(current: RouteState | None) -> str | None:
    """The agent a conversation awaiting the customer goes back to."""
    if current is not None and current.status == RouteStatus.AWAITING_CUSTOMER:
        return current.agent_id
    return None


def activity_change(
    activity: ConversationActivity,
    classified: Classified,
    current: RouteState | None,
    *,
    sticky: str | None,
    sticky_agent: Agent | None,
    reason: dict[str, Any],
    policy: RoutingPolicy,
    now: datetime,
) -> Change:
    """A customer message routes the conversation (``wants_routing`` said so)."""
    cause = f"message:{activity.message_id}"
    queue = queue_for(activity, classified, policy)
    base = RouteState(
        conversation_id=activity.conversation_id,
        seq=1 if current is None else current.seq + 1,
        status=RouteStatus.WAITING,
        customer_id=activity.customer_id,
        channel=activity.channel,
        priority=classified.priority,
        queue=queue.name,
        skills=classified.skills,
        language=classified.language,
        topics=list(classified.topics),
        tenant=activity.tenant,
        customer_tier=activity.customer_tier,
        waiting_since=now,
        sticky_agent=sticky,
        sticky_until=sticky_until(sticky_agent, policy, now) if sticky else None,
        causes=[cause] if current is None else current.with_cause(cause),
        decided_at=now,
    )
    return Change(base, "queued", reason, routing=Routing())


def resolved_change(current: RouteState | None, cause: str, now: datetime) -> Change | None:
    """Resolved: its capacity is freed (None: unknown, already applied or resolved)."""
    if current is None or current.applied(cause) or current.status == RouteStatus.RESOLVED:
        return None
    after = advanced(
        current, cause, now, status=RouteStatus.RESOLVED, slots=[], offer_expires_at=None
    )
    return Change(
        after,
        None,
        {"trigger": "resolved"},
        release=tuple(current.slots),
        # Written whatever it was: the agent's inbox lists assigned heads, and the
        # conversation list resolved ones (``workspace.read_api``).
        write_head=True,
        handled=handled(current, now, resolved=True),
    )


def reopens(current: RouteState | None, cause: str) -> bool:
    """Whether an agent's reopen routes the conversation again (resolved, not applied)."""
    return (
        current is not None
        and not current.applied(cause)
        and current.status == RouteStatus.RESOLVED
    )


def reopened_change(
    current: RouteState,
    cause: str,
    *,
    sticky: str | None,
    sticky_agent: Agent | None,
    policy: RoutingPolicy,
    now: datetime,
) -> Change:
    """Reopened by an agent: routed again, first to the agent who had it."""
    base = rewait(current, cause, now, waiting_since=now).model_copy(
        update={"sticky_agent": sticky, "sticky_until": sticky_until(sticky_agent, policy, now)}
    )
    return Change(base, "queued", {"trigger": "reopened"}, routing=Routing())


def transferred_change(
    current: RouteState | None, event: ConversationTransferred, cause: str, now: datetime
) -> Change | None:
    """Transferred to a queue or a named agent: requeued there and routed at once (None:
    unknown, already applied or resolved)."""
    if current is None or current.applied(cause) or current.status == RouteStatus.RESOLVED:
        return None
    base = rewait(current, cause, now, waiting_since=now).model_copy(
        update={
            "queue": event.to_queue or current.queue,
            "pinned_agent": event.to_agent_id,
            "sticky_agent": None,
            "sticky_until": None,
            "excluded_agents": [],
        }
    )
    reason = {"trigger": "transferred", "from_agent_id": event.from_agent_id}
    return Change(
        base,
        "requeued",
        reason,
        release=tuple(current.slots),
        routing=Routing(queued_kind="requeued"),
        handled=handled(current, now, resolved=False),
    )


def awaiting_change(
    current: RouteState | None, agent_id: str, cause: str, policy: RoutingPolicy, now: datetime
) -> Change | None:
    """The agent who has it replied and waits on the customer: the slot is freed, if the
    policy says so (None otherwise). The caller has checked that the reply is new: the
    same reply may just have accepted the offer (and recorded its cause)."""
    if (
        current is None
        or not policy.capacity.release_when_awaiting_customer
        or current.status != RouteStatus.ASSIGNED
        or current.agent_id != agent_id
    ):
        return None
    after = advanced(current, cause, now, status=RouteStatus.AWAITING_CUSTOMER, slots=[])
    return Change(
        after,
        None,
        {"trigger": "awaiting_customer"},
        release=tuple(current.slots),
        # The inbox and the conversation list show awaiting_customer heads.
        write_head=True,
    )


def answers_offer(current: RouteState | None, agent_id: str, cause: str) -> bool:
    """Whether an answer of ``agent_id`` concerns the conversation's open offer."""
    return (
        current is not None
        and not current.applied(cause)
        and current.status == RouteStatus.OFFERED
        and current.agent_id == agent_id
    )


def offer_answer_change(
    current: RouteState | None, agent_id: str, cause: str, now: datetime, *, accepted: bool
) -> Change | None:
    """The offered agent accepted (they have it) or rejected (back to the queue with its
    waiting time, never offered to them again); None when it is no open offer of theirs."""
    if current is None or not answers_offer(current, agent_id, cause):
        return None
    if not accepted:
        return taken_back_change(current, cause, "rejected", now, exclude=True)
    after = advanced(
        current, cause, now, status=RouteStatus.ASSIGNED, offer_expires_at=None, assigned_at=now
    )
    return Change(
        after,
        "assigned",
        {"trigger": "offer", "offer": "accepted"},
        offer="accepted",
        offered_to=agent_id,
    )


def taken_back_change(
    current: RouteState, cause: str | None, outcome: str, now: datetime, *, exclude: bool
) -> Change:
    """An offered or assigned conversation back to the queue with its original waiting
    time (never offered again to an agent who rejected it or let it expire)."""
    excluded = list(current.excluded_agents)
    if exclude and current.agent_id and current.agent_id not in excluded:
        excluded.append(current.agent_id)
    after = rewait(current, cause, now).model_copy(
        update={"excluded_agents": excluded, "sticky_agent": None, "sticky_until": None}
    )
    reason = {"trigger": outcome, "previous_agent_id": current.agent_id}
    offer = outcome if outcome in ("rejected", "timed_out") else None
    return Change(
        after,
        "requeued",
        reason,
        release=tuple(current.slots),
        offer=offer,
        offered_to=current.agent_id if offer else None,
    )


def escalated_change(
    current: RouteState | None,
    event: SlaEvent,
    *,
    kind: str,
    cause: str,
    policy: RoutingPolicy,
    now: datetime,
) -> Change | None:
    """An SLA warning or breach for a waiting conversation: priority raised or moved to
    the overflow queue, once per metric and kind (None: the policy does nothing, or it
    is not waiting, or it was applied already)."""
    action = policy.escalation.at_risk if kind == "at_risk" else policy.escalation.breached
    if (
        action == "none"
        or current is None
        or current.applied(cause)
        or current.status != RouteStatus.WAITING
        or f"{kind}:{event.metric}" in current.escalations
    ):
        return None
    update: dict[str, Any] = {"escalations": [*current.escalations, f"{kind}:{event.metric}"]}
    if action == "raise_priority":
        update["priority"] = raised(current.priority)
    else:
        update["queue"] = policy.overflow.name
    reason = {
        "trigger": f"sla:{kind}",
        "metric": str(event.metric),
        "action": action,
        "previous_priority": str(current.priority),
        "previous_queue": current.queue,
    }
    return Change(rewait(current, cause, now).model_copy(update=update), "escalated", reason)


def expired_change(current: RouteState, now: datetime) -> Change | None:
    """An offer past its deadline goes back to the queue, never to that agent again
    (None: not an open offer, or not expired)."""
    expires = current.offer_expires_at
    if current.status != RouteStatus.OFFERED or expires is None or expires > now:
        return None
    return taken_back_change(current, None, "timed_out", now, exclude=True)


def overflow_change(current: RouteState, policy: RoutingPolicy, now: datetime) -> Change | None:
    """A conversation waiting past its queue's limit moves to the overflow queue (None
    when it is not due, or there already)."""
    if current.status != RouteStatus.WAITING:
        return None
    due = overflow_due_at(current, policy)
    if due is None or due > now or current.queue == policy.overflow.name:
        return None
    after = rewait(current, None, now).model_copy(
        update={"queue": policy.overflow.name, "sticky_until": None}
    )
    reason = {
        "trigger": "wait_timeout",
        "previous_queue": current.queue,
        "waited_seconds": round((now - current.waiting_since).total_seconds(), 3),
    }
    return Change(after, "escalated", reason)


def rematch_change(current: RouteState, now: datetime, *, only: str | None = None) -> Change:
    """Another try for a waiting conversation (to ``only``, a freed agent, or the best);
    nothing is decided if nobody has room."""
    base = current.model_copy(update={"seq": current.seq + 1, "decided_at": now})
    if only is not None:
        reason = {
            "trigger": "capacity_freed",
            "waited_seconds": round((now - current.waiting_since).total_seconds(), 3),
        }
    else:
        reason = {"trigger": "rematch"}
    return Change(base, None, reason, routing=Routing(only=only, queued_kind=None))


def fence_state(
    current: RouteState | None,
    *,
    conversation_id: str,
    seq: int,
    channel: str,
    policy: RoutingPolicy,
    now: datetime,
) -> RouteState:
    """``current`` unchanged as step ``seq`` (the repair closes a step a stalled
    replica might still claim); for a conversation without any state yet, a resolved
    placeholder (its next activity routes it from scratch)."""
    if current is not None:
        return current.model_copy(update={"seq": seq, "decided_at": now})
    return RouteState(
        conversation_id=conversation_id,
        seq=seq,
        status=RouteStatus.RESOLVED,
        customer_id="",
        # A total-capacity slot names no channel; the placeholder routes nothing.
        channel=Channel(channel) if channel in set(Channel) else Channel.EMAIL,
        priority=Priority.NORMAL,
        queue=policy.overflow.name,
        waiting_since=now,
        decided_at=now,
    )
