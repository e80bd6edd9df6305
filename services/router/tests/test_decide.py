"""The pure decision core on its own: states, events and ``now`` in, the next step out,
and None whenever an event must change nothing (redelivered, stale, not applicable)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from switchboard_common.contract import (
    ConversationTransferred,
    Priority,
    SlaAtRisk,
    SlaMetric,
)
from switchboard_devtools.testing.router_assignment import T0, state
from switchboard_router.assignment import decide
from switchboard_router.assignment.model import RouteState, RouteStatus
from switchboard_router.assignment.policy import load_policy, parse_policy

pytestmark = pytest.mark.unit

POLICY = load_policy()
LATER = T0 + timedelta(seconds=30)


def held(**overrides: Any) -> RouteState:
    return state(
        "c1",
        status=RouteStatus.ASSIGNED,
        agent_id="a1",
        slots=["a1|email|0"],
        causes=["message:m1"],
        **overrides,
    )


def test_resolving_frees_the_slots_once() -> None:
    current = held()
    change = decide.resolved_change(current, "event:r1", LATER)
    assert change is not None
    assert change.after.seq == 2
    assert change.after.status == RouteStatus.RESOLVED
    assert change.after.slots == []
    assert change.release == ("a1|email|0",)
    assert change.kind is None  # no public event: the frontend resolved it
    # Written: the agent's inbox must drop it and the list of resolved ones show it.
    assert change.write_head is True
    # Redelivered, or already resolved: nothing.
    assert decide.resolved_change(change.after, "event:r1", LATER) is None
    assert decide.resolved_change(change.after, "event:r2", LATER) is None
    assert decide.resolved_change(None, "event:r1", LATER) is None


def test_an_offer_answer_counts_only_from_the_offered_agent_for_an_open_offer() -> None:
    offered = state(
        "c1",
        status=RouteStatus.OFFERED,
        agent_id="a1",
        slots=["a1|email|0"],
        offer_expires_at=LATER,
    )
    assert decide.offer_answer_change(offered, "a2", "event:x", T0, accepted=True) is None
    accepted = decide.offer_answer_change(offered, "a1", "event:x", T0, accepted=True)
    assert accepted is not None
    assert accepted.after.status == RouteStatus.ASSIGNED
    assert accepted.offer == "accepted"
    assert accepted.release == ()  # the agent keeps the slot
    rejected = decide.offer_answer_change(offered, "a1", "event:y", T0, accepted=False)
    assert rejected is not None
    assert rejected.after.status == RouteStatus.WAITING
    assert rejected.after.excluded_agents == ["a1"]
    assert rejected.after.waiting_since == offered.waiting_since  # keeps its place
    assert rejected.release == ("a1|email|0",)
    assert decide.offer_answer_change(accepted.after, "a1", "event:z", T0, accepted=False) is None


def test_an_offer_expires_only_past_its_deadline() -> None:
    offered = state("c1", status=RouteStatus.OFFERED, agent_id="a1", offer_expires_at=LATER)
    assert decide.expired_change(offered, LATER - timedelta(seconds=1)) is None
    expired = decide.expired_change(offered, LATER)
    assert expired is not None
    assert expired.offer == "timed_out"
    assert expired.after.excluded_agents == ["a1"]


def test_an_sla_warning_escalates_a_waiting_conversation_once_per_metric() -> None:
    policy = parse_policy("queues: [{name: general}]\nescalation: {at_risk: raise_priority}\n")
    event = SlaAtRisk(
        conversation_id="c1", metric=SlaMetric.FIRST_RESPONSE, policy="p", due_at=LATER, at=T0
    )
    waiting = state("c1")
    change = decide.escalated_change(
        waiting, event, kind="at_risk", cause="event:s1", policy=policy, now=T0
    )
    assert change is not None
    assert change.after.priority == Priority.HIGH
    again = decide.escalated_change(
        change.after, event, kind="at_risk", cause="event:s2", policy=policy, now=T0
    )
    assert again is None  # at_risk:first_response applied already
    assert (
        decide.escalated_change(
            held(), event, kind="at_risk", cause="event:s3", policy=policy, now=T0
        )
        is None
    )


def test_a_transfer_requeues_with_a_fresh_waiting_time_and_frees_the_agent() -> None:
    current = held(excluded_agents=["a7"])
    event = ConversationTransferred(conversation_id="c1", to_queue="billing", from_agent_id="a1")
    change = decide.transferred_change(current, event, "event:t1", LATER)
    assert change is not None
    assert change.routing is not None
    assert change.routing.queued_kind == "requeued"
    assert change.after.queue == "billing"
    assert change.after.waiting_since == LATER
    assert change.after.excluded_agents == []
    assert change.release == ("a1|email|0",)


def test_overflow_is_due_after_the_queue_limit_and_only_outside_the_overflow_queue() -> None:
    waiting = state("c1", queue="general")
    assert decide.overflow_change(waiting, POLICY, T0 + timedelta(seconds=10)) is None
    due = decide.overflow_change(waiting, POLICY, T0 + timedelta(days=2))
    assert due is not None
    assert due.after.queue == POLICY.overflow.name
    assert decide.overflow_change(due.after, POLICY, T0 + timedelta(days=3)) is None


def test_the_last_served_of_earlier_conversations_is_the_latest_agent_who_took_one() -> None:
    hour = timedelta(hours=1)
    served = [
        state("c1", status=RouteStatus.RESOLVED, agent_id="a1", decided_at=T0),
        state("c2", status=RouteStatus.AWAITING_CUSTOMER, agent_id="a2", decided_at=T0 + hour),
        state("c3", status=RouteStatus.OFFERED, agent_id="a3", decided_at=T0 + 2 * hour),
        state("c4", status=RouteStatus.WAITING, decided_at=T0 + 3 * hour),
    ]
    assert decide.last_served(served) == ("a2", T0 + hour)  # an offer is not service
    assert decide.last_served(served[2:]) is None
    assert decide.last_served([]) is None
    # Too long ago, the customer is not kept waiting for them.
    memory = decide.last_served(served[:1])
    assert decide.remembered(memory, POLICY, T0 + timedelta(days=30)) is None
    assert decide.remembered(memory, POLICY, LATER) == "a1"
