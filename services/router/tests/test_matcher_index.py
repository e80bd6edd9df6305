"""The numpy agent index chooses exactly the agent the pure matcher chooses, whatever the
agents, their load and history, and the conversation (property test)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_common.contract import AgentStatus, Channel, Priority
from switchboard_devtools.testing.router_assignment import T0, agent, state
from switchboard_router.assignment.matcher import choose_agent
from switchboard_router.assignment.model import RouteState, slot_id
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.assignment.views import AgentDirectory

pytestmark = pytest.mark.unit

POLICY = parse_policy(
    """
queues:
  - name: tiered
    when: {skills: [billing]}
    steps:
      - {after_seconds: 0, preferred: {billing: 7, orders: 3}}
      - {after_seconds: 30, preferred: {}}
  - name: general
capacity: {channel_weights: {whatsapp: 2}}
"""
)
SKILLS = ["billing", "orders", "technical"]
#: skills, languages, email capacity, email load, status, idle seconds, tenant, total
Spec = tuple[dict[str, int], list[str], int, int, AgentStatus, int | None, str | None, int | None]

agent_specs = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10), max_size=3),
        st.lists(st.sampled_from(["en", "es"]), max_size=2),
        st.integers(0, 3),  # email capacity
        st.integers(0, 3),  # email load
        st.sampled_from(list(AgentStatus)),
        st.none() | st.integers(0, 900),  # seconds since last assignment
        st.sampled_from([None, "acme", "globex"]),
        st.none() | st.integers(1, 4),  # total capacity
    ),
    max_size=40,
)
conversations = st.builds(
    lambda skills, lang, waited, excluded, sticky, tenant, channel, priority: state(
        "c1",
        skills={**skills, **({f"language:{lang}": 1} if lang else {})},
        waiting_since=T0 - timedelta(seconds=waited),
        queue="tiered" if "billing" in skills else "general",
        excluded_agents=excluded,
        sticky_agent=sticky,
        sticky_until=None if sticky is None else T0 + timedelta(seconds=5),
        tenant=tenant,
        channel=channel,
        priority=priority,
    ),
    st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 6), max_size=2),
    st.none() | st.sampled_from(["en", "es"]),
    st.integers(0, 60),
    st.lists(st.sampled_from([f"a{i:02d}" for i in range(8)]), max_size=3),
    st.none() | st.sampled_from([f"a{i:02d}" for i in range(8)]),
    st.sampled_from([None, "acme"]),
    st.sampled_from([Channel.EMAIL, Channel.WHATSAPP]),
    st.sampled_from(list(Priority)),
)


def directory_of(specs: list[Spec]) -> AgentDirectory:
    directory = AgentDirectory()
    for i, (skills, langs, cap, load, status, idle, tenant, total) in enumerate(specs):
        agent_id = f"a{i:02d}"
        directory.apply(
            agent(
                agent_id,
                skills=skills,
                languages=langs,
                capacity={Channel.EMAIL: cap, Channel.WHATSAPP: 2},
                status=status,
                tenant=tenant,
                total_capacity=total,
            )
        )
        directory.mark_held(slot_id(agent_id, "email", k) for k in range(load))
        if total is not None and load:
            directory.mark_held([f"{agent_id}|*|0"])
        if idle is not None:
            directory.assigned(agent_id, T0 - timedelta(seconds=idle))
    return directory


@given(specs=agent_specs, conversation=conversations, waited=st.integers(0, 60))
@settings(max_examples=300, deadline=None)
def test_the_index_chooses_what_the_matcher_chooses(
    specs: list[Spec], conversation: RouteState, waited: int
) -> None:
    directory = directory_of(specs)
    now = T0 + timedelta(seconds=waited)
    expected = choose_agent(
        conversation, list(directory.candidates(conversation.channel)), POLICY, now
    )
    actual = directory.choose(conversation, POLICY, now)
    if expected is None:
        assert actual is None
        return
    assert actual is not None
    assert (actual.agent_id, actual.score) == (expected.agent_id, expected.score)
    assert actual.reason == expected.reason


def test_the_index_grows_past_its_first_allocation_and_follows_changes() -> None:
    directory = directory_of(
        [({"billing": 5}, ["en"], 3, 0, AgentStatus.ONLINE, None, None, None)] * 200
    )
    conversation = state("c1", skills={"billing": 5})
    choice = directory.choose(conversation, POLICY, T0)
    assert choice is not None
    assert choice.agent_id == "a00"  # everyone ties: the smaller id
    assert choice.reason["eligible_agents"] == 200
    directory.mark_held(slot_id("a00", "email", k) for k in range(3))
    directory.assigned("a01", T0)
    choice = directory.choose(conversation, POLICY, T0)
    assert choice is not None
    assert choice.agent_id == "a02"  # a00 is full, a01 was just assigned
