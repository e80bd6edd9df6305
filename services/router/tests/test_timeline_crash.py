"""The router process is killed (SIGKILL) at random points while thousands of messages
flow; after the restarts every message is in the timeline exactly once, in the
conversation that processing the stream once gives it."""

from __future__ import annotations

import asyncio
import random
import sys
from datetime import timedelta

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    CONVERSATION_ACTIVITY,
    DEADLETTER,
    INBOUND,
    Channel,
    ContractModel,
    ConversationActivity,
    MessageReceived,
    TopicNames,
)
from switchboard_common.mongo import Document
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    customer_message,
    eventually,
    inbound,
    message_ref,
    produce,
    router_process,
)
from switchboard_router.timeline.identity import identity_of
from switchboard_router.timeline.plan import MessageItem, plan_customer
from switchboard_router.timeline.threading import CustomerState, Placement, Policy

pytestmark = pytest.mark.integration

CUSTOMERS = 150
MESSAGES_EACH = 16  # 2400 messages
KILLS = 5
GAPS = [timedelta(minutes=2), timedelta(hours=3), timedelta(hours=30), timedelta(days=4)]


def conversation_stream(rng: random.Random) -> list[list[MessageReceived]]:
    """Per customer, messages in the order the customer sent them."""
    streams: list[list[MessageReceived]] = []
    for c in range(CUSTOMERS):
        at = T0 + timedelta(minutes=c)
        messages: list[MessageReceived] = []
        for n in range(MESSAGES_EACH):
            at += rng.choice(GAPS)
            message_id = f"c{c}-m{n}"
            if c % 2:
                phone = f"+3460{c:07d}"
                messages.append(inbound(message_id, channel=Channel.WHATSAPP, sender=phone, at=at))
                continue
            sender = f"customer{c}@example.com"
            if messages and rng.random() < 0.5:
                parent = rng.choice(messages)
                messages.append(
                    inbound(
                        message_id,
                        sender=sender,
                        subject=f"Re: {parent.subject}",
                        at=at,
                        in_reply_to=message_ref(parent.message_id),
                    )
                )
            else:
                subject = rng.choice(["Order", "Refund", "Login"])
                messages.append(inbound(message_id, sender=sender, subject=subject, at=at))
        streams.append(messages)
    return streams


def processed_once(streams: list[list[MessageReceived]]) -> dict[str, Placement]:
    """Where each message goes when its customer's stream is processed once."""
    placements: dict[str, Placement] = {}
    for messages in streams:
        state = CustomerState("reference")
        for message in messages:
            item = MessageItem.of(customer_message(message, "reference", identity_of(message)))
            plan = plan_customer(state, [item], Policy())
            state = plan.state
            placements[message.message_id] = plan.applied[0].placement
    return placements


def interleave(streams: list[list[MessageReceived]], rng: random.Random) -> list[MessageReceived]:
    """All customers at once, each customer's own messages in order."""
    cursors = [0] * len(streams)
    out: list[MessageReceived] = []
    while len(out) < sum(len(s) for s in streams):
        c = rng.choice([i for i, s in enumerate(streams) if cursors[i] < len(s)])
        out.append(streams[c][cursors[c]])
        cursors[c] += 1
    return out


@pytest.mark.timeout(900)
async def test_sigkilled_router_leaves_every_message_in_the_timeline_exactly_once(
    service_env: dict[str, str],
    infra: Infra,
    topics: TopicNames,
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
) -> None:
    seed = random.randrange(1_000_000)
    print(f"crash test seed {seed}")
    rng = random.Random(seed)
    streams = conversation_stream(rng)
    expected = processed_once(streams)
    flow = interleave(streams, rng)
    records: list[tuple[str, str, ContractModel]] = [(INBOUND, identity_of(m), m) for m in flow]
    db = mongo_client[service_env["MONGODB_DATABASE"]]

    router = router_process(service_env, output=sys.stdout)
    router.start()
    try:
        await asyncio.to_thread(router.wait_ready, 120)

        # Messages keep flowing in small bursts while the router is killed at random
        # moments (mid-batch, mid-write, mid-publish: wherever it happens to be).
        async def flow_in() -> None:
            for start in range(0, len(records), 30):
                await produce(infra.kafka_bootstrap, topics, records[start : start + 30])
                await asyncio.sleep(0.5)

        producer = asyncio.create_task(flow_in())
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 3.0))
            router.kill()
            done = await db["timeline_messages"].count_documents({})
            print(f"SIGKILL with {done} of {len(flow)} messages stored")
            router = router_process(service_env, output=sys.stdout)
            router.start()
            await asyncio.to_thread(router.wait_ready, 120)
        await producer

        async def all_stored() -> int | None:
            count = await db["timeline_messages"].count_documents({})
            return count if count >= len(flow) else None

        await eventually(all_stored, timeout=600, interval=1.0)
    finally:
        router.stop()

    stored = {
        d["_id"]: Placement(d["conversation_id"], d["placement"], d["index"], d["rule"])
        async for d in db["timeline_messages"].find({})
    }
    assert len(stored) == len(flow)
    mismatched = {
        k: (stored[k], expected[k])
        for k in expected
        if (stored[k].conversation_id, stored[k].kind, stored[k].index)
        != (expected[k].conversation_id, expected[k].kind, expected[k].index)
    }
    assert mismatched == {}

    # Replays publish some activities twice, so a count of records says nothing: read
    # until every message has spoken.
    async def every_message_said() -> dict[str, set[tuple[str, str, int]]] | None:
        said: dict[str, set[tuple[str, str, int]]] = {}
        for _, event in await probe.read_events(CONVERSATION_ACTIVITY, timeout=60):
            assert isinstance(event, ConversationActivity)
            said.setdefault(event.message_id, set()).add(
                (event.conversation_id, event.kind, event.message_count)
            )
        return said if set(said) >= set(expected) else None

    said = await eventually(every_message_said, timeout=300, interval=2.0)
    assert set(said) == set(expected)
    assert all(
        copies == {(p.conversation_id, p.kind, p.index)}
        for copies, p in ((said[k], expected[k]) for k in expected)
    )
    assert await probe.read(DEADLETTER, timeout=2.0) == []
