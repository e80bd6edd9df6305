"""The fault runs' capacity oracle, on hand-made sequences of public events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from switchboard_common.contract import (
    AgentUpserted,
    AssignmentDecision,
    Channel,
    ConversationAssigned,
    ConversationQueued,
    ConversationRequeued,
    Priority,
)
from switchboard_devtools.faults import CapacityOracle

pytestmark = pytest.mark.unit

EMAIL, WHATSAPP = Channel.EMAIL, Channel.WHATSAPP


def agent(agent_id: str, capacity: int, *, total: int | None = None) -> AgentUpserted:
    return AgentUpserted(
        agent_id=agent_id,
        display_name=agent_id,
        capacity={EMAIL: capacity, WHATSAPP: capacity},
        total_capacity=total,
    )


def decided(
    conversation_id: str,
    seq: int,
    agent_id: str | None,
    *,
    channel: Channel = EMAIL,
    model: type[AssignmentDecision] | None = None,
) -> AssignmentDecision:
    kind = model or (ConversationAssigned if agent_id else ConversationQueued)
    return kind(
        conversation_id=conversation_id,
        customer_id=f"cust-{conversation_id}",
        channel=channel,
        priority=Priority.NORMAL,
        agent_id=agent_id,
        queue="general",
        seq=seq,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def oracle_with(capacity: int = 2, **kw: int | None) -> CapacityOracle:
    oracle = CapacityOracle()
    oracle.profile(0.0, agent("ana", capacity, **kw))
    return oracle


def test_work_within_capacity_passes() -> None:
    oracle = oracle_with(2)
    oracle.decision(1.0, decided("c1", 1, "ana"))
    oracle.decision(2.0, decided("c2", 1, "ana"))
    oracle.released(3.0, "c1")
    oracle.decision(4.0, decided("c3", 1, "ana"))  # c1's slot went to c3
    assert oracle.replay() == []
    assert oracle.assignments == 3


def test_a_third_conversation_on_two_slots_is_caught() -> None:
    oracle = oracle_with(2)
    oracle.decision(1.0, decided("c1", 1, "ana"))
    oracle.decision(2.0, decided("c2", 1, "ana"))
    oracle.released(3.0, "c1")
    oracle.decision(4.0, decided("c3", 1, "ana"))
    oracle.decision(5.0, decided("c4", 1, "ana"))  # c2, c3, c4: one too many
    [over] = oracle.replay()
    assert (over.agent_id, over.channel, over.load, over.capacity) == ("ana", "email", 3, 2)
    assert over.conversations == ("c2", "c3", "c4")
    assert over.at == 5.0


def test_channels_count_separately_and_total_capacity_counts_all() -> None:
    oracle = oracle_with(1)
    oracle.decision(1.0, decided("c1", 1, "ana", channel=EMAIL))
    oracle.decision(2.0, decided("c2", 1, "ana", channel=WHATSAPP))
    assert oracle.replay() == []
    capped = oracle_with(1, total=1)
    capped.decision(1.0, decided("c1", 1, "ana", channel=EMAIL))
    capped.decision(2.0, decided("c2", 1, "ana", channel=WHATSAPP))
    [over] = capped.replay()
    assert (over.channel, over.load, over.capacity) == ("*", 2, 1)


def test_a_republished_or_superseded_decision_changes_nothing() -> None:
    oracle = oracle_with(1)
    oracle.decision(1.0, decided("c1", 1, "ana"))
    oracle.decision(2.0, decided("c1", 2, None, model=ConversationRequeued))
    oracle.decision(3.0, decided("c1", 1, "ana"))  # the same seq 1 again, published late
    oracle.decision(4.0, decided("c2", 1, "ana"))
    assert oracle.replay() == []


def test_a_requeue_moves_the_hold_to_nobody_and_a_reassignment_to_the_new_agent() -> None:
    oracle = oracle_with(1)
    oracle.profile(0.0, agent("ben", 1))
    oracle.decision(1.0, decided("c1", 1, "ana"))
    oracle.decision(2.0, decided("c1", 3, "ben"))  # seq 2 (requeued) never seen: still moves
    oracle.decision(3.0, decided("c2", 1, "ana"))
    assert oracle.replay() == []
    oracle.decision(4.0, decided("c3", 1, "ben"))
    [over] = oracle.replay()
    assert (over.agent_id, over.conversations) == ("ben", ("c1", "c3"))


def test_a_rejection_releases_only_the_rejecting_agents_hold() -> None:
    oracle = oracle_with(1)
    oracle.profile(0.0, agent("ben", 1))
    oracle.decision(1.0, decided("c1", 1, "ben"))
    oracle.released(2.0, "c1", "ana")  # ana's stale answer: ben still has it
    oracle.decision(3.0, decided("c2", 1, "ben"))
    assert len(oracle.replay()) == 1
    oracle.released(2.5, "c1", "ben")
    assert oracle.replay() == []


def test_at_the_same_millisecond_the_release_comes_first_and_unknown_agents_have_no_room() -> None:
    oracle = oracle_with(1)
    oracle.decision(1.0, decided("c1", 1, "ana"))
    oracle.decision(2.0, decided("c2", 1, "ana"))
    oracle.released(2.0, "c1")
    assert oracle.replay() == []
    oracle.decision(3.0, decided("c3", 1, "zoe"))
    [over] = oracle.replay()
    assert (over.agent_id, over.capacity) == ("zoe", 0)


def test_a_violation_is_explained_by_each_conversations_history() -> None:
    oracle = oracle_with(1)
    oracle.decision(1.0, decided("c1", 1, "ana"))
    oracle.released(2.0, "c1")
    oracle.decision(3.0, decided("c1", 3, "ana"))
    oracle.decision(4.0, decided("c2", 1, "ana"))
    [over] = oracle.replay()
    text = oracle.explain(over)
    assert "ana email: 2 > 1 at 4.000" in text
    assert text.count("seq=") == 3
    assert "released by the frontend" in text
