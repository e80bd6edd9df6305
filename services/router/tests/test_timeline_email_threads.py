"""Email threading through the running router on real Kafka and FerretDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from switchboard_common.contract import (
    CONVERSATION_ACTIVITY,
    INBOUND,
    ConversationActivity,
    MessageReceived,
)
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    RunningRouter,
    eventually,
    inbound,
    message_ref,
    running_router,
)

pytestmark = pytest.mark.integration

AGENT_REPLY_1 = "<agent-reply-1@helpdesk.example.com>"
AGENT_REPLY_2 = "<agent-reply-2@helpdesk.example.com>"
BROADCAST = "<newsletter-2026-03@marketing.example.com>"


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env) as handle:
        yield handle


async def send(probe: TopicProbe, *messages: MessageReceived) -> None:
    for message in messages:
        await probe.send(INBOUND, message, key=f"email:{message.sender.value.lower()}")


async def timeline_of(router: RunningRouter, identity: str, count: int) -> list[dict[str, Any]]:
    async def ready() -> list[dict[str, Any]] | None:
        customer = await router.customer_of(identity)
        if customer is None:
            return None
        items = await router.timeline(customer["customer_id"])
        return items if len(items) >= count else None

    items: list[dict[str, Any]] = await eventually(ready)
    return items


async def test_gmail_and_outlook_replies_and_a_client_without_in_reply_to_stay_in_one_conversation(
    router: RunningRouter, probe: TopicProbe
) -> None:
    subject = "Order 1234 has not arrived"
    first = inbound("m-1", subject=subject, at=T0)
    # Gmail: In-Reply-To names the agent's reply (never seen inbound), References the chain.
    gmail = inbound(
        "m-2",
        subject=f"Re: {subject}",
        at=T0 + timedelta(hours=2),
        in_reply_to=AGENT_REPLY_1,
        references=[message_ref("m-1"), AGENT_REPLY_1],
    )
    # A client that drops In-Reply-To but keeps References.
    no_in_reply_to = inbound(
        "m-3",
        subject=f"Re: Re: {subject}",
        at=T0 + timedelta(hours=5),
        references=[message_ref("m-1"), AGENT_REPLY_1, message_ref("m-2"), AGENT_REPLY_2],
    )
    # Outlook (German locale): only the unknown parent in the headers, "AW:" prefix.
    outlook = inbound(
        "m-4",
        subject=f"AW: {subject}",
        at=T0 + timedelta(days=1),
        in_reply_to=AGENT_REPLY_2,
        references=[AGENT_REPLY_2],
    )
    # Replying to the customer's own earlier message.
    own = inbound(
        "m-5",
        subject=f"RE: {subject}",
        at=T0 + timedelta(days=1, hours=1),
        in_reply_to=message_ref("m-4"),
        references=[message_ref("m-4")],
    )
    unrelated = inbound("m-6", subject="Invoice address change", at=T0 + timedelta(days=2))
    await send(probe, first, gmail, no_in_reply_to, outlook, own, unrelated)

    items = await timeline_of(router, "email:ana@example.com", 6)
    assert [i["message_id"] for i in items] == ["m-1", "m-2", "m-3", "m-4", "m-5", "m-6"]
    thread = {i["conversation_id"] for i in items[:5]}
    assert len(thread) == 1
    assert items[5]["conversation_id"] not in thread
    assert [i["threading_rule"] for i in items] == [
        "new",
        "references",
        "references",
        "subject",
        "in_reply_to",
        "new",
    ]
    assert [i["conversation_start"] for i in items] == [True, False, False, False, False, True]
    assert [i["index"] for i in items] == [1, 2, 3, 4, 5, 1]

    conversation = await router.conversation(items[0]["conversation_id"])
    assert conversation["conversation"]["status"] == "open"
    assert conversation["conversation"]["message_count"] == 5
    assert conversation["conversation"]["subject"] == subject
    assert [m["message_id"] for m in conversation["items"]] == ["m-1", "m-2", "m-3", "m-4", "m-5"]

    activities = await probe.read_events(CONVERSATION_ACTIVITY, count=6)
    kinds = {
        e.message_id: (e.kind, e.message_count)
        for _, e in activities
        if isinstance(e, ConversationActivity)
    }
    assert kinds == {
        "m-1": ("opened", 1),
        "m-2": ("message", 2),
        "m-3": ("message", 3),
        "m-4": ("message", 4),
        "m-5": ("message", 5),
        "m-6": ("opened", 1),
    }


async def test_two_people_replying_to_one_broadcast_get_a_conversation_each(
    router: RunningRouter, probe: TopicProbe
) -> None:
    subject = "Re: Our new opening hours"
    ana = inbound(
        "ana-1",
        sender="Ana@Example.com",
        subject=subject,
        at=T0,
        in_reply_to=BROADCAST,
        references=[BROADCAST],
    )
    bob = inbound(
        "bob-1",
        sender="bob@example.org",
        subject=subject,
        at=T0 + timedelta(minutes=1),
        in_reply_to=BROADCAST,
        references=[BROADCAST],
    )
    # Bob answers Ana's reply (she had copied him): a different sender on Ana's thread.
    bob_on_ana = inbound(
        "bob-2",
        sender="bob@example.org",
        subject=f"Re: {subject}",
        at=T0 + timedelta(minutes=5),
        in_reply_to=message_ref("ana-1"),
        references=[BROADCAST, message_ref("ana-1")],
    )
    ana_again = inbound(
        "ana-2",
        sender="ana@example.com",
        subject=f"Re: {subject}",
        at=T0 + timedelta(minutes=9),
        in_reply_to=message_ref("ana-1"),
        references=[BROADCAST, message_ref("ana-1")],
    )
    await send(probe, ana, bob, bob_on_ana, ana_again)

    ana_items = await timeline_of(router, "email:ana@example.com", 2)
    bob_items = await timeline_of(router, "email:bob@example.org", 2)
    ana_customer = await router.customer_of("email:ANA@example.com")
    bob_customer = await router.customer_of("email:bob@example.org")
    assert ana_customer is not None
    assert bob_customer is not None
    assert ana_customer["customer_id"] != bob_customer["customer_id"]
    assert [i["message_id"] for i in ana_items] == ["ana-1", "ana-2"]
    assert ana_items[0]["conversation_id"] == ana_items[1]["conversation_id"]
    assert [i["message_id"] for i in bob_items] == ["bob-1", "bob-2"]
    assert bob_items[0]["conversation_id"] == bob_items[1]["conversation_id"]
    assert ana_items[0]["conversation_id"] != bob_items[0]["conversation_id"]
    assert ana_customer["identities"][0]["identity"] == "email:ana@example.com"
