"""Two router processes in one consumer group; one customer writes by email and WhatsApp
at once: one customer, one open conversation per thread, order kept. And a new sender
whose records land on every partition at once still makes exactly one customer."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    CONVERSATION_ACTIVITY,
    INBOUND,
    Channel,
    ContractModel,
    ConversationActivity,
    MessageReceived,
    TopicNames,
)
from switchboard_common.mongo import Document
from switchboard_devkit.running.processes import ServiceProcess
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    ADMIN_TOKEN,
    READ_TOKEN,
    bearer,
    eventually,
    inbound,
    message_ref,
    produce,
    router_process,
)
from switchboard_router.timeline.identity import identity_of

pytestmark = pytest.mark.integration

EACH = 60  # messages per channel
PHONE = "+34600111222"


def email_stream() -> list[MessageReceived]:
    """A long email thread: every message answers the previous one."""
    first = inbound("e-0", subject="Order 1234 never arrived", at=T0)
    return [first] + [
        inbound(
            f"e-{n}",
            subject="Re: Order 1234 never arrived",
            at=T0 + timedelta(seconds=2 * n),
            in_reply_to=message_ref(f"e-{n - 1}"),
            references=[message_ref("e-0"), message_ref(f"e-{n - 1}")],
        )
        for n in range(1, EACH)
    ]


def whatsapp_stream() -> list[MessageReceived]:
    return [
        inbound(
            f"w-{n}", channel=Channel.WHATSAPP, sender=PHONE, at=T0 + timedelta(seconds=2 * n + 1)
        )
        for n in range(EACH)
    ]


async def started(env: dict[str, str], count: int) -> list[ServiceProcess]:
    replicas = [router_process(env, output=sys.stdout) for _ in range(count)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        await asyncio.to_thread(replica.wait_ready, 120)
    return replicas


async def customer_of(url: str, identity: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=bearer(READ_TOKEN)) as http:
        items: list[dict[str, Any]] = (
            await http.get("/customers", params={"identity": identity})
        ).json()["items"]
        return items[0] if items else None


async def send(
    infra: Infra, topics: TopicNames, messages: Sequence[MessageReceived], key: Any
) -> None:
    records: list[tuple[str, str, ContractModel]] = [(INBOUND, key(m), m) for m in messages]
    await produce(infra.kafka_bootstrap, topics, records)


@pytest.mark.timeout(900)
async def test_two_replicas_keep_one_customer_one_open_conversation_per_thread_in_order(
    service_env: dict[str, str],
    infra: Infra,
    topics: TopicNames,
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
) -> None:
    replicas = await started(service_env, 2)
    try:
        first, second = (r.base_url for r in replicas)
        emails, chats = email_stream(), whatsapp_stream()
        # The customer exists and the CRM knows her phone: her WhatsApp identity, new to
        # the router, will be hers from its first message.
        await send(infra, topics, emails[:1], identity_of)
        ana = await eventually(lambda: customer_of(second, "email:ana@example.com"))
        async with httpx.AsyncClient(base_url=first, timeout=30) as http:
            linked = await http.post(
                f"/admin/customers/{ana['customer_id']}/profile",
                json={"phones": [PHONE]},
                headers=bearer(ADMIN_TOKEN),
            )
            assert linked.status_code == 200, linked.text
        # Both channels at once, each in its own order.
        await asyncio.gather(
            send(infra, topics, emails[1:], identity_of), send(infra, topics, chats, identity_of)
        )

        db = mongo_client[service_env["MONGODB_DATABASE"]]

        async def all_stored() -> list[Document] | None:
            found = await db["timeline_messages"].find({}).to_list()
            return found if len(found) >= 2 * EACH else None

        stored = await eventually(all_stored, timeout=300, interval=1.0)
        by_phone = await customer_of(first, f"whatsapp:{PHONE}")
        assert by_phone is not None
        assert by_phone["customer_id"] == ana["customer_id"]
        assert await db["customers"].count_documents({}) == 1

        conversations = await db["timeline_conversations"].find({}).to_list()
        assert sorted((c["channel"], c["status"]) for c in conversations) == [
            ("email", "open"),
            ("whatsapp", "open"),
        ]
        per_conversation: dict[str, list[Document]] = {}
        for document in stored:
            per_conversation.setdefault(document["conversation_id"], []).append(document)
        for documents in per_conversation.values():
            documents.sort(key=lambda d: d["index"])
            # Applied in the order the customer sent them: index order is send order.
            sent = [d["received_at"] for d in documents]
            assert sent == sorted(sent)
            assert [d["index"] for d in documents] == list(range(1, EACH + 1))

        activities = await probe.read_events(CONVERSATION_ACTIVITY, count=2 * EACH, timeout=120)
        streams: dict[str, list[int]] = {}
        for _, event in activities:
            assert isinstance(event, ConversationActivity)
            assert event.customer_id == ana["customer_id"]
            streams.setdefault(event.conversation_id, []).append(event.message_count)
        assert len(streams) == 2
        for counts in streams.values():
            assert counts == sorted(counts)  # each conversation's events in order
            assert set(counts) == set(range(1, EACH + 1))
    finally:
        for replica in replicas:
            replica.stop()


@pytest.mark.timeout(600)
async def test_a_new_identity_on_every_partition_at_once_makes_one_customer(
    service_env: dict[str, str],
    infra: Infra,
    topics: TopicNames,
    mongo_client: AsyncMongoClient[Document],
) -> None:
    replicas = await started(service_env, 2)
    try:
        # A producer that keys records badly spreads one sender over all partitions, so
        # both replicas see the brand-new identity at the same moment.
        messages = [
            inbound(
                f"x-{n}",
                channel=Channel.X,
                sender="777",
                at=T0 + timedelta(seconds=n),
                thread="dm-1",
            )
            for n in range(30)
        ]
        keys = iter(range(1_000_000))
        await send(infra, topics, messages, lambda _: f"spread-{next(keys)}")
        db = mongo_client[service_env["MONGODB_DATABASE"]]

        async def all_stored() -> int | None:
            count = await db["timeline_messages"].count_documents({})
            return count if count >= len(messages) else None

        await eventually(all_stored, timeout=300, interval=1.0)
        assert await db["customers"].count_documents({}) == 1
        assert await db["customer_identities"].count_documents({}) == 1
        customers = {d["customer_id"] async for d in db["timeline_messages"].find({})}
        assert len(customers) == 1
        assert await db["timeline_conversations"].count_documents({}) == 1
    finally:
        for replica in replicas:
            replica.stop()
