"""One contract for both timeline stores: in memory (unit) and FerretDB (integration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from switchboard_common.contract import Channel
from switchboard_common.mongo import Document
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_devtools.testing.router_timeline import customer_message, inbound
from switchboard_router.timeline.documents import conversation_opening, message_document
from switchboard_router.timeline.identity import identity_of
from switchboard_router.timeline.memory import InMemoryTimelineStore
from switchboard_router.timeline.mongo import MongoTimelineStore, ensure_indexes
from switchboard_router.timeline.ports import Claim, ConversationWrite, Page, TimelineStore
from switchboard_router.timeline.threading import Conversation, CustomerState, Placement


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[TimelineStore]:
    if request.param == "memory":
        yield InMemoryTimelineStore()
        return
    async with real_database(request) as db:
        await ensure_indexes(db)
        await ensure_indexes(db)  # idempotent at every start
        yield MongoTimelineStore(db)


def entry(message_id: str, customer: str, minutes: int, conversation: str = "cv-1") -> Document:
    message = inbound(message_id, subject="Refund", at=T0 + timedelta(minutes=minutes))
    record = customer_message(message, customer, identity_of(message))
    return message_document(record, Placement(conversation, "message", 2, "subject"), T0)


def conversation(conversation_id: str = "cv-1", status: str = "open") -> Conversation:
    return Conversation(
        conversation_id=conversation_id,
        channel=Channel.EMAIL,
        account="support@example.com",
        tenant=None,
        sender="abc",
        thread=None,
        subject="refund",
        status="open" if status == "open" else "resolved",
        opened_at=T0,
        last_message_at=T0 + timedelta(minutes=3),
        resolved_at=None if status == "open" else T0 + timedelta(hours=1),
        message_count=3,
        status_at=T0,
    )


async def test_state_round_trips_with_everything_threading_remembers(store: TimelineStore) -> None:
    assert await store.load_state("cu-1") is None
    state = CustomerState(
        "cu-1",
        conversations={"cv-1": conversation()},
        threads={"whatsapp|-|s|abc": "cv-1"},
        refs={"m-1@mail.example.com": "cv-1"},
        successors={"cv-0": "cv-1"},
        applied={"m-1": Placement("cv-1", "opened", 1, "new", closes="cv-0")},
    )
    await store.save_states([state], T0)
    assert await store.load_state("cu-1") == state
    tombstone = CustomerState("cu-1", erased=True, erasure_id="er-1")
    await store.save_states([tombstone], T0)
    assert await store.load_state("cu-1") == tombstone


async def test_a_thread_claim_goes_to_the_first_and_is_idempotent(store: TimelineStore) -> None:
    first = Claim("first|cu-1|t", "cv-a", "m-a", "cu-1")
    assert await store.claim_threads([first]) == {"first|cu-1|t": "cv-a"}
    assert await store.claim_threads([first]) == {"first|cu-1|t": "cv-a"}
    rival = Claim("first|cu-1|t", "cv-b", "m-b", "cu-1")
    other = Claim("after|cv-a", "cv-c", "m-c", "cu-1")
    assert await store.claim_threads([rival, other]) == {
        "first|cu-1|t": "cv-a",
        "after|cv-a": "cv-c",
    }
    assert await store.get_claim("first|cu-1|t") == first
    assert await store.get_claim("after|cv-x") is None


async def test_concurrent_claims_have_one_winner(store: TimelineStore) -> None:
    claims = [Claim("first|cu-1|t", f"cv-{n}", f"m-{n}", "cu-1") for n in range(8)]
    results = await asyncio.gather(*(store.claim_threads([c]) for c in claims))
    winners = {r["first|cu-1|t"] for r in results}
    assert len(winners) == 1


async def test_an_entry_is_stored_once_and_a_replay_is_reported(store: TimelineStore) -> None:
    first = entry("m-1", "cu-1", 0)
    assert await store.insert_messages([first]) == set()
    again = {**first, "conversation_id": "cv-other"}
    assert await store.insert_messages([again, entry("m-2", "cu-1", 1)]) == {"m-1"}
    placements = await store.get_placements(["m-1", "m-2", "m-9"])
    assert set(placements) == {"m-1", "m-2"}
    assert placements["m-1"].conversation_id == "cv-1"
    assert placements["m-1"].kind == "message"
    await store.replace_messages([again])
    assert (await store.get_placements(["m-1"]))["m-1"].conversation_id == "cv-other"


async def test_conversations_keep_their_opening_and_take_new_state(store: TimelineStore) -> None:
    message = inbound("m-1", subject="Refund please", at=T0)
    opening = conversation_opening("cu-1", customer_message(message, "cu-1", identity_of(message)))
    await store.save_conversations([ConversationWrite("cu-1", conversation(), opening)])
    later = conversation(status="resolved")
    await store.save_conversations(
        [ConversationWrite("cu-1", later, conversation_opening("cu-1", None))]
    )
    document = await store.get_conversation("cv-1")
    assert document is not None
    assert document["subject"] == "Refund please"
    assert document["opened_by_message_id"] == "m-1"
    assert document["status"] == "resolved"
    assert document["resolved_at"] == T0 + timedelta(hours=1)
    assert set(await store.get_conversations(["cv-1", "cv-9"])) == {"cv-1"}
    assert await store.get_conversation("cv-9") is None


async def test_message_id_references_are_per_customer(store: TimelineStore) -> None:
    await store.insert_refs(
        [("cu-1", "a@x", "cv-1"), ("cu-1", "a@x", "cv-2"), ("cu-2", "b@x", "cv-3")]
    )
    assert await store.get_refs("cu-1", ["a@x", "b@x"]) == {"a@x": "cv-1"}
    assert await store.get_refs("cu-2", ["b@x"]) == {"b@x": "cv-3"}
    assert await store.get_refs_of({"cu-1": ["a@x", "b@x"], "cu-2": ["b@x"], "cu-3": ["a@x"]}) == {
        "cu-1": {"a@x": "cv-1"},
        "cu-2": {"b@x": "cv-3"},
    }
    assert await store.get_refs_of({}) == {}


async def test_the_timeline_pages_in_time_order_across_customers(store: TimelineStore) -> None:
    await store.insert_messages(
        [
            entry("m-3", "cu-1", 5),
            entry("m-1", "cu-1", 0),
            entry("m-2b", "cu-2", 3, "cv-2"),
            entry("m-2a", "cu-1", 3),
            entry("m-x", "cu-3", 1, "cv-3"),
        ]
    )
    first = await store.timeline(["cu-1", "cu-2"], Page(None, 2))
    assert [d["_id"] for d in first] == ["m-1", "m-2a"]
    last = first[-1]
    rest = await store.timeline(["cu-1", "cu-2"], Page((last["received_at"], last["_id"]), 10))
    assert [d["_id"] for d in rest] == ["m-2b", "m-3"]
    assert [d["_id"] for d in await store.timeline(["cu-3"], Page(None, 10))] == ["m-x"]
    in_conversation = await store.conversation_messages("cv-1", Page(None, 10))
    assert [d["_id"] for d in in_conversation] == ["m-1", "m-2a", "m-3"]
    assert await store.count_messages("cv-1") == 3
    assert first[0]["text"] == "hello"
    assert first[0]["sender"]["value"] == "ana@example.com"


async def test_erasure_removes_personal_data_and_leaves_skeletons(store: TimelineStore) -> None:
    await store.insert_messages([entry("m-1", "cu-1", 0), entry("m-2", "cu-2", 1, "cv-2")])
    await store.save_conversations(
        [ConversationWrite("cu-1", conversation(), {"customer_id": "cu-1", "subject": "Refund"})]
    )
    await store.insert_refs([("cu-1", "m-1@mail.example.com", "cv-1")])
    await store.claim_threads([Claim("first|cu-1|t", "cv-1", "m-1", "cu-1")])
    counts = await store.erase(["cu-1"])
    assert counts == {"messages": 1, "conversations": 1, "email_references": 1, "thread_claims": 1}
    (erased,) = await store.timeline(["cu-1"], Page(None, 10))
    assert erased["text"] == ""
    assert erased["subject"] is None
    assert erased["sender"] is None
    assert erased["identity"] is None
    assert erased["references"] == []
    assert erased["erased"] is True
    assert erased["conversation_id"] == "cv-1"
    document = await store.get_conversation("cv-1")
    assert document is not None
    assert document["subject"] is None
    assert await store.get_refs("cu-1", ["m-1@mail.example.com"]) == {}
    assert await store.get_claim("first|cu-1|t") is None
    (kept,) = await store.timeline(["cu-2"], Page(None, 10))
    assert kept["text"] == "hello"
    assert await store.erase(["cu-1"]) == {**counts, "email_references": 0, "thread_claims": 0}


async def test_created_states_and_conversations_may_exist_already(store: TimelineStore) -> None:
    """A replay inserts again what a crashed attempt stored: the newer state wins."""
    first = CustomerState("cu-1", refs={"a@x": "cv-1"})
    await store.save_states([first], T0, created=["cu-1"])
    second = CustomerState("cu-1", refs={"a@x": "cv-1", "b@x": "cv-1"})
    await store.save_states([second], T0, created=["cu-1"])
    assert await store.load_state("cu-1") == second
    opening = {"customer_id": "cu-1", "subject": "Refund", "identity": None}
    await store.save_conversations([ConversationWrite("cu-1", conversation(), opening, True)])
    resolved = conversation(status="resolved")
    await store.save_conversations(
        [ConversationWrite("cu-1", resolved, {**opening, "subject": "changed"}, True)]
    )
    document = await store.get_conversation("cv-1")
    assert document is not None
    assert (document["status"], document["subject"]) == ("resolved", "Refund")


async def test_a_batch_loads_the_states_of_many_customers_at_once(store: TimelineStore) -> None:
    ana = CustomerState("cu-1", refs={"a@x": "cv-1"})
    bob = CustomerState("cu-2", conversations={"cv-1": conversation()})
    await store.save_states([ana, bob], T0, created=["cu-1", "cu-2"])
    assert await store.load_states(["cu-2", "cu-1", "cu-3"]) == {"cu-1": ana, "cu-2": bob}
    assert await store.load_states([]) == {}
    entries = [entry(f"m-{n}", "cu-1", n) for n in range(3)]
    await store.insert_messages(entries)
    assert sorted(await store.get_placements([f"m-{n}" for n in range(5)])) == [
        "m-0",
        "m-1",
        "m-2",
    ]


async def test_raw_references_are_listed_per_customer_until_forgotten(
    store: TimelineStore,
) -> None:
    documents: list[Document] = []
    for message_id, customer in (("m-1", "cu-1"), ("m-2", "cu-1"), ("m-3", "cu-2")):
        document = entry(message_id, customer, minutes=len(documents))
        documents.append({**document, "raw_ref": f"sha256:{message_id}"})
    documents.append(entry("w-1", "cu-1", minutes=9))  # no raw mail (raw_ref None)
    await store.insert_messages(documents)

    assert await store.raw_refs(["cu-1"], 10) == {"m-1": "sha256:m-1", "m-2": "sha256:m-2"}
    assert len(await store.raw_refs(["cu-1", "cu-2"], 2)) == 2
    await store.erase(["cu-1"])  # the references outlive the rest until forgotten
    assert set(await store.raw_refs(["cu-1"], 10)) == {"m-1", "m-2"}
    await store.forget_raw_refs(["m-1", "m-2", "unknown"])
    assert await store.raw_refs(["cu-1"], 10) == {}
    assert await store.raw_refs(["cu-2"], 10) == {"m-3": "sha256:m-3"}
