"""Resolve and reopen on real Kafka and FerretDB: frontends' status events reach
threading in order, a message reopens within the window, later it starts a new
conversation linked to the resolved one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from switchboard_common.contract import (
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    DEADLETTER,
    INBOUND,
    AssignmentDecision,
    Channel,
    ConversationActivity,
    ConversationReopened,
    ConversationResolved,
    DeadLetter,
    MessageReceived,
    ReplySent,
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
from switchboard_router.timeline.identity import identity_of

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env, reopen_window=timedelta(days=2)) as handle:
        yield handle


async def send(probe: TopicProbe, message: MessageReceived) -> None:
    await probe.send(INBOUND, message, key=identity_of(message))


async def placed(router: RunningRouter, identity: str, message_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        customer = await router.customer_of(identity)
        if customer is None:
            return None
        items = await router.timeline(customer["customer_id"])
        return next((i for i in items if i["message_id"] == message_id), None)

    item: dict[str, Any] = await eventually(find)
    return item


async def status(router: RunningRouter, conversation_id: str, wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await router.conversation(conversation_id)
        conversation: dict[str, Any] = body["conversation"]
        return conversation if conversation["status"] == wanted else None

    found: dict[str, Any] = await eventually(check)
    return found


async def test_a_message_reopens_within_the_window_and_starts_anew_after_it(
    router: RunningRouter, probe: TopicProbe
) -> None:
    phone = "+34600111222"
    identity = f"whatsapp:{phone}"

    def whatsapp(message_id: str, at: Any) -> MessageReceived:
        return inbound(message_id, channel=Channel.WHATSAPP, sender=phone, at=at)

    await send(probe, whatsapp("w-1", T0))
    first = (await placed(router, identity, "w-1"))["conversation_id"]
    # An agent answers (not about threading) and resolves.
    await probe.send(
        CONVERSATION_EVENTS,
        ReplySent(conversation_id=first, agent_id="ag-1", sent_at=T0 + HOUR),
        key=first,
    )
    await probe.send(
        CONVERSATION_EVENTS, ConversationResolved(conversation_id=first, at=T0 + HOUR), key=first
    )
    resolved = await status(router, first, "resolved")
    assert resolved["resolved_at"] == "2026-03-02T10:30:00Z"

    await send(probe, whatsapp("w-2", T0 + 5 * HOUR))  # "thanks, one more thing"
    again = await placed(router, identity, "w-2")
    assert (again["conversation_id"], again["placement"], again["index"]) == (first, "reopened", 2)
    await status(router, first, "open")

    await probe.send(
        CONVERSATION_EVENTS,
        ConversationResolved(conversation_id=first, at=T0 + 6 * HOUR),
        key=first,
    )
    await status(router, first, "resolved")
    await send(probe, whatsapp("w-3", T0 + 6 * HOUR + timedelta(days=3)))
    later = await placed(router, identity, "w-3")
    assert later["conversation_id"] != first
    assert (later["placement"], later["previous_conversation_id"]) == ("opened", first)
    successor = await status(router, later["conversation_id"], "open")
    assert successor["previous_conversation_id"] == first
    assert (await router.conversation(first))["conversation"]["status"] == "resolved"

    activities = await probe.read_events(CONVERSATION_ACTIVITY, count=3)
    said = [
        (e.message_id, e.kind, e.conversation_id, e.previous_conversation_id)
        for _, e in activities
        if isinstance(e, ConversationActivity)
    ]
    assert sorted(said) == [
        ("w-1", "opened", first, None),
        ("w-2", "reopened", first, None),
        ("w-3", "opened", later["conversation_id"], first),
    ]


async def test_a_reaction_an_edit_or_an_auto_reply_neither_reopens_nor_routes(
    router: RunningRouter, probe: TopicProbe
) -> None:
    phone = "+34600111333"
    identity = f"whatsapp:{phone}"
    await send(probe, inbound("w-1", channel=Channel.WHATSAPP, sender=phone, at=T0))
    first = (await placed(router, identity, "w-1"))["conversation_id"]
    await probe.send(
        CONVERSATION_EVENTS, ConversationResolved(conversation_id=first, at=T0 + HOUR), key=first
    )
    await status(router, first, "resolved")

    quiet = [
        inbound(
            "w-react", channel=Channel.WHATSAPP, sender=phone, at=T0 + 2 * HOUR, kind="reaction"
        ),
        inbound("w-edit", channel=Channel.WHATSAPP, sender=phone, at=T0 + 3 * HOUR, kind="edit"),
        inbound(
            "w-auto", channel=Channel.WHATSAPP, sender=phone, at=T0 + 4 * HOUR, auto_submitted=True
        ),
    ]
    for message in quiet:
        await send(probe, message)
        item = await placed(router, identity, message.message_id)
        assert (item["conversation_id"], item["placement"]) == (first, "message")
    assert (await router.conversation(first))["conversation"]["status"] == "resolved"

    # The customer writes for real: that reopens and routes. Decisions of one conversation
    # are ordered, so any decision the quiet messages caused would already be there.
    await send(probe, inbound("w-2", channel=Channel.WHATSAPP, sender=phone, at=T0 + 5 * HOUR))
    assert (await placed(router, identity, "w-2"))["placement"] == "reopened"

    async def decided_on_w2() -> list[AssignmentDecision] | None:
        records = await probe.read_events(ASSIGNMENTS, timeout=2.0)
        mine = [e for _, e in records if isinstance(e, AssignmentDecision)]
        mine = [e for e in mine if e.conversation_id == first]
        return mine if any(e.reason.get("message_id") == "w-2" for e in mine) else None

    decisions = await eventually(decided_on_w2)
    triggers = {e.reason.get("message_id") for e in decisions}
    assert triggers.isdisjoint({"w-react", "w-edit", "w-auto"}), triggers

    activities = await probe.read_events(CONVERSATION_ACTIVITY, count=5)
    expects = {
        e.message_id: e.expects_reply for _, e in activities if isinstance(e, ConversationActivity)
    }
    assert expects == {
        "w-1": True,
        "w-react": False,
        "w-edit": False,
        "w-auto": False,
        "w-2": True,
    }


async def test_an_agent_reopen_keeps_the_next_email_in_the_conversation(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await send(probe, inbound("e-1", subject="Broken", at=T0))
    first = (await placed(router, "email:ana@example.com", "e-1"))["conversation_id"]
    await probe.send(
        CONVERSATION_EVENTS, ConversationResolved(conversation_id=first, at=T0 + HOUR), key=first
    )
    await status(router, first, "resolved")
    await probe.send(
        CONVERSATION_EVENTS,
        ConversationReopened(conversation_id=first, at=T0 + timedelta(days=4)),
        key=first,
    )
    await status(router, first, "open")
    reply = inbound(
        "e-2",
        subject="Re: Broken",
        at=T0 + timedelta(days=5),
        in_reply_to=message_ref("e-1"),
    )
    await send(probe, reply)
    item = await placed(router, "email:ana@example.com", "e-2")
    assert (item["conversation_id"], item["placement"]) == (first, "message")


async def test_a_status_event_for_an_unknown_conversation_is_dead_lettered(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await probe.send(
        CONVERSATION_EVENTS,
        ConversationResolved(conversation_id="cv-from-elsewhere", at=T0),
        key="cv-from-elsewhere",
    )
    letters = await probe.read_events(DEADLETTER, count=1)
    (letter,) = [e for _, e in letters if isinstance(e, DeadLetter)]
    assert "unknown conversation" in letter.error
    assert letter.consumer_group is not None
    assert letter.consumer_group.endswith("router-timeline-state")
