"""The assignment engine on the in-memory store with a fake clock: routing, capacity,
queue draining, offers, presence, escalation, relaxation, sticky routing, transfers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery, is_transient
from switchboard_common.contract import (
    CONVERSATION_ACTIVITY,
    AgentStatus,
    AssignmentDecision,
    Channel,
    ConversationAssigned,
    ConversationEscalated,
    ConversationQueued,
    ConversationRequeued,
    ConversationTransferred,
    Priority,
    SlaAtRisk,
    SlaBreached,
    SlaMetric,
)
from switchboard_common.deadletter import RawRecord
from switchboard_common.kafka import Outgoing
from switchboard_devtools.testing.router_assignment import (
    T0,
    FixedLanguage,
    activity,
    agent,
    engine,
)
from switchboard_router.assignment import update_gauges
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.consumers import ConversationHandler
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.model import RouteState, RouteStatus, Slot
from switchboard_router.assignment.policy import RoutingPolicy, parse_policy
from switchboard_router.assignment.store import Decision, InMemoryAssignmentStore
from switchboard_router.metrics import AssignmentMetrics

pytestmark = pytest.mark.unit

POLICY = """
classification:
  tiers: {vip: urgent}
  topics:
    - {name: billing, keywords: [invoice], skills: {billing: 1}}
  language: {detect: false}
queues:
  - name: billing
    when: {skills: [billing]}
    steps:
      - {after_seconds: 0, preferred: {billing: 8}}
      - {after_seconds: 60, preferred: {}}
  - name: general
    overflow_after_seconds: 600
sticky: {enabled: true, wait_seconds: 30}
offers: {require_acceptance: %(offers)s, timeout_seconds: 20}
capacity: {offline_reassign_after_seconds: %(reassign)s}
escalation: {at_risk: raise_priority, breached: overflow}
"""


def policy(*, offers: bool = False, reassign: str = "null", text: str = POLICY) -> RoutingPolicy:
    return parse_policy(text % {"offers": str(offers).lower(), "reassign": reassign})


def setup(
    *agents: Any, offers: bool = False, reassign: str = "null"
) -> tuple[AssignmentEngine, Any, Any, InMemoryAssignmentStore]:
    store = InMemoryAssignmentStore()
    built, published, clock = engine(policy(offers=offers, reassign=reassign), store=store)
    for a in agents:
        built.directory.apply(a)
    return built, published, clock, store


async def test_a_conversation_goes_to_the_best_agent_with_the_decision_inputs() -> None:
    built, published, _, store = setup(
        agent("a-low", skills={"billing": 8}), agent("a-high", skills={"billing": 10})
    )
    assert await built.on_activity(activity("c1", text="my invoice")) == "routed"
    (event,) = published.events
    assert isinstance(event, ConversationAssigned)
    assert event.agent_id == "a-high"
    assert event.seq == 1
    assert event.required_skills == ["billing"]
    assert event.reason["eligible_agents"] == 2
    assert event.reason["message_id"] == "msg-c1"  # the message that triggered it
    terms = event.reason["terms"]
    assert isinstance(terms, dict)
    assert terms["skill_fit"] == 1.0
    assert list(store.slots) == ["a-high|email|0"]


async def test_capacity_is_never_exceeded_and_the_rest_waits_in_queue_order() -> None:
    built, published, clock, store = setup(agent("a1", capacity={Channel.EMAIL: 3}))
    for i in range(6):
        clock.advance(1)
        tier = "vip" if i == 5 else None
        await built.on_activity(activity(f"c{i}", customer_tier=tier))
    assigned = [e.conversation_id for e in published.events if isinstance(e, ConversationAssigned)]
    assert assigned == ["c0", "c1", "c2"]
    assert len(store.slots) == 3
    assert [s.conversation_id for s in built.queue.sorted_waiting()] == ["c5", "c3", "c4"]

    await built.on_resolved("c1", "event:r1")  # frees a slot: the most urgent waiting gets it
    last = published.events[-1]
    assert isinstance(last, ConversationAssigned)
    assert (last.conversation_id, last.agent_id) == ("c5", "a1")
    assert len(store.slots) == 3
    await built.on_resolved("c1", "event:r1")  # redelivered: nothing more happens
    assert len(published.events) == 7


async def test_redelivered_activity_and_auto_submitted_messages_change_nothing() -> None:
    built, published, _, _ = setup(agent("a1"))
    await built.on_activity(activity("c1"))
    assert await built.on_activity(activity("c1")) == "unchanged"
    assert await built.on_activity(activity("c2", auto_submitted=True)) == "not_routed"
    assert [e.conversation_id for e in published.events] == ["c1"]


async def test_an_accepted_offer_stays_and_a_rejected_one_goes_to_another_agent() -> None:
    built, published, clock, store = setup(agent("a1"), agent("a2"), offers=True)
    await built.on_activity(activity("c1"))
    offer = published.events[-1]
    assert isinstance(offer, ConversationAssigned)
    assert offer.offer_expires_at == clock.now() + timedelta(seconds=20)
    first = offer.agent_id
    assert first is not None
    clock.advance(5)
    await built.on_offer_answer(first, "c1", accepted=False, cause="event:x1")
    requeued, reoffer = published.events[-2:]
    assert isinstance(requeued, ConversationRequeued)
    assert requeued.waiting_since == offer.waiting_since  # keeps its place in the queue
    assert isinstance(reoffer, ConversationAssigned)
    assert reoffer.agent_id not in (None, first)
    assert reoffer.seq > requeued.seq > offer.seq
    assert reoffer.agent_id is not None
    await built.on_offer_answer(reoffer.agent_id, "c1", accepted=True, cause="event:x2")
    accepted = published.events[-1]
    assert isinstance(accepted, ConversationAssigned)
    assert accepted.offer_expires_at is None
    assert accepted.reason["offer"] == "accepted"
    assert [s.agent_id for s in store.slots.values()] == [reoffer.agent_id]


async def test_a_decision_read_before_its_head_is_written_is_published_once() -> None:
    """A timer, a drain or the repair of the replica making a decision can read the
    conversation before the head is written. That read must wait for the maker, not
    publish the decision again as if its maker had crashed."""
    built, published, _, _ = setup(agent("a1"), agent("a2"), offers=True)
    readers: list[asyncio.Task[RouteState | None]] = []

    async def publish_then_read(items: Sequence[Outgoing]) -> None:
        await published(items)
        readers.extend(
            asyncio.create_task(built.current(item.event.conversation_id))
            for item in items
            if isinstance(item.event, AssignmentDecision)
        )
        for _ in range(5):  # the readers run before the maker goes on to the head
            await asyncio.sleep(0)

    built.publish = publish_then_read
    await built.on_activity(activity("c1"))
    offer = published.events[-1]
    assert offer.agent_id is not None
    await built.on_offer_answer(offer.agent_id, "c1", accepted=False, cause="event:x1")
    seen = await asyncio.gather(*readers)
    assert len(seen) == 3
    assert all(s is not None and s.seq >= 1 for s in seen)
    steps = [(type(e).__name__, e.seq) for e in published.of("c1")]
    assert steps == [
        ("ConversationAssigned", 1),
        ("ConversationRequeued", 2),
        ("ConversationAssigned", 3),
    ]


def replicas(
    store: InMemoryAssignmentStore, *agents: Any
) -> tuple[AssignmentEngine, AssignmentEngine, Any]:
    """Two replicas on one store that never see each other's events (only the
    database), and what both published."""
    first, published, clock = engine(policy(), store=store)
    second = AssignmentEngine(
        store=store,
        policy=first.policy,
        clock=clock,
        publish=first.publish,
        detector=FixedLanguage(),
        replica="second",
    )
    for a in agents:
        first.directory.apply(a)
        second.directory.apply(a)
    return first, second, published


async def test_the_replica_that_frees_an_agent_gives_it_what_another_replica_queued() -> None:
    store = InMemoryAssignmentStore()
    first, second, published = replicas(store, agent("a1", capacity={Channel.EMAIL: 1}))
    await first.on_activity(activity("c1", customer_id="ana"))
    await second.on_activity(activity("c2", customer_id="bob"))  # its view: a1 free, then full
    assert [type(e) for e in published.of("c2")] == [ConversationQueued]
    assert "c2" not in first.queue.waiting  # the first replica never saw it queued
    await first.on_resolved("c1", "event:r1")
    queued, given = published.of("c2")
    assert isinstance(given, ConversationAssigned)
    assert given.agent_id == "a1"
    assert given.seq == queued.seq + 1


async def test_a_replica_whose_view_says_full_rechecks_the_agents_after_queueing() -> None:
    """The other replica freed the agent and drained it before this one queued: the
    queueing replica re-reads the agents' load after writing the head, so no wake-up is
    lost between the two."""
    store = InMemoryAssignmentStore()
    first, second, published = replicas(store, agent("a1", capacity={Channel.EMAIL: 1}))
    await first.on_activity(activity("c1", customer_id="ana"))
    await second.load()  # the second replica's view: a1 full
    await first.on_resolved("c1", "event:r1")  # drains a1: nothing waits yet
    assert store.slots == {}
    await second.on_activity(activity("c2", customer_id="bob"))
    queued, given = published.of("c2")
    assert isinstance(queued, ConversationQueued)
    assert isinstance(given, ConversationAssigned)
    assert given.agent_id == "a1"


async def test_a_timed_out_offer_is_requeued_and_never_offered_to_that_agent_again() -> None:
    built, published, clock, _ = setup(agent("a1"), offers=True)
    await built.on_activity(activity("c1"))
    clock.advance(19)
    await built.tick()
    assert len(published.events) == 1  # not yet
    clock.advance(2)
    await built.tick()
    requeued = published.events[-1]
    assert isinstance(requeued, ConversationRequeued)
    assert requeued.reason["trigger"] == "timed_out"
    assert built.queue.waiting["c1"].excluded_agents == ["a1"]
    assert await built.drain("a1") == 0  # a1 has room, but never gets c1 again
    built.directory.apply(agent("a2"))
    assert await built.drain("a2") == 1


async def test_an_agent_going_offline_loses_offers_at_once_but_keeps_accepted_work() -> None:
    built, published, clock, _ = setup(agent("a1"), offers=True)
    await built.on_activity(activity("c1"))
    await built.on_activity(activity("c2"))
    await built.on_offer_answer("a1", "c1", accepted=True, cause="event:ok")
    built.directory.apply(agent("a1", status=AgentStatus.OFFLINE))
    await built.on_presence("a1", AgentStatus.OFFLINE)
    requeued = published.events[-1]
    assert isinstance(requeued, ConversationRequeued)
    assert requeued.conversation_id == "c2"
    assert requeued.reason["trigger"] == "agent_offline"
    current = await built.current("c1")
    assert current is not None
    assert current.status == RouteStatus.ASSIGNED
    assert current.agent_id == "a1"
    del clock


async def test_accepted_work_of_an_offline_agent_is_reassigned_after_the_timeout() -> None:
    built, published, clock, _ = setup(agent("a1"), agent("a2", capacity={}), reassign="120")
    await built.on_activity(activity("c1"))
    offline = replace(agent("a1", status=AgentStatus.OFFLINE), status_since=clock.now())
    built.directory.apply(offline)
    await built.on_presence("a1", AgentStatus.OFFLINE)
    await built.tick()
    assert len(published.events) == 1
    built.directory.apply(agent("a2"))
    clock.advance(121)
    await built.tick()
    requeued, reassigned = published.events[-2:]
    assert isinstance(requeued, ConversationRequeued)
    assert isinstance(reassigned, ConversationAssigned)
    assert reassigned.agent_id == "a2"


async def test_sla_escalation_raises_priority_then_moves_to_overflow() -> None:
    built, published, clock, _ = setup()
    await built.on_activity(activity("c1"))
    sla: dict[str, Any] = {
        "conversation_id": "c1",
        "metric": SlaMetric.FIRST_RESPONSE,
        "policy": "default",
        "due_at": T0,
        "at": T0,
    }
    await built.on_sla(SlaAtRisk(**sla), "event:s1")
    raised = published.events[-1]
    assert isinstance(raised, ConversationEscalated)
    assert (raised.priority, raised.queue) == (Priority.HIGH, "general")
    await built.on_sla(SlaAtRisk(**sla), "event:s1-again")  # once per metric
    assert len(published.events) == 2
    await built.on_sla(SlaBreached(**sla), "event:s2")
    moved = published.events[-1]
    assert isinstance(moved, ConversationEscalated)
    assert moved.queue == "overflow"
    assert moved.waiting_since == raised.waiting_since
    del clock


async def test_escalation_ignores_conversations_already_with_an_agent() -> None:
    built, published, _, _ = setup(agent("a1"))
    await built.on_activity(activity("c1"))
    sla = SlaBreached(
        conversation_id="c1", metric=SlaMetric.FIRST_RESPONSE, policy="p", due_at=T0, at=T0
    )
    await built.on_sla(sla, "event:s")
    assert len(published.events) == 1


async def test_relaxation_steps_fire_at_their_timeouts() -> None:
    built, published, clock, _ = setup(agent("a1", skills={"billing": 3}))
    await built.on_activity(activity("c1", text="my invoice"))
    queued = published.events[-1]
    assert isinstance(queued, ConversationQueued)  # step 0 wants billing 8
    clock.advance(59)
    await built.tick()
    assert len(published.events) == 1
    clock.advance(1)
    await built.tick()  # step 1 (60 s) relaxes the preference: a1 qualifies now
    assigned = published.events[-1]
    assert assigned.seq == 2
    assert isinstance(assigned, ConversationAssigned)
    assert assigned.agent_id == "a1"
    assert assigned.reason["trigger"] == "rematch"


async def test_waiting_too_long_moves_to_the_overflow_queue() -> None:
    built, published, clock, _ = setup()
    await built.on_activity(activity("c1"))
    clock.advance(600)
    await built.tick()
    moved = published.events[-1]
    assert isinstance(moved, ConversationEscalated)
    assert moved.queue == "overflow"
    assert moved.reason["trigger"] == "wait_timeout"


async def test_a_returning_customer_waits_for_the_agent_who_served_them() -> None:
    built, published, clock, _ = setup(agent("a1", capacity={Channel.EMAIL: 1}), agent("a2"))
    await built.on_activity(activity("c1", customer_id="ana"))
    first = published.events[-1]
    assert first.agent_id == "a1"  # a1 and a2 tie on score: the smaller id
    # c2 is the customer's next conversation (the timeline names c1 as an earlier one).
    await built.on_activity(activity("c2", customer_id="ana"), earlier=["c1"])  # a1 is full
    assert isinstance(published.events[-1], ConversationQueued)
    assert published.events[-1].reason["why"] == "waiting for the sticky agent"
    clock.advance(10)
    await built.on_resolved("c1", "event:r")
    again = published.events[-1]
    assert (again.conversation_id, again.agent_id) == ("c2", "a1")

    await built.on_activity(activity("c3", customer_id="ana"), earlier=["c2", "c1"])
    clock.advance(31)
    await built.tick()  # the sticky window ended: anyone may take it
    last = published.events[-1]
    assert (last.conversation_id, last.agent_id) == ("c3", "a2")


async def test_transfer_to_a_named_agent_who_is_full_waits_for_that_agent() -> None:
    built, published, _, store = setup(agent("a1"), agent("a2", capacity={Channel.EMAIL: 1}))
    await built.on_activity(activity("c0", customer_id="x"))
    await built.on_activity(activity("c1", customer_id="y"))
    holder = {e.conversation_id: e.agent_id for e in published.events}
    assert holder == {"c0": "a1", "c1": "a2"}
    transfer = ConversationTransferred(conversation_id="c0", from_agent_id="a1", to_agent_id="a2")
    assert await built.on_transferred(transfer, "event:t") is None
    requeued = published.events[-1]
    assert isinstance(requeued, ConversationRequeued)
    assert built.queue.waiting["c0"].pinned_agent == "a2"
    assert "a1|email|0" not in store.slots
    await built.on_resolved("c1", "event:r")
    assigned = published.events[-1]
    assert (assigned.conversation_id, assigned.agent_id) == ("c0", "a2")
    bad = ConversationTransferred(conversation_id="c0", from_agent_id="a2", to_queue="nope")
    assert await built.on_transferred(bad, "event:t2") == "transfer to unknown queue 'nope'"


async def test_the_state_is_read_past_a_lagging_head() -> None:
    built, _, _, store = setup()
    await built.on_activity(activity("c1"))
    stale = store.heads["c1"]
    await built.on_sla(
        SlaBreached(
            conversation_id="c1", metric=SlaMetric.FIRST_RESPONSE, policy="p", due_at=T0, at=T0
        ),
        "event:s",
    )
    store.heads["c1"] = stale  # as if a slower replica's head write landed last
    current = await built.current("c1")
    assert current is not None
    assert current.seq == 2
    assert store.heads["c1"].seq == 2  # and the head is repaired


async def test_three_engines_with_stale_views_never_over_assign() -> None:
    """Three replicas on one store, each with its own (stale) views, deciding at once:
    the slot and decision inserts keep every agent within capacity, and each
    conversation with one holder at a time."""
    rng = random.Random(3)
    store = InMemoryAssignmentStore()
    engines: list[AssignmentEngine] = []

    def wire(index: int) -> AssignmentEngine:
        async def publish(items: Sequence[Outgoing]) -> None:
            await asyncio.sleep(rng.uniform(0, 0.002))  # Kafka's acknowledgement

        built = AssignmentEngine(
            store=store,
            policy=policy(),
            clock=FakeClock(T0),
            publish=publish,
            detector=FixedLanguage(),
            replica=f"r{index}",
        )
        for n in range(4):
            built.directory.apply(agent(f"a{n}", capacity={Channel.EMAIL: 2}))
        return built

    engines.extend(wire(i) for i in range(3))
    max_load = 0

    async def check() -> None:
        nonlocal max_load
        per_agent: dict[str, int] = {}
        for slot in store.slots.values():
            per_agent[slot.agent_id] = per_agent.get(slot.agent_id, 0) + 1
        max_load = max([max_load, *per_agent.values()])

    async def arrive(n: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.01))
        await rng.choice(engines).on_activity(activity(f"c{n}", customer_id=f"x{n}"))
        await check()

    async def resolve_some() -> None:
        for _ in range(60):
            await asyncio.sleep(rng.uniform(0, 0.003))
            held = [s.conversation_id for s in store.slots.values()]
            if held:
                await rng.choice(engines).on_resolved(rng.choice(held), f"event:{rng.random()}")
            await check()

    await asyncio.gather(*(arrive(n) for n in range(40)), resolve_some())
    assert 0 < max_load <= 2
    for n in range(40):
        states = [d.state for k, d in sorted(store.decisions.items()) if k.startswith(f"c{n}:")]
        seqs = sorted(s.seq for s in states)
        assert seqs == list(range(1, len(seqs) + 1))
    slots_by_conversation = [s.conversation_id for s in store.slots.values()]
    assert len(slots_by_conversation) == len(set(slots_by_conversation))


async def test_a_reply_by_the_offered_agent_accepts_and_awaiting_customer_can_free_the_slot() -> (
    None
):
    text = POLICY.replace(
        "capacity: {offline_reassign_after_seconds: %(reassign)s}",
        "capacity: {offline_reassign_after_seconds: %(reassign)s, "
        "release_when_awaiting_customer: true}",
    )
    store = InMemoryAssignmentStore()
    built, published, _ = engine(policy(offers=True, text=text), store=store)
    built.directory.apply(agent("a1", capacity={Channel.EMAIL: 1}))
    await built.on_activity(activity("c1", customer_id="ana"))
    await built.on_activity(activity("c2", customer_id="bob"))
    await built.on_reply("c1", "a1", awaiting_customer=True, cause="event:reply")
    accepted = [e for e in published.of("c1") if isinstance(e, ConversationAssigned)][-1]
    assert accepted.reason["offer"] == "accepted"
    current = await built.current("c1")
    assert current is not None
    assert current.status == RouteStatus.AWAITING_CUSTOMER
    offered = published.events[-1]  # the freed slot went to the waiting conversation
    assert (offered.conversation_id, offered.agent_id) == ("c2", "a1")
    await built.on_resolved("c2", "event:r2")
    await built.on_activity(activity("c1", customer_id="ana", kind="message", message_id="m2"))
    back = published.events[-1]
    assert (back.conversation_id, back.agent_id) == ("c1", "a1")  # back to its agent


async def test_a_reopened_conversation_goes_back_to_its_agent_and_a_queue_transfer_requeues() -> (
    None
):
    built, published, _, store = setup(agent("a1"), agent("a2"))
    await built.on_activity(activity("c1", customer_id="ana"))
    holder = published.events[-1].agent_id
    await built.on_resolved("c1", "event:r")
    assert store.slots == {}
    await built.on_reopened("c1", "event:o")
    again = published.events[-1]
    assert isinstance(again, ConversationAssigned)
    assert again.agent_id == holder
    assert again.reason["sticky"] is True
    transfer = ConversationTransferred(
        conversation_id="c1", from_agent_id=holder, to_queue="billing"
    )
    await built.on_transferred(transfer, "event:t")
    moved = published.events[-1]
    assert moved.queue == "billing"
    assert moved.seq > again.seq


async def test_more_capacity_takes_work_from_the_queue_at_once() -> None:
    built, published, _, _ = setup(agent("a1", capacity={Channel.EMAIL: 1}))
    await built.on_activity(activity("c1"))
    await built.on_activity(activity("c2"))
    assert isinstance(published.events[-1], ConversationQueued)
    built.directory.apply(replace(agent("a1", capacity={Channel.EMAIL: 2}), version=(0, 5)))
    assert await built.drain("a1") == 1
    assert published.events[-1].conversation_id == "c2"


async def test_a_decision_left_unpublished_by_a_crash_is_published_by_the_next_reader() -> None:
    store = InMemoryAssignmentStore()
    crashing, _, clock = engine(policy(), store=store)
    crashing.directory.apply(agent("a1"))

    async def broker_down(items: Sequence[Outgoing]) -> None:
        raise ConnectionError("broker unreachable")

    crashing.publish = broker_down
    with pytest.raises(ConnectionError):
        await crashing.on_activity(activity("c1"))
    assert "c1" not in store.heads  # claimed, never published, head not written
    survivor, published, _ = engine(policy(), store=store, start=clock.now())
    assert await survivor.on_activity(activity("c1")) == "unchanged"  # the redelivery
    (event,) = published.events
    assert isinstance(event, ConversationAssigned)
    assert (event.seq, event.agent_id) == (1, "a1")
    assert store.heads["c1"].seq == 1


async def test_a_slot_reserved_by_a_replica_that_crashed_before_deciding_is_released() -> None:
    built, _, clock, store = setup(agent("a1"))
    orphan = Slot("a1|email|0", "a1", "email", "c-lost", 1, clock.now())
    assert await store.reserve([orphan]) is None
    await built.on_activity(activity("c1"))
    clock.advance(5)
    await built.repair(timedelta(seconds=15))
    assert set(store.slots) == {"a1|email|0", "a1|email|1"}  # too young to judge
    clock.advance(20)
    await built.repair(timedelta(seconds=15))
    assert set(store.slots) == {"a1|email|1"}  # c1 keeps its slot


async def test_a_crashed_reservation_stamped_by_a_clock_far_ahead_is_still_repaired() -> None:
    """A replica whose clock runs ten minutes ahead reserves a slot and crashes. The
    repairing replica's clock is behind the stamp, yet it releases the slot once it has
    itself seen it held for the grace period: skew delays nothing."""
    built, _, clock, store = setup(agent("a1", capacity={Channel.EMAIL: 1}))
    ahead = clock.now() + timedelta(minutes=10)
    assert await store.reserve([Slot("a1|email|0", "a1", "email", "c-lost", 1, ahead)]) is None
    await built.repair(timedelta(seconds=15))
    assert set(store.slots) == {"a1|email|0"}  # just listed: too young to judge
    clock.advance(20)
    await built.repair(timedelta(seconds=15))
    assert store.slots == {}
    assert await built.on_activity(activity("c1")) == "routed"


async def test_a_database_outage_reaches_the_batch_consumer_as_a_transient_error() -> None:
    class DownStore(InMemoryAssignmentStore):
        async def head(self, conversation_id: str) -> None:
            raise ConnectionError(f"database unreachable reading {conversation_id}")

        async def heads_of(self, conversation_ids: Sequence[str]) -> dict[str, RouteState]:
            raise ConnectionError(f"database unreachable reading {len(conversation_ids)}")

    built, _, _ = engine(policy(), store=DownStore())
    deliveries = [
        Delivery(
            RawRecord("t", 0, n, f"c{n}".encode(), b"{}", ()),
            CloudEventAttributes(id=f"e{n}", type="x", source="/t", time=T0),
            activity(f"c{n}"),
            CONVERSATION_ACTIVITY,
        )
        for n in range(3)
    ]
    with pytest.raises(ConnectionError) as error:  # not an ExceptionGroup: retried
        await ConversationHandler(built, concurrency=2)(deliveries)
    assert is_transient(error.value)


async def test_messages_the_timeline_stored_are_routed_once_each_conversation_in_order() -> None:
    """``route_messages``, the timeline's hand-over: each conversation routed once, a
    second message of a routed conversation changes nothing, and handing over the same
    batch again (a retried timeline batch) publishes nothing new."""
    built, published, _, store = setup(agent("a1"))
    handler = ConversationHandler(built, concurrency=2)
    batch = [
        activity("c1", message_id="m1"),
        activity("c2", message_id="m2"),
        activity("c1", message_id="m3", kind="message"),
    ]
    await handler.route_messages(batch, {})
    decided = [(type(e).__name__, e.conversation_id, e.seq) for e in published.events]
    assert sorted(decided) == [("ConversationAssigned", "c1", 1), ("ConversationAssigned", "c2", 1)]
    assert len(store.slots) == 2
    await handler.route_messages(batch, {})
    assert len(published.events) == 2


async def test_after_a_capacity_decrease_the_load_never_exceeds_the_new_capacity() -> None:
    """Three conversations held under capacity 3, then capacity 2: a freed slot is not
    given out while the agent still holds 2, and a replica whose view still says 3 cannot
    reserve the third slot."""
    built, published, _, store = setup()
    await store.update_agents(
        {"a1": {**agent("a1").to_document(), "capacity": {"email": 3}, "version": [0, 1]}}
    )
    built.directory.apply(agent("a1"))
    for n in range(4):
        await built.on_activity(activity(f"c{n}"))
    assert len(store.slots) == 3  # c3 waits
    lowered = {"capacity": {"email": 2}, "version": [0, 2]}
    await store.update_agents({"a1": lowered})  # the view of this replica still says 3

    await built.on_resolved("c0", "event:r0")  # frees slot 0; the agent still holds 2
    assert sorted(store.slots) == ["a1|email|1", "a1|email|2"]
    last = published.events[-1]
    assert (type(last), last.conversation_id) == (ConversationQueued, "c3")  # nothing new
    waiting = await built.current("c3")
    assert waiting is not None
    assert waiting.status == RouteStatus.WAITING

    # Freeing slot 2 (above the new capacity) leaves load 1 < 2: c3 gets slot 0 at once.
    await built.on_resolved("c2", "event:r2")
    assert sorted(store.slots) == ["a1|email|0", "a1|email|1"]
    assert store.slots["a1|email|0"].conversation_id == "c3"
    await built.on_resolved("c1", "event:r1")
    await built.on_activity(activity("c4"))
    await built.on_activity(activity("c5"))
    assert len(store.slots) == 2  # never more than the new capacity


async def test_the_shipped_policy_prefers_a_topic_skill_without_requiring_it() -> None:
    built, published, _ = engine()  # the shipped policy
    built.directory.apply(agent("bea", skills={"billing": 5}))
    built.directory.apply(agent("olu", skills={"orders": 5}))
    await built.on_activity(activity("c1", text="Hello, where is my order?"))
    assert published.events[-1].agent_id == "olu"  # the topic's skill fits best
    alone, published_alone, _ = engine()
    alone.directory.apply(agent("bea", skills={"billing": 5}))
    await alone.on_activity(activity("c1", text="Hello, where is my order?"))
    assigned = published_alone.events[-1]
    assert isinstance(assigned, ConversationAssigned)  # nobody has it: anyone may
    assert assigned.agent_id == "bea"
    classification = assigned.reason["classification"]
    assert isinstance(classification, dict)
    assert classification["topics"] == ["orders"]


async def test_the_shipped_policy_overflows_chat_well_inside_its_first_response_target() -> None:
    built, published, clock = engine()  # no agents: both wait
    await built.on_activity(activity("chat", channel=Channel.WHATSAPP, text="hello there"))
    await built.on_activity(activity("mail", text="hello there"))
    clock.advance(60)
    await built.tick()
    moved = [e.conversation_id for e in published.events if isinstance(e, ConversationEscalated)]
    assert moved == ["chat"]  # chat: a 5-minute target; email's is a day
    clock.advance(840)
    await built.tick()
    moved = [e.conversation_id for e in published.events if isinstance(e, ConversationEscalated)]
    assert moved == ["chat", "mail"]


class StallingStore(InMemoryAssignmentStore):
    """A replica's view of the shared store that freezes before its next claim, release
    or read of a head (a replica SIGSTOPped, or a long pause, in the middle of work)."""

    def __init__(self, shared: InMemoryAssignmentStore, *, before: str) -> None:
        super().__init__()
        self.slots, self.decisions, self.heads = shared.slots, shared.decisions, shared.heads
        self.agent_docs = shared.agent_docs
        self.before = before
        self.stalled = asyncio.Event()
        self.go_on = asyncio.Event()

    async def _maybe_stall(self, step: str) -> None:
        if step == self.before and not self.go_on.is_set():
            self.stalled.set()
            await self.go_on.wait()

    async def claim(self, decision: Decision) -> bool:
        await self._maybe_stall("claim")
        return await super().claim(decision)

    async def head(self, conversation_id: str) -> RouteState | None:
        await self._maybe_stall("head")
        return await super().head(conversation_id)

    async def release(self, slot_ids: Sequence[str], conversation_id: str, seq: int) -> None:
        await self._maybe_stall("release")
        await super().release(slot_ids, conversation_id, seq)


def holders(store: InMemoryAssignmentStore, agent_id: str) -> set[str]:
    return {
        s.conversation_id
        for s in store.heads.values()
        if s.status in (RouteStatus.OFFERED, RouteStatus.ASSIGNED) and s.agent_id == agent_id
    }


async def test_repair_never_frees_a_slot_a_stalled_replica_is_about_to_claim() -> None:
    """Replica A reserves the agent's only slot for c1 and freezes before claiming. B's
    repair finds the slot old and not held by c1, and B gives it to c2. A wakes up and
    claims c1 with the slot: two conversations on one slot, unless the repair fenced
    c1's step first (A's claim then fails and A gives back only its own reservation)."""
    store = InMemoryAssignmentStore()
    stalling = StallingStore(store, before="claim")
    one_slot = agent("a1", capacity={Channel.EMAIL: 1})
    a, _, clock_a = engine(policy(), store=stalling)
    b, _, clock_b = engine(policy(), store=store)
    for replica in (a, b):
        replica.directory.apply(one_slot)
    await store.save_agents([one_slot])
    stalled = asyncio.create_task(a.on_activity(activity("c1")))
    await stalling.stalled.wait()
    assert set(store.slots) == {"a1|email|0"}  # reserved for c1, not claimed yet
    clock_b.advance(60)  # longer than the repair's grace, by B's clock
    await b.repair(timedelta(seconds=15))
    await b.on_activity(activity("c2"))
    clock_a.advance(60)
    stalling.go_on.set()
    await stalled
    for conversation in ("c1", "c2"):
        await b.current(conversation)  # settles every head
    assert len(holders(store, "a1")) <= 1, holders(store, "a1")
    assert store.slots["a1|email|0"].conversation_id in holders(store, "a1")


async def test_a_late_release_never_frees_the_slot_of_a_conversation_that_took_it_since() -> None:
    """Replica A resolves c1 and freezes before releasing its slot. B's repair releases
    it (c1 no longer holds it) and gives it to c2. A's late release must not free c2's
    slot: a third conversation would get it while c2 still holds it."""
    store = InMemoryAssignmentStore()
    stalling = StallingStore(store, before="release")
    one_slot = agent("a1", capacity={Channel.EMAIL: 1})
    a, _, _ = engine(policy(), store=stalling)
    b, _, clock_b = engine(policy(), store=store)
    for replica in (a, b):
        replica.directory.apply(one_slot)
    await b.on_activity(activity("c1"))
    resolving = asyncio.create_task(a.on_resolved("c1", "resolved:c1"))
    await stalling.stalled.wait()
    clock_b.advance(60)
    await b.repair(timedelta(seconds=15))
    assert await b.on_activity(activity("c2")) == "routed"
    assert store.slots["a1|email|0"].conversation_id == "c2"
    stalling.go_on.set()
    await resolving
    assert store.slots["a1|email|0"].conversation_id == "c2"


async def test_a_repair_working_from_an_old_listing_never_frees_a_slot_taken_since() -> None:
    """Replica A's repair lists the held slots, c1's among them, and pauses. Meanwhile c1
    is resolved and c2 takes the same slot. A goes on with its old listing: c1 no
    longer holds the slot, so it releases c1's reservation, which must not be c2's."""
    store = InMemoryAssignmentStore()
    stalling = StallingStore(store, before="head")
    one_slot = agent("a1", capacity={Channel.EMAIL: 1})
    a, _, clock_a = engine(policy(), store=stalling)
    b, _, _ = engine(policy(), store=store)
    for replica in (a, b):
        replica.directory.apply(one_slot)
    await b.on_activity(activity("c1"))
    clock_a.advance(60)
    repairing = asyncio.create_task(a.repair(timedelta(seconds=15)))
    await stalling.stalled.wait()
    await b.on_resolved("c1", "resolved:c1")
    assert await b.on_activity(activity("c2")) == "routed"
    stalling.go_on.set()
    await repairing
    assert store.slots["a1|email|0"].conversation_id == "c2"


async def test_every_replica_reports_the_same_queue_and_load_gauges() -> None:
    """The gauges come from the database, not from a replica's view: the replica that
    never saw a conversation queued reports it, and one assigned by another replica
    since is no longer counted as waiting by the replica that queued it."""
    store = InMemoryAssignmentStore()
    first, second, _ = replicas(store, agent("a1", capacity={Channel.EMAIL: 1}))
    registries = [CollectorRegistry(), CollectorRegistry()]
    for built, registry in zip((first, second), registries, strict=True):
        built.metrics = AssignmentMetrics.create(registry)
    await first.on_activity(activity("c1", customer_id="ana"))
    await second.on_activity(activity("c2", customer_id="bob"))  # queued by the second

    def read(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    for built, registry in zip((first, second), registries, strict=True):
        await update_gauges(built)
        depth = read(registry, "switchboard_router_queue_depth", queue="general", priority="normal")
        assert depth == 1
        load = read(registry, "switchboard_router_agent_load", channel="email")
        assert load == 1
    await first.on_resolved("c1", "event:r1")  # the first replica gives c2 to a1
    await update_gauges(second)
    depth = read(
        registries[1], "switchboard_router_queue_depth", queue="general", priority="normal"
    )
    assert depth == 0
    age = read(
        registries[1],
        "switchboard_router_queue_oldest_age_seconds",
        queue="general",
        priority="normal",
    )
    assert age == 0
