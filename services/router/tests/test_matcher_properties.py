"""Property tests of the pure matcher: eligibility, capacity, queue order, relaxation
steps with an injected time, sticky routing and deterministic tie-breaks."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_common.contract import AgentStatus, Channel, Priority
from switchboard_devtools.testing.router_assignment import T0, agent, state
from switchboard_router.assignment.matcher import (
    Candidate,
    choose_agent,
    is_eligible,
    pick_conversation,
    queue_key,
    requirements,
)
from switchboard_router.assignment.model import RouteState
from switchboard_router.assignment.policy import RoutingPolicy, parse_policy

pytestmark = pytest.mark.unit

POLICY = parse_policy(
    """
queues:
  - name: tiered
    when: {skills: [billing]}
    target: {required: {support: 1}}
    steps:
      - {after_seconds: 0, preferred: {billing: 9}}
      - {after_seconds: 30, preferred: {billing: 5}}
      - {after_seconds: 90, preferred: {}}
  - name: general
overflow: {name: overflow, target: {conversation_skills: none}}
"""
)
SKILLS = ["billing", "orders", "technical", "support"]
CHANNELS = [Channel.EMAIL, Channel.WHATSAPP]

skill_maps = st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10), max_size=4)
candidates = st.builds(
    lambda i, skills, langs, cap, load, status, idle, tenant: Candidate(
        replace(
            agent(
                f"agent-{i:03d}",
                skills=skills,
                languages=langs,
                capacity={Channel.EMAIL: cap, Channel.WHATSAPP: 2},
                status=status,
                tenant=tenant,
            )
        ),
        load=load,
        last_assigned_at=None if idle is None else T0 - timedelta(seconds=idle),
    ),
    st.integers(0, 999),
    skill_maps,
    st.lists(st.sampled_from(["en", "es", "fr"]), max_size=2),
    st.integers(0, 4),
    st.integers(0, 4),
    st.sampled_from(list(AgentStatus)),
    st.none() | st.integers(0, 2000),
    st.sampled_from([None, "acme", "globex"]),
)
pools = st.lists(candidates, max_size=25, unique_by=lambda c: c.agent.agent_id)
conversations = st.builds(
    lambda i, skills, lang, priority, waited, queue, tenant, excluded: state(
        f"c{i}",
        skills={**skills, **({f"language:{lang}": 1} if lang else {})},
        priority=priority,
        waiting_since=T0 - timedelta(seconds=waited),
        queue=queue,
        tenant=tenant,
        excluded_agents=excluded,
    ),
    st.integers(0, 10_000),
    skill_maps,
    st.none() | st.sampled_from(["en", "es", "fr"]),
    st.sampled_from(list(Priority)),
    st.integers(0, 200),
    st.sampled_from(["tiered", "general", "overflow"]),
    st.sampled_from([None, "acme"]),
    st.lists(st.sampled_from([f"agent-{i:03d}" for i in range(10)]), max_size=3),
)


def eligible_by_definition(c: Candidate, conv: RouteState, policy: RoutingPolicy) -> bool:
    """The rules spelled out once more, independently of the matcher's code."""
    needs = requirements(conv, policy, T0)
    a = c.agent
    return (
        a.status == AgentStatus.ONLINE
        and c.load < a.capacity.get(conv.channel, 0)
        and a.agent_id not in conv.excluded_agents
        and not (conv.tenant and a.tenant and conv.tenant != a.tenant)
        and (needs.only_agent is None or needs.only_agent == a.agent_id)
        and all(a.level(s) >= lvl for s, lvl in needs.skills.items())
    )


@given(conv=conversations, pool=pools)
@settings(max_examples=300, deadline=None)
def test_never_chooses_an_ineligible_or_full_agent(conv: RouteState, pool: list[Candidate]) -> None:
    choice = choose_agent(conv, pool, POLICY, T0)
    eligible = [c for c in pool if eligible_by_definition(c, conv, POLICY)]
    if choice is None:
        assert eligible == []
        return
    chosen = next(c for c in pool if c.agent.agent_id == choice.agent_id)
    assert chosen in eligible
    assert chosen.load < chosen.agent.capacity[conv.channel]
    assert choice.reason["eligible_agents"] == len(eligible)
    # and it is the best one by the documented score (ties by idle time, then id)
    assert all(choice.score >= choose_agent(conv, [c], POLICY, T0).score for c in eligible)  # type: ignore[union-attr]


@given(conv=conversations, pool=pools, seed=st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_ties_are_broken_deterministically_whatever_the_order(
    conv: RouteState, pool: list[Candidate], seed: int
) -> None:
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    first = choose_agent(conv, pool, POLICY, T0)
    second = choose_agent(conv, shuffled, POLICY, T0)
    assert (first is None) == (second is None)
    if first is not None and second is not None:
        assert first.agent_id == second.agent_id


def test_equal_scores_go_to_the_agent_idle_longer_then_the_smaller_id() -> None:
    conv = state("c1")
    same = [Candidate(agent(n), load=0, last_assigned_at=T0) for n in ("b", "a", "c")]
    choice = choose_agent(conv, same, POLICY, T0)
    assert choice is not None
    assert choice.agent_id == "a"
    older = Candidate(agent("z"), load=0, last_assigned_at=T0 - timedelta(seconds=1))
    choice = choose_agent(conv, [*same, older], POLICY, T0 + timedelta(seconds=10_000))
    assert choice is not None
    assert choice.agent_id == "z"  # every idle term is capped: idle longer breaks the tie


@given(st.lists(conversations, max_size=30, unique_by=lambda s: s.conversation_id))
def test_queue_order_is_priority_then_waiting_time(waiting: list[RouteState]) -> None:
    ordered = sorted(waiting, key=queue_key)
    for earlier, later in itertools.pairwise(ordered):
        assert earlier.priority.rank <= later.priority.rank
        if earlier.priority == later.priority:
            assert earlier.waiting_since <= later.waiting_since


@given(st.lists(conversations, min_size=1, max_size=30, unique_by=lambda s: s.conversation_id))
def test_a_freed_agent_takes_the_first_conversation_it_may_take(waiting: list[RouteState]) -> None:
    freed = Candidate(
        agent("agent-x", skills={"support": 10, "billing": 10}, languages=["en", "es", "fr"]),
        load=0,
    )
    ordered = sorted(waiting, key=queue_key)
    pick = pick_conversation(freed, ordered, POLICY, T0)
    may = [s for s in ordered if is_eligible(freed, s, requirements(s, POLICY, T0))]
    assert pick == (may[0] if may else None)


@given(waited=st.integers(0, 200))
def test_relaxation_steps_apply_exactly_from_their_timeouts(waited: int) -> None:
    conv = state("c1", queue="tiered", skills={"billing": 1}, waiting_since=T0)
    needs = requirements(conv, POLICY, T0 + timedelta(seconds=waited))
    expected = 9 if waited < 30 else 5 if waited < 90 else 1
    assert needs.skills == {"support": 1, "billing": expected}
    assert needs.step == (0 if waited < 30 else 1 if waited < 90 else 2)
    mid = Candidate(agent("m", skills={"support": 1, "billing": 6}), load=0)
    chosen = choose_agent(conv, [mid], POLICY, T0 + timedelta(seconds=waited))
    assert (chosen is not None) == (waited >= 30)


@given(pool=pools, sticky_index=st.integers(0, 24))
def test_the_sticky_agent_wins_when_eligible_and_is_waited_for_otherwise(
    pool: list[Candidate], sticky_index: int
) -> None:
    if not pool:
        return
    sticky = pool[sticky_index % len(pool)].agent.agent_id
    conv = state("c1", sticky_agent=sticky, sticky_until=T0 + timedelta(seconds=30))
    choice = choose_agent(conv, pool, POLICY, T0)
    holder = next(c for c in pool if c.agent.agent_id == sticky)
    if eligible_by_definition(holder, conv, POLICY):
        assert choice is not None
        assert choice.agent_id == sticky
        assert choice.reason["sticky"] is True
    else:
        assert choice is None  # inside the window nobody else may take it
    after = choose_agent(conv, pool, POLICY, T0 + timedelta(seconds=30))
    open_window = [c for c in pool if eligible_by_definition(c, replace_sticky(conv), POLICY)]
    assert (after is None) == (not open_window)


def replace_sticky(conv: RouteState) -> RouteState:
    return conv.model_copy(update={"sticky_until": None})


def test_full_and_offline_agents_are_never_eligible() -> None:
    conv = state("c1")
    full = Candidate(agent("full", capacity={Channel.EMAIL: 2}), load=2)
    away = Candidate(agent("away", status=AgentStatus.AWAY), load=0)
    no_channel = Candidate(agent("sms", capacity={Channel.WHATSAPP: 5}), load=0)
    heavy = Candidate(agent("heavy", total_capacity=4), load=0, total_load=4)
    assert choose_agent(conv, [full, away, no_channel, heavy], POLICY, T0) is None
    free = Candidate(agent("free"), load=2)
    choice = choose_agent(conv, [full, away, no_channel, heavy, free], POLICY, T0)
    assert choice is not None
    assert choice.agent_id == "free"
