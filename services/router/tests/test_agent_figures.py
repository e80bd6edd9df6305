"""Per-agent figures: conversations handled, handling time, offer answers and occupancy,
labelled by agent group (agent ids only when the operator opts in), from the engine's
own decisions on the in-memory store."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from switchboard_common.agent_groups import AgentGroups
from switchboard_common.contract import AgentStatus, Channel, ConversationTransferred
from switchboard_devtools.testing.router_assignment import activity, agent, engine
from switchboard_router.assignment import update_gauges
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.figures import AgentFigures, occupancy
from switchboard_router.assignment.model import Agent
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.metrics import AgentMetrics, AssignmentMetrics

pytestmark = pytest.mark.unit

GROUPS = AgentGroups(by_agent={"ana": "billing", "bo": "billing", "cy": "tier-1"})
POLICY = """
classification: {language: {detect: false}}
queues: [{name: general}]
offers: {require_acceptance: %s, timeout_seconds: 20}
"""


def setup(
    *agents: Agent, offers: bool = False, groups: AgentGroups = GROUPS
) -> tuple[AssignmentEngine, CollectorRegistry, FakeClock]:
    registry = CollectorRegistry()
    built, _, clock = engine(parse_policy(POLICY % str(offers).lower()))
    built.metrics = AssignmentMetrics.create(registry)
    built.executor.figures = AgentFigures(AgentMetrics.create(registry), groups)
    for a in agents:
        built.directory.apply(a)
    return built, registry, clock


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_a_resolution_counts_for_the_agents_group_with_the_time_they_held_it() -> None:
    built, registry, clock = setup(agent("ana"))
    await built.on_activity(activity("c1"))
    clock.advance(600)
    await built.on_resolved("c1", "event:r1")
    await built.on_resolved("c1", "event:r1")  # redelivered: counted once
    labels = {"agent_group": "billing", "channel": "email"}
    assert value(registry, "switchboard_agent_conversations_handled_total", **labels) == 1
    assert value(registry, "switchboard_agent_handling_seconds_count", **labels) == 1
    assert value(registry, "switchboard_agent_handling_seconds_sum", **labels) == 600


async def test_a_transfer_away_ends_the_hold_but_is_not_handled() -> None:
    built, registry, clock = setup(agent("cy"))
    await built.on_activity(activity("c1"))
    clock.advance(120)
    transfer = ConversationTransferred(conversation_id="c1", from_agent_id="cy", to_queue="general")
    assert await built.on_transferred(transfer, "event:t1") is None
    labels = {"agent_group": "tier-1", "channel": "email"}
    assert value(registry, "switchboard_agent_handling_seconds_sum", **labels) == 120
    assert value(registry, "switchboard_agent_conversations_handled_total", **labels) == 0


async def test_a_conversation_no_agent_held_counts_for_nobody() -> None:
    built, registry, _ = setup()  # nobody online: it waits
    await built.on_activity(activity("c1"))
    await built.on_resolved("c1", "event:r1")
    assert registry.get_sample_value(
        "switchboard_agent_conversations_handled_total", {"agent_group": "none", "channel": "email"}
    ) in (None, 0.0)
    assert not [
        s
        for m in registry.collect()
        if m.name == "switchboard_agent_conversations_handled"
        for s in m.samples
        if s.value
    ]


async def test_offer_answers_by_group_and_outcome() -> None:
    built, registry, clock = setup(agent("ana"), agent("zed"), offers=True)
    await built.on_activity(activity("c1"))
    await built.on_activity(activity("c2"))
    holders = {}
    for conversation_id in ("c1", "c2"):
        current = await built.current(conversation_id)
        assert current is not None
        holders[conversation_id] = str(current.agent_id)
    await built.on_offer_answer(holders["c1"], "c1", accepted=True, cause="event:a1")
    await built.on_offer_answer(holders["c2"], "c2", accepted=False, cause="event:a2")
    clock.advance(21)
    await built.tick()  # c2, offered to the other agent now, expires
    outcomes = {
        (s.labels["agent_group"], s.labels["outcome"]): s.value
        for m in registry.collect()
        if m.name == "switchboard_agent_offers"
        for s in m.samples
        if s.name.endswith("_total")
    }
    group = {"ana": "billing", "zed": "other"}
    assert outcomes == {
        (group[holders["c1"]], "accepted"): 1,
        (group[holders["c2"]], "rejected"): 1,
        (group[holders["c1"]], "expired"): 1,
    }


def test_agent_ids_label_the_figures_only_when_the_operator_opts_in() -> None:
    registry = CollectorRegistry()
    figures = AgentFigures(AgentMetrics.create(registry), AgentGroups(by_agent_id=True))
    assert figures.groups.label("ana") == "ana"
    assert AgentGroups().label("ana") == "other"
    assert AgentGroups().label(None) == "none"


def test_occupancy_sums_online_agents_per_group_within_their_total_cap() -> None:
    agents = [
        agent("ana", capacity={Channel.EMAIL: 3, Channel.WHATSAPP: 2}),
        agent("bo", capacity={Channel.EMAIL: 4}, total_capacity=2),
        agent("cy", capacity={Channel.EMAIL: 1}),
        agent("dee", capacity={Channel.EMAIL: 5}),
    ]
    load = {("ana", "email"): 2, ("ana", "whatsapp"): 1, ("ana", "*"): 3, ("bo", "email"): 1}
    assert occupancy(agents, load, GROUPS) == {
        "billing": (4, 7),
        "tier-1": (0, 1),
        "other": (0, 5),
    }


async def test_the_gauge_round_sets_load_and_capacity_per_group_and_zeroes_groups_gone() -> None:
    built, registry, _ = setup(agent("ana", capacity={Channel.EMAIL: 3}), agent("cy"))
    await built.on_activity(activity("c1"))
    await update_gauges(built)
    load = {
        g: value(registry, "switchboard_agent_load", agent_group=g) for g in ("billing", "tier-1")
    }
    capacity = value(registry, "switchboard_agent_capacity", agent_group="billing")
    assert sum(load.values()) == 1
    assert capacity == 3
    built.directory.apply(replace(agent("ana", status=AgentStatus.OFFLINE), version=(0, 1)))
    await update_gauges(built)
    assert value(registry, "switchboard_agent_capacity", agent_group="billing") == 0
