"""One contract suite for both adapters of the assignment store: the in-memory fake (unit)
and MongoDB-wire on the real FerretDB server (integration), so the fake cannot drift."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import AgentStatus, Channel, Priority
from switchboard_common.mongo import Document
from switchboard_devkit.servers.infra import Infra
from switchboard_devtools.testing.router_assignment import T0, agent, state
from switchboard_router.assignment.model import RouteStatus, Slot, slot_id
from switchboard_router.assignment.store import (
    AssignmentStore,
    Decision,
    InMemoryAssignmentStore,
    MongoAssignmentStore,
)


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("mongo", marks=pytest.mark.integration),
    ]
)
def target(request: pytest.FixtureRequest) -> tuple[str, str] | None:
    """None for the in-memory store; the real server's URL and a fresh database else."""
    if request.param == "memory":
        return None
    infra: Infra = request.getfixturevalue("infra")
    return infra.mongodb_url, request.getfixturevalue("database_name")


@pytest.fixture
async def store(target: tuple[str, str] | None) -> AsyncIterator[AssignmentStore]:
    if target is None:
        yield InMemoryAssignmentStore()
        return
    client: AsyncMongoClient[Document] = AsyncMongoClient(target[0], tz_aware=True)
    mongo = MongoAssignmentStore(client[target[1]])
    await mongo.ensure_indexes()
    yield mongo
    await client.close()


def slot(
    agent_id: str, index: int, conversation: str = "c1", channel: str = "email", *, seq: int = 1
) -> Slot:
    return Slot(slot_id(agent_id, channel, index), agent_id, channel, conversation, seq, T0)


async def test_a_slot_is_held_once_and_released_by_id(store: AssignmentStore) -> None:
    assert await store.reserve([slot("a1", 0)]) is None
    assert await store.reserve([slot("a1", 0, "c2")]) == "a1|email|0"
    assert await store.reserve([slot("a2", 0, "c3")]) is None
    held = await store.held_slots(["a1"])
    assert [(s.slot_id, s.conversation_id, s.at) for s in held] == [("a1|email|0", "c1", T0)]
    assert len(await store.held_slots(["a1", "a2"])) == 2
    assert await store.held_slots(["a3"]) == []
    assert await store.load_summary() == {("a1", "email"): 1, ("a2", "email"): 1}
    assert await store.load_summary(["a2", "a3"]) == {("a2", "email"): 1}
    await store.release(["a2|email|0"], "c3", 1)
    await store.release(["a1|email|0"], "c1", 1)
    await store.release(["a1|email|0"], "c1", 1)  # idempotent
    assert await store.held_slots() == []


async def test_a_late_release_leaves_a_slot_reserved_since_alone(store: AssignmentStore) -> None:
    """A release names the reservation it gives back: the same slot id reserved again
    since, by another conversation or by a later step of the same one, stays held."""
    assert await store.reserve([slot("a1", 0, "c2")]) is None
    await store.release(["a1|email|0"], "c1", 1)  # c1 held it before, released twice
    assert [s.conversation_id for s in await store.held_slots()] == ["c2"]
    await store.release(["a1|email|0"], "c2", 0)  # a release by c2's step before it
    assert [s.conversation_id for s in await store.held_slots()] == ["c2"]
    await store.release(["a1|email|0"], "c2", 3)  # by a later step of c2: released
    assert await store.held_slots() == []


async def test_a_reservation_of_several_slots_is_all_or_nothing(store: AssignmentStore) -> None:
    assert await store.reserve([slot("a1", 1, channel="*")]) is None
    conflict = await store.reserve([slot("a1", 0), slot("a1", 1, "c2", channel="*")])
    assert conflict == "a1|*|1"
    assert [s.slot_id for s in await store.held_slots()] == ["a1|*|1"]


async def test_concurrent_reservations_never_exceed_capacity(store: AssignmentStore) -> None:
    """40 concurrent attempts at an agent with capacity 3 (where a conditional $inc on
    FerretDB granted 5): slot inserts grant exactly 3."""

    async def attempt(n: int) -> bool:
        for index in range(3):
            if await store.reserve([slot("a1", index, f"c{n}")]) is None:
                return True
        return False

    granted = await asyncio.gather(*(attempt(n) for n in range(40)))
    assert sum(granted) == 3
    assert len(await store.held_slots(["a1"])) == 3


async def test_a_decision_step_is_claimed_once(store: AssignmentStore) -> None:
    first = Decision(state("c1", seq=1), "queued", {"why": "x"}, "r1-0")
    assert await store.claim(first) is True
    assert await store.claim(Decision(state("c1", seq=1), "assigned", {}, "r2-0")) is False
    results = await asyncio.gather(
        *(store.claim(Decision(state("c1", seq=2), None, {}, f"r{n}")) for n in range(10))
    )
    assert sum(results) == 1
    read = await store.decision("c1", 1)
    assert read == first
    assert await store.decision("c1", 3) is None


async def test_heads_are_replaced_and_listed_by_status(store: AssignmentStore) -> None:
    waiting = state("c1", excluded_agents=["a9"], skills={"billing": 3})
    await store.put_head(waiting)
    await store.put_head(state("c2", status=RouteStatus.ASSIGNED, agent_id="a1"))
    assert await store.head("c1") == waiting
    assert await store.head("nope") is None
    assert [s.conversation_id for s in await store.routes([RouteStatus.WAITING])] == ["c1"]
    moved = waiting.model_copy(update={"seq": 2, "status": RouteStatus.OFFERED})
    await store.put_head(moved)
    assert await store.routes([RouteStatus.WAITING]) == []
    assert await store.routes([RouteStatus.OFFERED, RouteStatus.WAITING]) == [moved]


async def test_the_queue_is_read_in_queue_order_by_channel(store: AssignmentStore) -> None:
    """Most urgent first, then longest waiting; only waiting conversations on the
    channels asked for, at most ``limit``; and the ages of all of them for the gauges."""
    later = T0 + timedelta(seconds=30)
    await store.put_heads(
        [
            state("old", waiting_since=T0),
            state("new", waiting_since=later),
            state("urgent", waiting_since=later, priority=Priority.URGENT, queue="vip"),
            state("chat", waiting_since=T0, channel=Channel.WHATSAPP),
            state("taken", waiting_since=T0, status=RouteStatus.ASSIGNED, agent_id="a1"),
        ]
    )
    order = [s.conversation_id for s in await store.waiting(["email"], 10)]
    assert order == ["urgent", "old", "new"]
    assert [s.conversation_id for s in await store.waiting(["email"], 2)] == ["urgent", "old"]
    both = [s.conversation_id for s in await store.waiting(["email", "whatsapp"], 10)]
    assert both == ["urgent", "chat", "old", "new"]  # equal waits: by conversation id
    assert await store.waiting(["telegram"], 10) == []
    assert (await store.waiting(["email"], 1))[0] == state(
        "urgent", waiting_since=later, priority=Priority.URGENT, queue="vip"
    )
    assert await store.queue_summary() == [
        ("general", "normal", 3, T0),
        ("vip", "urgent", 1, later),
    ]


async def test_agents_are_set_field_by_field_and_paged_by_id(store: AssignmentStore) -> None:
    await store.save_agents([agent("b"), agent("a", skills={"billing": 4})])
    await store.update_agents(
        {"a": {"status": "away", "status_since": T0, "version": [1, 7]}, "c": {"status": "online"}}
    )
    agents = await store.agents()
    assert [a.agent_id for a in agents] == ["a", "b", "c"]
    first = agents[0]
    assert (first.status, first.skills, first.version) == (AgentStatus.AWAY, {"billing": 4}, (1, 7))
    assert first.capacity == {Channel.EMAIL: 3}
    assert agents[2].status == AgentStatus.ONLINE
    assert [a.agent_id for a in await store.agents_page(None, 2)] == ["a", "b"]
    assert [a.agent_id for a in await store.agents_page("b", 2)] == ["c"]


async def test_an_agent_remembers_its_highest_capacity_per_channel(store: AssignmentStore) -> None:
    await store.update_agents({"a": {"capacity": {"email": 5}, "version": [0, 1]}})
    await store.update_agents({"a": {"capacity": {"email": 2, "whatsapp": 1}, "version": [0, 2]}})
    found = await store.agent("a")
    assert found is not None
    assert found.capacity == {Channel.EMAIL: 2, Channel.WHATSAPP: 1}
    assert found.ceiling == {Channel.EMAIL: 5, Channel.WHATSAPP: 1}
    assert await store.agent("nobody") is None
    assert await store.slot_held("a|email|4") is False
    await store.reserve([slot("a", 4)])
    assert await store.slot_held("a|email|4") is True


# --------------------------------------------------------------------------- batch methods


async def test_reservations_of_a_batch_are_each_all_or_nothing(store: AssignmentStore) -> None:
    assert await store.reserve([slot("a1", 1)]) is None  # held by someone else
    conflicts = await store.reserve_many(
        [
            [slot("a1", 0, "c1"), slot("a1", 0, "c1", channel="*")],
            [slot("a1", 2, "c2"), slot("a1", 1, "c2")],  # meets the held slot: all undone
            [slot("a2", 0, "c3")],
            [],
        ]
    )
    assert conflicts == [None, "a1|email|1", None, None]
    held = {s.slot_id: s.conversation_id for s in await store.held_slots()}
    assert held == {"a1|*|0": "c1", "a1|email|0": "c1", "a1|email|1": "c1", "a2|email|0": "c3"}
    assert await store.reserve_many([]) == []


async def test_concurrent_batches_of_reservations_never_exceed_capacity(
    store: AssignmentStore,
) -> None:
    """Ten batches at once, each reserving every slot of an agent with capacity 3 for
    different conversations: each slot is granted to exactly one reservation."""

    async def batch(n: int) -> list[str | None]:
        return await store.reserve_many([[slot("a1", k, f"c{n}-{k}")] for k in range(3)])

    results = await asyncio.gather(*(batch(n) for n in range(10)))
    granted = [r for result in results for r in result if r is None]
    assert len(granted) == 3
    assert len(await store.held_slots(["a1"])) == 3


async def test_many_slots_are_released_at_once(store: AssignmentStore) -> None:
    await store.reserve_many([[slot("a1", k, "c1")] for k in range(5)])
    await store.release([slot_id("a1", "email", k) for k in (0, 2, 4, 9)], "c1", 1)
    assert [s.slot_id for s in await store.held_slots()] == ["a1|email|1", "a1|email|3"]
    assert await store.held_among(["a1|email|0", "a1|email|1", "a1|email|3", "b|x|0"]) == {
        "a1|email|1",
        "a1|email|3",
    }
    assert await store.held_among([]) == set()


async def test_many_reservations_are_given_back_in_one_call_each_only_its_own(
    store: AssignmentStore,
) -> None:
    """``release_many`` frees each named reservation like ``release`` does, and leaves a
    slot reserved since by another conversation or a later step alone."""
    await store.reserve_many(
        [
            [slot("a1", 0, "c1", seq=1), slot("a1", 1, "c1", seq=1)],
            [slot("a2", 0, "c2", seq=4)],
            [slot("a3", 0, "c3", seq=1)],
            [slot("a4", 0, "c4", seq=2)],
        ]
    )
    await store.release_many(
        [
            (["a1|email|0", "a1|email|1", "a1|email|1"], "c1", 1),  # its own: freed
            (["a2|email|0"], "c2", 3),  # an earlier step than the reservation: kept
            (["a3|email|0"], "c9", 1),  # another conversation's slot: kept
            (["a4|email|0"], "c4", 5),  # a later step of its holder: freed
            (["a5|email|0"], "c5", 1),  # held by nobody
        ]
    )
    assert [s.slot_id for s in await store.held_slots()] == ["a2|email|0", "a3|email|0"]
    await store.release_many([])


async def test_decisions_of_a_batch_are_each_claimed_once(store: AssignmentStore) -> None:
    assert await store.claim(Decision(state("c2", seq=1), "queued", {}, "r0-0")) is True
    batch = [
        Decision(state("c1", seq=1), "assigned", {"n": 1}, "r1-0"),
        Decision(state("c2", seq=1), "assigned", {}, "r1-1"),  # taken
        Decision(state("c3", seq=1), None, {}, "r1-2"),
    ]
    assert await store.claim_many(batch) == [True, False, True]
    rivals = await asyncio.gather(
        *(store.claim_many([Decision(state("c4", seq=1), None, {}, f"r{n}")]) for n in range(8))
    )
    assert sum(r[0] for r in rivals) == 1
    found = await store.decisions_at({"c1": 1, "c2": 1, "c3": 2, "nope": 1})
    assert set(found) == {"c1", "c2"}
    assert found["c1"] == batch[0]
    assert found["c2"].kind == "queued"  # the earlier claim stands
    assert await store.decisions_at({}) == {}


async def test_heads_of_a_batch_are_written_and_read_at_once(store: AssignmentStore) -> None:
    await store.put_head(state("c1"))
    moved = state("c1", seq=2, status=RouteStatus.ASSIGNED, agent_id="a1")
    fresh = state("c2", skills={"billing": 3})
    later = state("c3", seq=3)
    await store.put_heads([moved, fresh, state("c3", seq=2), later])  # the last of c3 wins
    assert await store.heads_of(["c1", "c2", "c3", "nope"]) == {
        "c1": moved,
        "c2": fresh,
        "c3": later,
    }
    assert [s.conversation_id for s in await store.routes([RouteStatus.WAITING])] == ["c2", "c3"]
    await store.put_heads([])
    assert await store.heads_of([]) == {}


async def test_agents_are_read_and_written_in_batches(
    store: AssignmentStore,
) -> None:
    await store.save_agents([agent("a"), agent("b", skills={"billing": 2})])
    found = await store.agents_by_id(["b", "a", "nobody"])
    assert sorted(found) == ["a", "b"]
    assert found["b"].skills == {"billing": 2}
