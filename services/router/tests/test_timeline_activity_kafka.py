"""The complete timeline on real Kafka and FerretDB: what a frontend publishes about a
conversation comes back through the read API as typed items, in order, paged, once
however often it is delivered, and erasure takes their texts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    OUTBOUND,
    Channel,
    ContractModel,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    NoteAdded,
    ReplyRequested,
    ReplySent,
)
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    RunningRouter,
    customer_writes,
    eventually,
    running_router,
)

pytestmark = pytest.mark.integration

#: The customer wrote an hour ago; the agents' work below is timed after that, and the
#: router's own items (acknowledgement, assignments) are stamped when it ran: now.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env) as handle:
        yield handle


def frontend_events(conversation_id: str) -> list[tuple[str, str, ContractModel]]:
    """(topic, ce_id, event) as a helpdesk frontend publishes them, in time order."""
    c = conversation_id

    def t(minutes: int) -> datetime:
        return BASE + timedelta(minutes=minutes)

    return [
        (
            OUTBOUND,
            f"{c}-reply",
            ReplyRequested(
                reply_id=f"rep-{c}",
                conversation_id=c,
                agent_id="agent-7",
                text="Your parcel ships on Monday.",
                requested_at=t(10),
            ),
        ),
        (
            OUTBOUND,
            f"{c}-sent",
            DeliveryUpdated(
                reply_id=f"rep-{c}",
                conversation_id=c,
                channel=Channel.EMAIL,
                status=DeliveryStatus.SENT,
                at=t(11),
            ),
        ),
        (
            CONVERSATION_EVENTS,
            f"{c}-note",
            NoteAdded(
                note_id=f"note-{c}",
                conversation_id=c,
                agent_id="agent-7",
                text="Reseller account: check the contract.",
                at=t(12),
            ),
        ),
        (
            CONVERSATION_EVENTS,
            f"{c}-transfer",
            ConversationTransferred(
                conversation_id=c, from_agent_id="agent-7", to_queue="orders", at=t(13)
            ),
        ),
        (CONVERSATION_EVENTS, f"{c}-resolved", ConversationResolved(conversation_id=c, at=t(14))),
        (CONVERSATION_EVENTS, f"{c}-reopened", ConversationReopened(conversation_id=c, at=t(15))),
        # A frontend that sends replies on its own says only that one went out.
        (
            CONVERSATION_EVENTS,
            f"{c}-own-reply",
            ReplySent(conversation_id=c, agent_id="agent-8", sent_at=t(16)),
        ),
    ]


async def publish(probe: TopicProbe, conversation_id: str) -> None:
    for topic, ce_id, event in frontend_events(conversation_id):
        await probe.send(topic, event, key=conversation_id, event_id=ce_id)


def when(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["at"].replace("Z", "+00:00"))


def of_type(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [i for i in items if i["type"] == kind]


async def items_with(
    router: RunningRouter, customer_id: str, *, failed: bool = False
) -> list[dict[str, Any]]:
    """The customer's items once every kind is in, with both replies (and a failed
    delivery when ``failed``)."""

    async def complete() -> list[dict[str, Any]] | None:
        items = await router.items(customer_id)
        replies = of_type(items, "reply")
        failures = [i for i in of_type(items, "delivery") if i["status"] == "failed"]
        done = {i["type"] for i in items} >= ALL_KINDS and len(replies) == 2
        return items if done and (failures or not failed) else None

    found: list[dict[str, Any]] = await eventually(complete)
    return found


def settled(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items but the routing decisions, which the router may still be adding while a
    test reads (a transfer or reopening makes it decide again)."""
    return [i for i in items if i["type"] != "assignment"]


def duplicates(router: RunningRouter) -> float:
    registry = router.ctx.registry
    return sum(
        registry.get_sample_value(
            "switchboard_router_timeline_activity_total", {"type": kind, "outcome": "duplicate"}
        )
        or 0.0
        for kind in ("reply", "delivery", "note", "transfer", "resolved", "reopened")
    )


ALL_KINDS = {
    "message",
    "acknowledgement",
    "assignment",
    "reply",
    "delivery",
    "note",
    "transfer",
    "resolved",
    "reopened",
}


async def test_the_timeline_holds_every_kind_of_item_in_order_paged_and_once(
    router: RunningRouter, probe: TopicProbe
) -> None:
    conversation_id = await customer_writes(
        probe,
        "e-1",
        sender="ana@example.org",
        subject="Where is my parcel?",
        text="It has not arrived.",
        at=BASE,
    )
    customer = await eventually(lambda: router.customer_of("email:ana@example.org"))
    await publish(probe, conversation_id)
    items = await items_with(router, customer["customer_id"])

    # One merged list, ordered by time then item id, every item with the common fields.
    assert [(when(i), i["item_id"]) for i in items] == sorted(
        (when(i), i["item_id"]) for i in items
    )
    assert len({i["item_id"] for i in items}) == len(items)
    for item in items:
        assert item["conversation_id"] == conversation_id
        assert {"item_id", "type", "at", "conversation_id"} <= set(item)
    # The customer's message keeps the fields frontends read, first in the list.
    message = items[0]
    assert (message["type"], message["item_id"], message["message_id"]) == ("message", "e-1", "e-1")
    assert message["at"] == message["received_at"]
    assert message["conversation_start"] is True
    assert message["text"] == "It has not arrived."
    # The frontend's work, in the order it happened, each with its fields.
    worked = [i for i in items if i["type"] not in ("message", "assignment", "acknowledgement")]
    assert [i["type"] for i in worked] == [
        "reply",
        "delivery",
        "note",
        "transfer",
        "resolved",
        "reopened",
        "reply",
    ]
    reply, sent, note, transfer, _, _, own = worked
    assert (reply["reply_id"], reply["agent_id"], reply["text"]) == (
        f"rep-{conversation_id}",
        "agent-7",
        "Your parcel ships on Monday.",
    )
    assert (sent["reply_id"], sent["status"], sent["error"]) == (reply["reply_id"], "sent", None)
    assert (note["agent_id"], note["text"]) == ("agent-7", "Reseller account: check the contract.")
    assert (transfer["from_agent_id"], transfer["to_queue"], transfer["to_agent_id"]) == (
        "agent-7",
        "orders",
        None,
    )
    assert (own["agent_id"], own["text"], own["reply_id"]) == ("agent-8", None, None)
    # The router's own items: the acknowledgement with its text, the routing decisions.
    (ack,) = of_type(items, "acknowledgement")
    assert ack["reply_id"] == f"ack:{conversation_id}"
    assert conversation_id in ack["text"]  # its reference
    queued = of_type(items, "assignment")[0]
    assert (queued["event"], queued["agent_id"]) == ("queued", None)
    assert queued["queue"]
    assert queued["priority"]
    assert isinstance(queued["reason"], dict)

    # Pages of two give the same list; the conversation (the customer's only one) shows
    # the same items.
    paged = await router.items(customer["customer_id"], limit=2)
    assert settled(paged) == settled(items)
    assert len({i["item_id"] for i in paged}) == len(paged)
    conversation = await router.conversation(conversation_id, messages_only=False)
    assert settled(conversation["items"]) == settled(items)
    assert of_type(conversation["items"], "assignment")
    assert conversation["conversation"]["message_count"] == 1

    # Bad input.
    bad = await router.http.get(
        f"/customers/{customer['customer_id']}/timeline", params={"cursor": "not-a-cursor"}
    )
    assert bad.status_code == 400
    bad = await router.http.get(f"/conversations/{conversation_id}", params={"cursor": "x!"})
    assert bad.status_code == 400
    assert (await router.http.get("/customers/cu-nobody/timeline")).status_code == 404

    # Everything delivered again (same CloudEvents ids): found stored, nothing added.
    before = duplicates(router)
    await publish(probe, conversation_id)
    await eventually(lambda: _at_least(router, before + 7))
    again = await router.items(customer["customer_id"])
    assert settled(again) == settled(items)
    assert len({i["item_id"] for i in again}) == len(again)


async def _at_least(router: RunningRouter, count: float) -> bool:
    return duplicates(router) >= count


async def test_erasure_takes_the_texts_of_the_activity_too(
    router: RunningRouter, probe: TopicProbe
) -> None:
    conversation_id = await customer_writes(
        probe,
        "e-9",
        sender="bea@example.org",
        subject="Refund",
        text="My IBAN is ES12 3456",
        at=BASE,
    )
    customer = await eventually(lambda: router.customer_of("email:bea@example.org"))
    customer_id = customer["customer_id"]
    failed = DeliveryUpdated(
        reply_id="rep-x",
        conversation_id=conversation_id,
        channel=Channel.EMAIL,
        status=DeliveryStatus.FAILED,
        error=DeliveryError(code="rejected", text="bea@example.org: mailbox full"),
        at=BASE + timedelta(minutes=30),
    )
    await publish(probe, conversation_id)
    await probe.send(OUTBOUND, failed, key=conversation_id)
    before = await items_with(router, customer_id, failed=True)
    personal = ("Your parcel ships", "Reseller account", "bea@example.org", "IBAN")
    for text in personal:
        assert text in json.dumps(before)

    response = await router.http.post(
        f"/admin/customers/{customer_id}/erasure",
        json={"reason": "data subject request 2026-077"},
        headers=router.admin,
    )
    assert response.status_code == 200, response.text
    # The acknowledgement, the agent's reply, the note and the provider's error text.
    assert response.json()["counts"]["activity_items"] == 4

    after = await router.items(customer_id)
    assert {i["item_id"] for i in after} >= {i["item_id"] for i in before}
    as_text = json.dumps(after)
    for text in personal:
        assert text not in as_text
    for item in after:
        if item["type"] in ("reply", "acknowledgement", "note"):
            assert item["text"] is None
    (erased_failure,) = [i for i in of_type(after, "delivery") if i["status"] == "failed"]
    assert erased_failure["error"] == {"code": "rejected", "text": None}
    assert erased_failure["erased"] is True

    # Work on the erased customer's conversation afterwards is stored without its text.
    late = NoteAdded(
        note_id="note-late",
        conversation_id=conversation_id,
        agent_id="agent-7",
        text="Called bea back on +34 600 111 222",
        at=BASE + timedelta(minutes=40),
    )
    await probe.send(CONVERSATION_EVENTS, late, key=conversation_id)

    async def late_note() -> dict[str, Any] | None:
        found = [i for i in await router.items(customer_id) if i["item_id"] == "note:note-late"]
        return found[0] if found else None

    stored = await eventually(late_note)
    assert (stored["text"], stored["erased"]) == (None, True)
