"""Assignment's batch path (``AssignmentEngine.on_events`` and ``ConversationHandler``) on
the in-memory store: the same decisions and the same exclusivity as one at a time, and a
conversation that loses any race leaves the batch for the one-at-a-time path."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_common.contract import (
    Channel,
    ConversationAssigned,
    ConversationQueued,
    ConversationResolved,
    ReplySent,
)
from switchboard_common.kafka import Outgoing
from switchboard_devtools.testing.router_assignment import (
    T0,
    activity,
    agent,
    deliveries,
    engine,
    replica_handlers,
    state,
)
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.consumers import ConversationHandler
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.model import HOLDING, RouteState, RouteStatus, Slot
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.assignment.store import Decision, InMemoryAssignmentStore

pytestmark = pytest.mark.unit

POLICY = parse_policy(
    """
classification:
  topics:
    - {name: billing, keywords: [invoice], skills: {billing: 1}}
  language: {detect: false}
queues:
  - name: general
sticky: {enabled: true, wait_seconds: 0}
"""
)


def setup(*agents: Any) -> tuple[AssignmentEngine, Any, FakeClock, InMemoryAssignmentStore]:
    store = InMemoryAssignmentStore()
    built, published, clock = engine(POLICY, store=store)
    for a in agents:
        built.directory.apply(a)
    return built, published, clock, store


async def test_a_batch_goes_to_the_best_agents_within_capacity_and_the_rest_queues() -> None:
    built, published, _, store = setup(
        agent("a-low", skills={"billing": 4}, capacity={Channel.EMAIL: 1}),
        agent("a-high", skills={"billing": 9}, capacity={Channel.EMAIL: 2}),
    )
    batch = [activity(f"c{n}", text="my invoice") for n in range(5)]
    outcomes = await built.on_activities(batch)
    assert outcomes == {f"c{n}": "routed" for n in range(5)}
    events = {e.conversation_id: e for e in published.events}
    assigned = {c: e.agent_id for c, e in events.items() if isinstance(e, ConversationAssigned)}
    assert assigned == {"c0": "a-high", "c1": "a-high", "c2": "a-low"}
    assert all(isinstance(events[c], ConversationQueued) for c in ("c3", "c4"))
    assert events["c0"].reason["message_id"] == "msg-c0"
    assert events["c0"].required_skills == ["billing"]
    assert events["c3"].reason["why"] == "no eligible agent with free capacity"
    assert sorted(store.slots) == ["a-high|email|0", "a-high|email|1", "a-low|email|0"]
    assert {c: s.seq for c, s in store.heads.items()} == {f"c{n}": 1 for n in range(5)}
    assert [s.conversation_id for s in built.queue.sorted_waiting()] == ["c3", "c4"]
    # A redelivered batch changes nothing.
    assert await built.on_activities(batch) == {f"c{n}": "unchanged" for n in range(5)}
    assert len(published.events) == 5


async def test_sticky_customers_auto_replies_and_duplicates_in_one_batch() -> None:
    built, published, _, store = setup(agent("a1"), agent("a2", skills={"billing": 9}))
    # Ana's earlier conversations: a1 served c0 (resolved since); a2 was only offered c9.
    store.heads["c0"] = state(
        "c0", customer_id="ana", status=RouteStatus.RESOLVED, agent_id="a1", decided_at=T0
    )
    store.heads["c9"] = state(
        "c9", customer_id="ana", status=RouteStatus.WAITING, decided_at=T0 + timedelta(hours=1)
    )
    outcomes = await built.on_activities(
        [
            activity("c1", customer_id="ana"),
            activity("c2", auto_submitted=True),
            activity("c1", customer_id="ana", message_id="m-again"),
        ],
        {"c1": ["c9", "c0"]},
    )
    assert outcomes == {"c1": "routed", "c2": "not_routed"}  # the second c1 is left alone
    (event,) = published.events
    assert (event.conversation_id, event.agent_id, event.reason["sticky"]) == ("c1", "a1", True)


async def test_a_conversation_whose_head_lags_its_decisions_is_left_to_on_activity() -> None:
    built, published, _, store = setup(agent("a1"))
    other, _, _ = engine(POLICY, store=store)
    other.directory.apply(agent("a2"))
    other.publish = _broker_down
    with pytest.raises(ConnectionError):  # claimed step 1, crashed before publishing
        await other.on_activity(activity("c1"))
    outcomes = await built.on_activities([activity("c1"), activity("c2")])
    assert outcomes == {"c1": None, "c2": "routed"}
    assert await built.on_activity(activity("c1")) == "unchanged"  # publishes and settles
    assert sorted((e.conversation_id, e.seq) for e in published.events) == [("c1", 1), ("c2", 1)]
    assert store.heads["c1"].seq == 1


async def _broker_down(items: Sequence[Outgoing]) -> None:
    raise ConnectionError(f"broker unreachable ({len(items)} records)")


class RacingStore(InMemoryAssignmentStore):
    """Another replica claims ``rival`` just before this batch claims its decisions."""

    rival: Decision | None = None

    async def claim_many(self, decisions: Sequence[Decision]) -> list[bool]:
        if self.rival is not None:
            assert await self.claim(self.rival)
            self.rival = None
        return await super().claim_many(decisions)


async def test_lost_slot_and_decision_races_give_the_slots_back() -> None:
    store = RacingStore()
    built, published, _ = engine(POLICY, store=store)
    built.directory.apply(agent("a1", capacity={Channel.EMAIL: 3}))
    # Another replica holds slot 0 (this view does not know) and takes step 1 of c2.
    await store.reserve([Slot("a1|email|0", "a1", "email", "x9", 1, T0)])
    store.rival = Decision(state("c2"), "queued", {}, "rival-0")
    outcomes = await built.on_activities([activity(f"c{n}") for n in range(1, 4)])
    # c2 lost its step and gave slot 1 back; c1 lost slot 0, chose again with the view so
    # corrected (a1 looked full: queued), and the re-check after queueing found slot 1.
    assert outcomes == {"c1": "routed", "c2": None, "c3": "routed"}
    holders = {s: slot.conversation_id for s, slot in store.slots.items()}
    assert holders == {"a1|email|0": "x9", "a1|email|1": "c1", "a1|email|2": "c3"}
    steps = [(e.conversation_id, type(e).__name__) for e in published.events]
    assert steps == [
        ("c1", "ConversationQueued"),
        ("c3", "ConversationAssigned"),
        ("c1", "ConversationAssigned"),
    ]
    # The one-at-a-time path finds c2 moved by the other replica.
    assert await built.on_activity(activity("c2")) == "unchanged"


async def test_a_capacity_lowered_behind_the_view_is_enforced_for_the_whole_batch() -> None:
    built, published, _, store = setup()
    await store.update_agents({"a1": {**agent("a1").to_document(), "capacity": {"email": 3}}})
    built.directory.apply(agent("a1", capacity={Channel.EMAIL: 3}))
    await built.on_activities([activity("c0")])
    await store.update_agents({"a1": {"capacity": {"email": 1}, "version": [0, 9]}})
    # The view still says 3: c1 and c2 get slots 1 and 2, which the stored capacity of 1
    # refuses; their slots are given back and, a1 being full, both are queued.
    outcomes = await built.on_activities([activity("c1"), activity("c2")])
    assert outcomes == {"c1": "routed", "c2": "routed"}
    assert sorted(store.slots) == ["a1|email|0"]
    assert built.directory.load("a1") == {"email": 1}
    assert [type(e) for e in published.events[-2:]] == [ConversationQueued] * 2
    assert await built.on_activity(activity("c1")) == "unchanged"


class CountingStore(InMemoryAssignmentStore):
    """Counts the claims (one ``claim_many`` per ``execute``) and the heads read."""

    claims = 0
    heads_read = 0

    def __init__(self) -> None:
        super().__init__()
        #: The conversations of each claim (one ``claim_many`` per ``execute``).
        self.claimed: list[set[str]] = []

    async def claim_many(self, decisions: Sequence[Decision]) -> list[bool]:
        self.claims += 1
        self.claimed.append({d.state.conversation_id for d in decisions})
        return await super().claim_many(decisions)

    async def heads_of(self, conversation_ids: Sequence[str]) -> dict[str, RouteState]:
        self.heads_read += len(conversation_ids)
        return await super().heads_of(conversation_ids)


async def test_resolutions_transfers_and_sla_warnings_of_a_batch_are_one_execute() -> None:
    """Not only customer messages: every conversation's leading resolution, reopening,
    transfer or SLA warning is decided in the same bulk round trips, and the agents
    they free take the next waiting conversations."""
    store = CountingStore()
    built, published, _ = engine(POLICY, store=store)
    built.directory.apply(agent("a1", capacity={Channel.EMAIL: 3}))
    handler = ConversationHandler(built, concurrency=4)
    await handler(deliveries([(f"c{n}", activity(f"c{n}")) for n in range(5)]))
    assert store.claims == 1  # three assigned, two queued, one claim
    assert store.heads_read == 5  # new customers: no earlier conversations to read
    follow_ups = [(f"c{n}", activity(f"c{n}", message_id=f"m{n}b")) for n in range(5)]
    await handler(deliveries(follow_ups))
    assert (store.claims, store.heads_read) == (1, 10)  # routed already: no step
    store.claims = 0
    resolved = [(f"c{n}", ConversationResolved(conversation_id=f"c{n}", at=T0)) for n in range(3)]
    assert await handler(deliveries(resolved)) == []
    # One claim for the three resolutions; the freed agent then took c3 and c4 (one each).
    assert store.claims == 3
    holders = sorted(s.conversation_id for s in store.slots.values())
    assert holders == ["c3", "c4"]
    assert [type(e).__name__ for e in published.of("c4")] == [
        "ConversationQueued",
        "ConversationAssigned",
    ]


async def test_the_handler_batches_leading_messages_and_keeps_each_conversation_in_order() -> None:
    built, published, _, store = setup(agent("a1", capacity={Channel.EMAIL: 1}))
    handler = ConversationHandler(built, concurrency=4)
    rejected = await handler(
        deliveries(
            [
                ("c1", activity("c1")),
                ("c2", activity("c2")),
                ("c2", activity("c2", message_id="m-2b")),  # a second round: unchanged
                ("c1", ConversationResolved(conversation_id="c1", at=T0)),
                ("c3", ConversationResolved(conversation_id="c3", at=T0)),
                ("c3", activity("c3")),
            ]
        )
    )
    assert rejected == []
    # Round one: c1 assigned, c2 queued, c3's resolution changes nothing (unknown yet).
    # Round two, one execute: c1 resolved, c2's second message unchanged, c3 queued;
    # then the freed agent drains the queue head, c2 (first in queue order).
    assert [(e.conversation_id, type(e).__name__) for e in published.events] == [
        ("c1", "ConversationAssigned"),
        ("c2", "ConversationQueued"),
        ("c3", "ConversationQueued"),
        ("c2", "ConversationAssigned"),
    ]
    assert [s.conversation_id for s in store.slots.values()] == ["c2"]


# --------------------------------------------------------------------------- replicas


class YieldingStore(InMemoryAssignmentStore):
    """The in-memory store, giving other tasks a turn before and after every call, so
    concurrent batches interleave between their steps as they do on a real server."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    async def _turn(self) -> None:
        for _ in range(self.rng.randint(0, 3)):
            await asyncio.sleep(0)

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(value):
            return value

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self._turn()
            result = await value(*args, **kwargs)
            await self._turn()
            return result

        return call


def check_exclusive(store: InMemoryAssignmentStore, capacity: dict[str, int]) -> None:
    """No agent over capacity; every slot held by the latest decision of its holder and
    every holder's slots held; each conversation's steps numbered 1, 2, 3 ..."""
    load: dict[str, int] = {}
    for slot in store.slots.values():
        load[slot.agent_id] = load.get(slot.agent_id, 0) + 1
    assert all(load[a] <= capacity[a] for a in load), load
    latest: dict[str, RouteState] = {}
    seqs: dict[str, list[int]] = {}
    for decision in store.decisions.values():
        state = decision.state
        seqs.setdefault(state.conversation_id, []).append(state.seq)
        known = latest.get(state.conversation_id)
        if known is None or state.seq > known.seq:
            latest[state.conversation_id] = state
    for conversation_id, numbers in seqs.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), conversation_id
    for slot in store.slots.values():
        holder = latest[slot.conversation_id]
        assert holder.status in HOLDING
        assert slot.slot_id in holder.slots
    for state in latest.values():
        if state.status in HOLDING:
            assert all(s in store.slots for s in state.slots), state.conversation_id


@settings(max_examples=60, deadline=None)
@given(
    capacities=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    batches=st.lists(
        st.tuples(st.integers(0, 2), st.lists(st.integers(0, 11), min_size=1, max_size=8)),
        min_size=1,
        max_size=8,
    ),
    resolves=st.lists(st.integers(0, 11), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_replicas_deciding_overlapping_batches_never_over_assign(
    capacities: list[int],
    batches: list[tuple[int, list[int]]],
    resolves: list[int],
    seed: int,
) -> None:
    """Three replicas (own views, each stale about the others' slots) handle
    overlapping batches of the same conversations at once, with resolves racing them,
    through the handler (batch first, the one-at-a-time path for what it left)."""
    rng = random.Random(seed)
    capacity = {f"a{n}": c for n, c in enumerate(capacities)}

    async def scenario() -> InMemoryAssignmentStore:
        store = YieldingStore(rng)
        handlers = replica_handlers(store, POLICY, capacity)

        async def run(replica: int, conversations: list[int]) -> None:
            await handlers[replica](
                deliveries(
                    [(f"c{c}", activity(f"c{c}", customer_id=f"x{c}")) for c in conversations]
                )
            )

        async def resolve(conversation: int) -> None:
            await asyncio.sleep(0)
            event = ConversationResolved(conversation_id=f"c{conversation}", at=T0)
            await handlers[conversation % 3](deliveries([(f"c{conversation}", event)]))

        await asyncio.gather(*(run(r, cs) for r, cs in batches), *(resolve(c) for c in resolves))
        return store

    store = asyncio.run(scenario())
    check_exclusive(store, capacity)
    decided = {d.state.conversation_id for d in store.decisions.values()}
    assert decided == {f"c{c}" for _, cs in batches for c in cs}  # none lost


async def test_replies_of_a_batch_free_their_slots_in_one_execute() -> None:
    """Replies that wait on the customer free the agents' slots in one claim for the
    batch; a reply that accepts an offer still takes its two steps (one at a time); a
    reply by someone who does not hold the conversation, or a redelivered one, changes
    nothing."""
    policy = parse_policy(
        "queues:\n  - name: general\nsticky: {enabled: false}\n"
        "offers: {require_acceptance: true}\n"
        "capacity: {release_when_awaiting_customer: true}\n"
    )
    store = CountingStore()
    built, published, _ = engine(policy, store=store)
    built.directory.apply(agent("a1", capacity={Channel.EMAIL: 3}))
    handler = ConversationHandler(built, concurrency=4)
    await handler(deliveries([(f"c{n}", activity(f"c{n}")) for n in range(5)]))
    for conversation_id in ("c0", "c1"):  # c2 stays offered
        await built.on_offer_answer(
            "a1", conversation_id, accepted=True, cause=f"event:{conversation_id}"
        )
    store.claimed.clear()

    def reply(conversation_id: str, agent_id: str = "a1") -> tuple[str, ReplySent]:
        sent = ReplySent(
            conversation_id=conversation_id, agent_id=agent_id, sent_at=T0, awaiting_customer=True
        )
        return conversation_id, sent

    batch = deliveries([reply("c0"), reply("c1"), reply("c2"), reply("c3", agent_id="a9")])
    assert await handler(batch) == []
    now = {c: await built.current(c) for c in ("c0", "c1", "c2")}
    assert {c: s.status for c, s in now.items() if s} == dict.fromkeys(
        ("c0", "c1", "c2"),
        RouteStatus.AWAITING_CUSTOMER,  # c2: accepted, then waiting
    )
    assert {"c0", "c1"} in store.claimed  # the two replies in one claim
    accepted = [e for e in published.of("c2") if isinstance(e, ConversationAssigned)]
    assert accepted[-1].reason["offer"] == "accepted"
    # The freed slots went to the waiting c3 and c4 (a9's reply changed nothing).
    assert sorted(s.conversation_id for s in store.slots.values()) == ["c3", "c4"]
    before = len(published.events)
    store.claimed.clear()
    assert await handler(batch) == []  # redelivered: nothing changes
    assert (len(published.events), store.claimed) == (before, [])
