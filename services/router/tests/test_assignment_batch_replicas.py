"""Assignment's batch path on the real FerretDB server: three replicas (engines with their
own views, each unaware of the others' slots) decide overlapping batches of the same
conversations at once while resolves and agents' replies race them. The unordered slot
and decision inserts keep every agent within capacity and every conversation with one
holder at a time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    Channel,
    ConversationResolved,
    ReplySent,
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
from switchboard_router.assignment.model import HOLDING, RouteState, RouteStatus
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.assignment.store import MongoAssignmentStore

pytestmark = pytest.mark.integration

POLICY = parse_policy(
    "queues:\n  - name: general\nsticky: {enabled: false}\n"
    "capacity: {release_when_awaiting_customer: true}\n"
)
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

    async def reply(conversations: list[int], replica: int) -> None:
        """As soon as some of these conversations have an agent, their agents reply and
        wait on the customer (one batch, freeing the slots) while the other replicas'
        batches still run."""
        sent: list[tuple[str, ReplySent]] = []
        for _ in range(1000):  # at most about 10 s
            heads = await store.heads_of([f"c{c}" for c in conversations])
            sent = [
                (
                    head.conversation_id,
                    ReplySent(
                        conversation_id=head.conversation_id,
                        agent_id=head.agent_id,
                        sent_at=T0,
                        awaiting_customer=True,
                    ),
                )
                for head in heads.values()
                if head.status in HOLDING and head.agent_id is not None
            ]
            if sent:
                break
            await asyncio.sleep(0.01)
        await handlers[replica](deliveries(sent))

    # Every conversation in two or three replicas' batches, in different orders.
    jobs = []
    for replica in range(3):
        chosen = [c for c in range(CONVERSATIONS) if c % 3 == replica or rng.random() < 0.6]
        rng.shuffle(chosen)
        jobs += [batch(replica, chosen[i : i + 15]) for i in range(0, len(chosen), 15)]
    resolved = rng.sample(range(CONVERSATIONS), 10)
    jobs += [resolve(c) for c in resolved]
    # Replies to conversations nobody resolves, so that what they change is still seen.
    others = [c for c in range(CONVERSATIONS) if c not in resolved]
    jobs += [reply(rng.sample(others, 12), replica) for replica in range(3)]
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
        # Steps that list nothing (a reply waiting on the customer, resolving a held
        # conversation) leave the head behind; readers probe past it.
        assert 1 <= head.seq <= seq - 1
    waiting_on_customers = [s for s in latest.values() if s.status == RouteStatus.AWAITING_CUSTOMER]
    assert waiting_on_customers, "no reply freed a slot"
    assert all(not s.slots for s in waiting_on_customers)
    for slot in slots:
        holder = latest[slot.conversation_id]
        assert holder.status in HOLDING
        assert slot.slot_id in holder.slots
    for state in latest.values():
        if state.status in HOLDING:
            assert {s.slot_id for s in slots} >= set(state.slots)
