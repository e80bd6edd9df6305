"""The per-replica views: cached candidates follow every change of agent, load and last
assignment; the queue view keeps the newest decision per conversation."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from switchboard_common.contract import AgentStatus, Channel, Priority
from switchboard_devtools.testing.router_assignment import T0, agent, state
from switchboard_router.assignment.model import RouteStatus, Slot
from switchboard_router.assignment.policy import load_policy
from switchboard_router.assignment.views import AgentDirectory, QueueView

pytestmark = pytest.mark.unit


def loads(directory: AgentDirectory) -> dict[str, int]:
    return {c.agent.agent_id: c.load for c in directory.candidates("email")}


def test_candidates_follow_load_presence_and_assignments() -> None:
    directory = AgentDirectory()
    directory.apply(agent("a1"))
    directory.apply(agent("a2", capacity={Channel.WHATSAPP: 1}))
    assert loads(directory) == {"a1": 0}
    taken = directory.take("a1", "email", 1)
    assert taken == ["a1|email|0"]
    assert loads(directory) == {"a1": 1}
    directory.mark_held(["a1|email|2"])
    assert directory.take("a1", "email", 1) == ["a1|email|1"]
    assert directory.take("a1", "email", 1) is None  # full
    directory.mark_free(["a1|email|0"])
    assert loads(directory) == {"a1": 2}
    directory.assigned("a1", T0)
    assert [c.last_assigned_at for c in directory.candidates("email")] == [T0]
    directory.apply(replace(agent("a1"), status=AgentStatus.AWAY, version=(0, 1)))
    assert loads(directory) == {}
    directory.apply(replace(agent("a1"), status=AgentStatus.ONLINE, version=(0, 0)))
    assert loads(directory) == {}  # an older version is ignored
    directory.apply(replace(agent("a1"), version=(0, 2)))
    held = [Slot("a1|email|0", "a1", "email", "c9", 1, T0 + timedelta(seconds=5))]
    directory.replace_held(held)
    assert loads(directory) == {"a1": 1}
    assert directory.totals({("a1", "email"): 1, ("a2", "email"): 5})["email"] == (1, 3, 1)
    assert directory.totals({})["email"] == (0, 3, 1)


def test_total_capacity_units_are_taken_with_the_channel_slot() -> None:
    directory = AgentDirectory()
    directory.apply(agent("a1", total_capacity=2))
    assert directory.take("a1", "email", 2) == ["a1|email|0", "a1|*|0", "a1|*|1"]
    assert directory.take("a1", "email", 1) is None


def test_the_queue_view_keeps_the_newest_decision_in_queue_order() -> None:
    view = QueueView()
    assert view.apply(state("c1", seq=2, waiting_since=T0 + timedelta(seconds=1)))
    assert view.apply(
        state("c2", seq=1, priority=Priority.URGENT, waiting_since=T0 + timedelta(seconds=9))
    )
    assert view.apply(state("c3", seq=1, waiting_since=T0))
    assert not view.apply(state("c1", seq=1))  # older
    assert [s.conversation_id for s in view.sorted_waiting()] == ["c2", "c3", "c1"]
    assert view.apply(state("c3", seq=2, status=RouteStatus.OFFERED, agent_id="a1"))
    assert list(view.offers) == ["c3"]
    assert [s.conversation_id for s in view.sorted_waiting("email")] == ["c2", "c1"]
    view.replace_from([state("c2", seq=1)], since=T0 + timedelta(seconds=60))
    assert list(view.waiting) == ["c2"]  # the snapshot no longer lists c1 and c3
    assert view.offers == {}


def test_the_agents_who_could_take_a_queued_conversation_are_those_eligible_at_zero_load() -> None:
    """What the re-check after queueing re-reads: agents who would be eligible with no
    work, whatever this view says of their load; not one of another language, offline,
    excluded or of another channel."""
    directory = AgentDirectory()
    directory.apply(agent("full"))
    directory.apply(agent("french", languages=["fr"]))
    directory.apply(agent("away", status=AgentStatus.AWAY))
    directory.apply(agent("rejected"))
    directory.apply(agent("chat", capacity={Channel.WHATSAPP: 3}))
    directory.mark_held(["full|email|0", "full|email|1", "full|email|2"])
    waiting = state("c1", skills={"language:en": 1}, excluded_agents=["rejected"])
    assert directory.could_take([waiting], load_policy(), T0) == {"full"}
    assert directory.could_take([], load_policy(), T0) == set()
    # Whether something was freed behind this view: it counts 3, the database fewer.
    assert directory.holds_more("full", {("full", "email"): 2})
    assert not directory.holds_more("full", {("full", "email"): 3})
    assert not directory.holds_more("french", {})
