"""The agent-side half of the timeline, pure (``workspace.activity``,
``workspace.timeline_page``) and its batch handler on the in-memory stores
(``workspace.recorder``): which event makes which item, once, filed and redacted."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    OUTBOUND,
    REPLY_DELIVERIES,
    Channel,
    ContractModel,
    ConversationAssigned,
    ConversationQueued,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    NoteAdded,
    Priority,
    ReplyDelivery,
    ReplyRequested,
    ReplySent,
)
from switchboard_common.mongo import Document
from switchboard_devkit.testing.builders import T0, delivery
from switchboard_router.metrics import RouterMetrics
from switchboard_router.timeline.documents import decode_cursor
from switchboard_router.timeline.memory import InMemoryTimelineStore
from switchboard_router.workspace.activity import activity_item, filed, item_view, redacted
from switchboard_router.workspace.activity_store import InMemoryActivityStore
from switchboard_router.workspace.recorder import ActivityRecorder
from switchboard_router.workspace.timeline_page import merge_page

pytestmark = pytest.mark.unit
CONVERSATION = "co-1"


def on(topic: str, event: ContractModel, offset: int = 0, source: str = "/tests") -> Delivery:
    record = delivery(event, topic, key=CONVERSATION, offset=offset)
    return dataclasses.replace(
        record, attributes=dataclasses.replace(record.attributes, source=source)
    )


def item(event: ContractModel, topic: str = CONVERSATION_EVENTS, **kw: Any) -> Document | None:
    record = on(topic, event, **kw)
    return activity_item(record.event, record.attributes)


def requested(reply_id: str = "r-1", text: str = "It ships on Monday.") -> ReplyRequested:
    return ReplyRequested(
        reply_id=reply_id,
        conversation_id=CONVERSATION,
        agent_id="agent-7",
        text=text,
        requested_at=T0 + timedelta(minutes=1),
    )


def ordered(
    reply_id: str, *, automatic: bool, text: str = "We have your message."
) -> ReplyDelivery:
    return ReplyDelivery(
        reply_id=reply_id,
        conversation_id=CONVERSATION,
        customer_id="cu-1",
        agent_id="switchboard" if automatic else "agent-7",
        channel=Channel.EMAIL,
        recipient="ana@example.org",
        account="help@support.example.com",
        text=text,
        subject="Where is my order?",
        requested_at=T0,
        ordered_at=T0 + timedelta(seconds=1),
        automatic=automatic,
    )


def status(reply_id: str, value: DeliveryStatus, error: str | None = None) -> DeliveryUpdated:
    return DeliveryUpdated(
        reply_id=reply_id,
        conversation_id=CONVERSATION,
        channel=Channel.EMAIL,
        status=value,
        error=None if error is None else DeliveryError(code="rejected", text=error),
        at=T0 + timedelta(minutes=2),
    )


def queued(seq: int = 1) -> ConversationQueued:
    return ConversationQueued(
        conversation_id=CONVERSATION,
        customer_id="cu-1",
        channel=Channel.EMAIL,
        priority=Priority.HIGH,
        agent_id=None,
        queue="billing",
        seq=seq,
        decided_at=T0 + timedelta(seconds=2),
        reason={"why": "no eligible agent", "skills": ["billing", "es"], "a.b": {"c": [[1]]}},
    )


def note(text: str = "Customer is a reseller; check the contract.") -> NoteAdded:
    return NoteAdded(
        note_id="n-1",
        conversation_id=CONVERSATION,
        agent_id="agent-7",
        text=text,
        at=T0 + timedelta(minutes=3),
    )


# --------------------------------------------------------------------------- one event, one item


def test_an_agent_reply_is_one_reply_item_with_its_text_from_the_request() -> None:
    made = item(requested(), OUTBOUND)
    assert made == {
        "_id": "reply:r-1",
        "type": "reply",
        "at": T0 + timedelta(minutes=1),
        "conversation_id": CONVERSATION,
        "reply_id": "r-1",
        "agent_id": "agent-7",
        "text": "It ships on Monday.",
    }
    # Its delivery order and Switchboard's own "sent" confirmation are not items again.
    assert item(ordered("r-1", automatic=False), REPLY_DELIVERIES) is None
    sent = ReplySent(conversation_id=CONVERSATION, agent_id="agent-7", sent_at=T0)
    assert item(sent, source="/switchboard/ingest-email") is None


def test_a_reply_a_frontend_sent_itself_is_a_reply_item_without_text() -> None:
    sent = ReplySent(conversation_id=CONVERSATION, agent_id="agent-7", sent_at=T0)
    made = item(sent, offset=4, source="/helpdesk")
    assert made is not None
    assert (made["type"], made["text"], made["reply_id"]) == ("reply", None, None)
    assert made["_id"].startswith("sent:")
    # The frontend retried under a new ce_id: the same item. Another reply: another.
    assert item(sent, offset=8, source="/helpdesk") == made
    later = sent.model_copy(update={"sent_at": T0 + timedelta(milliseconds=1)})
    other = item(later, offset=9, source="/helpdesk")
    assert other is not None
    assert other["_id"] != made["_id"]


def test_acknowledgements_and_surveys_carry_their_text_from_the_reply_deliveries() -> None:
    ack = item(ordered(f"ack:{CONVERSATION}", automatic=True), REPLY_DELIVERIES)
    survey = item(
        ordered(f"survey:{CONVERSATION}", automatic=True, text="Rate us"), REPLY_DELIVERIES
    )
    assert ack is not None
    assert survey is not None
    assert (ack["_id"], ack["type"], ack["text"]) == (
        f"reply:ack:{CONVERSATION}",
        "acknowledgement",
        "We have your message.",
    )
    assert (survey["type"], survey["reply_id"], survey["text"]) == (
        "survey",
        f"survey:{CONVERSATION}",
        "Rate us",
    )
    assert ack["at"] == T0  # when it was asked for, like an agent's reply


def test_each_delivery_status_is_one_item_per_reply_and_status() -> None:
    sent = item(status("r-1", DeliveryStatus.SENT), OUTBOUND, offset=1)
    again = item(status("r-1", DeliveryStatus.SENT), OUTBOUND, offset=9)
    failed = item(status("r-1", DeliveryStatus.FAILED, "mailbox full"), OUTBOUND)
    assert sent is not None
    assert failed is not None
    assert sent == again  # republished under another ce_id: still one item
    assert sent["_id"] == "delivery:r-1:sent"
    assert (sent["status"], sent["error"]) == ("sent", None)
    assert failed["error"] == {"code": "rejected", "text": "mailbox full"}


def test_assignments_are_items_by_conversation_and_seq_with_the_reason_as_json() -> None:
    made = item(queued(3), ASSIGNMENTS)
    assert made is not None
    assert made["_id"] == f"assignment:{CONVERSATION}:3"
    assert (made["event"], made["queue"], made["priority"], made["agent_id"]) == (
        "queued",
        "billing",
        "high",
        None,
    )
    # No nested arrays or dotted names stored (FerretDB v1); shown as the object it was.
    assert isinstance(made["reason_json"], str)
    view = item_view({**made, "customer_id": "cu-1"})
    assert view["reason"] == queued().reason
    assert list(view)[:4] == ["item_id", "type", "at", "conversation_id"]
    assert view["at"] == "2026-03-02T09:30:02Z"
    assigned = ConversationAssigned.model_validate({**queued(4).model_dump(), "agent_id": "a-1"})
    assigned_item = item(assigned, ASSIGNMENTS)
    assert assigned_item is not None
    assert (assigned_item["event"], assigned_item["agent_id"]) == ("assigned", "a-1")


def test_transfers_resolutions_reopenings_and_notes() -> None:
    transfer = ConversationTransferred(
        conversation_id=CONVERSATION, from_agent_id="agent-7", to_queue="tier-2"
    )
    moved = item(transfer, offset=5)
    assert moved is not None
    assert (moved["_id"], moved["at"], moved["to_queue"], moved["to_agent_id"]) == (
        f"transfer:ce-{CONVERSATION}-5",
        T0,  # no ``at`` in the event: its CloudEvents time, and its ce_id as the key
        "tier-2",
        None,
    )
    timed = transfer.model_copy(update={"at": T0})
    assert item(timed, offset=5) == item(timed, offset=15) != moved
    assert item(timed.model_copy(update={"to_queue": "tier-3"}), offset=5) != item(timed)
    resolved = item(ConversationResolved(conversation_id=CONVERSATION, at=T0), offset=6)
    reopened = item(ConversationReopened(conversation_id=CONVERSATION, at=T0), offset=7)
    assert resolved is not None
    assert reopened is not None
    assert (resolved["type"], reopened["type"]) == ("resolved", "reopened")
    # Republished under another ce_id (a frontend's retry): still one item each; a
    # resolution at another moment is another item.
    assert item(ConversationResolved(conversation_id=CONVERSATION, at=T0), offset=16) == resolved
    assert item(ConversationReopened(conversation_id=CONVERSATION, at=T0), offset=17) == reopened
    again = item(ConversationResolved(conversation_id=CONVERSATION, at=T0 + timedelta(hours=1)))
    assert again is not None
    assert again["_id"] != resolved["_id"]
    noted = item(note())
    assert noted is not None
    assert (noted["_id"], noted["agent_id"], noted["text"]) == (
        "note:n-1",
        "agent-7",
        "Customer is a reseller; check the contract.",
    )


def test_filed_under_the_conversations_customer_and_redacted_once_erased() -> None:
    noted = item(note())
    assert noted is not None
    assert filed(noted, {"_id": CONVERSATION, "customer_id": "cu-9"})["customer_id"] == "cu-9"
    erased = filed(noted, {"_id": CONVERSATION, "customer_id": "cu-9", "erased": True})
    assert (erased["text"], erased["erased"], erased["agent_id"]) == (None, True, "agent-7")
    failed = item(status("r-1", DeliveryStatus.FAILED, "no such user +34600111222"), OUTBOUND)
    assert failed is not None
    assert redacted(failed)["error"] == {"code": "rejected", "text": None}


# --------------------------------------------------------------------------- the merged page


def message(message_id: str, seconds: int) -> Document:
    return {"_id": message_id, "received_at": T0 + timedelta(seconds=seconds)}


def activity(item_id: str, seconds: int) -> Document:
    return {"_id": item_id, "at": T0 + timedelta(seconds=seconds)}


@given(
    messages=st.dictionaries(st.text("mn", min_size=1, max_size=4), st.integers(0, 3), max_size=12),
    items=st.dictionaries(st.text("a:", min_size=1, max_size=4), st.integers(0, 3), max_size=12),
    limit=st.integers(1, 5),
)
def test_paging_the_merged_list_yields_every_item_once_in_time_then_id_order(
    messages: dict[str, int], items: dict[str, int], limit: int
) -> None:
    stored_messages = sorted(
        (message(k, v) for k, v in messages.items()), key=lambda d: (d["received_at"], d["_id"])
    )
    stored_items = sorted(
        (activity(k, v) for k, v in items.items()), key=lambda d: (d["at"], d["_id"])
    )
    # Ids of the two sources never meet (activity ids hold a colon).
    stored_items = [d for d in stored_items if ":" in d["_id"] or d["_id"] not in messages]
    seen: list[tuple[Any, str]] = []
    after: tuple[Any, str] = (T0 - timedelta(days=1), "")
    for _ in range(100):
        page = merge_page(
            [d for d in stored_messages if (d["received_at"], d["_id"]) > after][: limit + 1],
            [d for d in stored_items if (d["at"], d["_id"]) > after][: limit + 1],
            limit,
        )
        seen += [(e.at, e.item_id) for e in page.entries]
        assert len(page.entries) <= limit
        if page.next is None:
            break
        after = decode_cursor(page.next)
    expected = sorted(
        [(d["received_at"], d["_id"]) for d in stored_messages]
        + [(d["at"], d["_id"]) for d in stored_items]
    )
    assert seen == expected


# --------------------------------------------------------------------------- the recorder


class CountingConversations(InMemoryTimelineStore):
    """The timeline store as the recorder sees it, counting its reads (and able to have
    a conversation erased between the recorder's first read and its insert)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.erase_after_first_read = False

    async def get_conversations(self, conversation_ids: Sequence[str]) -> dict[str, Document]:
        self.reads += 1
        found = await super().get_conversations(conversation_ids)
        if self.erase_after_first_read and self.reads == 1:
            for document in self.conversations.values():
                document["erased"] = True
        return found


class CountingActivity(InMemoryActivityStore):
    def __init__(self) -> None:
        super().__init__()
        self.inserts = 0

    async def insert(self, documents: Sequence[Document]) -> set[str]:
        self.inserts += 1
        return await super().insert(documents)


def recorder() -> tuple[ActivityRecorder, CountingConversations, CountingActivity]:
    conversations, activity_store = CountingConversations(), CountingActivity()
    conversations.conversations[CONVERSATION] = {"_id": CONVERSATION, "customer_id": "cu-1"}
    metrics = RouterMetrics.create(CollectorRegistry())
    return (
        ActivityRecorder(conversations, activity_store, metrics.timeline),
        conversations,
        activity_store,
    )


def batch() -> list[Delivery]:
    return [
        on(ASSIGNMENTS, queued(1), 0),
        on(REPLY_DELIVERIES, ordered(f"ack:{CONVERSATION}", automatic=True), 1),
        on(OUTBOUND, requested(), 2),
        on(REPLY_DELIVERIES, ordered("r-1", automatic=False), 3),
        on(OUTBOUND, status("r-1", DeliveryStatus.SENT), 4),
        on(CONVERSATION_EVENTS, note(), 5),
        on(CONVERSATION_EVENTS, ConversationResolved(conversation_id=CONVERSATION, at=T0), 6),
        on(
            OUTBOUND,
            status("r-unknown", DeliveryStatus.FAILED, "x").model_copy(
                update={"conversation_id": "co-unknown"}
            ),
            7,
        ),
    ]


async def test_a_batch_costs_a_read_an_insert_and_a_check_and_a_redelivery_adds_nothing() -> None:
    handler, conversations, stored = recorder()
    assert await handler(batch()) == []
    # One read to file the batch, one insert, one re-read because it holds texts.
    assert (conversations.reads, stored.inserts) == (2, 1)
    types = sorted(d["type"] for d in stored.documents.values())
    assert types == ["acknowledgement", "assignment", "delivery", "note", "reply", "resolved"]
    assert {d["customer_id"] for d in stored.documents.values()} == {"cu-1"}
    before = {k: dict(v) for k, v in stored.documents.items()}
    assert await handler(batch()) == []
    assert stored.documents == before
    assert (conversations.reads, stored.inserts) == (4, 2)


async def test_a_batch_without_texts_skips_the_check() -> None:
    handler, conversations, stored = recorder()
    await handler([on(ASSIGNMENTS, queued(1)), on(OUTBOUND, status("r-1", DeliveryStatus.SENT))])
    assert (conversations.reads, stored.inserts, len(stored.documents)) == (1, 1, 2)


async def test_an_erasure_between_the_read_and_the_insert_still_redacts_the_batch() -> None:
    handler, conversations, stored = recorder()
    conversations.erase_after_first_read = True
    await handler(batch())
    texts = [d for d in stored.documents.values() if "text" in d]
    assert texts
    assert all(d["text"] is None and d["erased"] for d in texts)


async def test_an_erased_customers_later_activity_is_stored_without_text() -> None:
    handler, conversations, stored = recorder()
    conversations.conversations[CONVERSATION]["erased"] = True
    await handler([on(CONVERSATION_EVENTS, note())])
    (noted,) = stored.documents.values()
    assert (noted["text"], noted["erased"]) == (None, True)
