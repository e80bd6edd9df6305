"""Assignment's batch path on the real FerretDB server: three replicas (engines with their
own views, each unaware of the others' slots) decide overlapping batches of the same
conversations at once while resolves race them. The unordered slot and decision inserts
keep every agent within capacity and every conversation with one holder at a time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    Channel,
    ConversationResolved,
)
from switchboard_common.mongo import Document
from switchboard_devkit.servers.infra import Infra
from switchboard_devtools.testing.router_assignment import (
    T0,
    activity,
    agent,
    deliveries,
    replica_handlers,
)
from switchboard_router.assignment.model import HOLDING, RouteState
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.assignment.store import MongoAssignmentStore

pytestmark = pytest.mark.integration

POLICY = parse_policy("queues:\n  - name: general\nsticky: {enabled: false}\n")
AGENTS = {f"a{n}": 2 for n in range(4)}
CONVERSATIONS = 60


@pytest.fixture
async def store(infra: Infra, database_name: str) -> AsyncIterator[MongoAssignmentStore]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(infra.mongodb_url, tz_aware=True)
    mongo = MongoAssignmentStore(client[database_name])
    await mongo.ensure_indexes()
    await mongo.save_agents([agent(a, capacity={Channel.EMAIL: c}) for a, c in AGENTS.items()])
    yield mongo
    await client.close()


async def test_replicas_deciding_overlapping_batches_never_over_assign(
    store: MongoAssignmentStore,
) -> None:
    rng = random.Random(11)
    handlers = replica_handlers(store, POLICY, AGENTS, concurrency=4)

    async def batch(replica: int, conversations: list[int]) -> None:
        await handlers[replica](
            deliveries([(f"c{c}", activity(f"c{c}", customer_id=f"x{c}")) for c in conversations])
        )

    async def resolve(conversation: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.05))
        event = ConversationResolved(conversation_id=f"c{conversation}", at=T0)
        await handlers[conversation % 3](deliveries([(f"c{conversation}", event)]))

    # Every conversation in two or three replicas' batches, in different orders.
    jobs = []
    for replica in range(3):
        chosen = [c for c in range(CONVERSATIONS) if c % 3 == replica or rng.random() < 0.6]
        rng.shuffle(chosen)
        jobs += [batch(replica, chosen[i : i + 15]) for i in range(0, len(chosen), 15)]
    jobs += [resolve(c) for c in rng.sample(range(CONVERSATIONS), 10)]
    await asyncio.gather(*jobs)

    slots = await store.held_slots()
    load: dict[str, int] = {}
    for slot in slots:
        load[slot.agent_id] = load.get(slot.agent_id, 0) + 1
    assert load, "nothing was assigned"
    assert all(load[a] <= AGENTS[a] for a in load), load
    latest: dict[str, RouteState] = {}
    for conversation in range(CONVERSATIONS):
        cid = f"c{conversation}"
        seq = 1
        while (decision := await store.decision(cid, seq)) is not None:
            latest[cid] = decision.state
            seq += 1
        assert seq > 1, f"{cid} was never decided"
        head = await store.head(cid)
        assert head is not None
        assert head.seq in (seq - 1, seq - 2)  # a resolve does not always write the head
    for slot in slots:
        holder = latest[slot.conversation_id]
        assert holder.status in HOLDING
        assert slot.slot_id in holder.slots
    for state in latest.values():
        if state.status in HOLDING:
            assert {s.slot_id for s in slots} >= set(state.slots)
