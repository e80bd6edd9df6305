"""One contract for both activity stores (``workspace.activity_store``): in memory (unit)
and FerretDB (integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from switchboard_common.mongo import Document
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_router.timeline.ports import Page
from switchboard_router.workspace.activity_store import (
    ActivityStore,
    InMemoryActivityStore,
    MongoActivityStore,
)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ActivityStore]:
    if request.param == "memory":
        yield InMemoryActivityStore()
        return
    async with real_database(request) as db:
        mongo = MongoActivityStore(db)
        await mongo.ensure_indexes()
        await mongo.ensure_indexes()  # idempotent at every start
        yield mongo


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def note(item_id: str, seconds: float, customer: str = "cu-1", conv: str = "co-1") -> Document:
    return {
        "_id": item_id,
        "type": "note",
        "at": at(seconds),
        "conversation_id": conv,
        "customer_id": customer,
        "note_id": item_id,
        "agent_id": "agent-7",
        "text": f"text of {item_id}",
    }


def delivery(item_id: str, seconds: float, error: dict[str, str] | None) -> Document:
    return {
        "_id": item_id,
        "type": "delivery",
        "at": at(seconds),
        "conversation_id": "co-1",
        "customer_id": "cu-1",
        "reply_id": "r-1",
        "status": "failed" if error else "sent",
        "error": error,
    }


def assignment(item_id: str, seconds: float) -> Document:
    return {
        "_id": item_id,
        "type": "assignment",
        "at": at(seconds),
        "conversation_id": "co-2",
        "customer_id": "cu-2",
        "event": "queued",
        "agent_id": None,
        "queue": "billing",
        "priority": "high",
        "seq": 1,
        "offer_expires_at": None,
        "reason_json": '{"skills":[["a"]]}',
    }


async def test_insert_keeps_the_first_and_reports_what_was_stored_already(
    store: ActivityStore,
) -> None:
    assert await store.insert([note("note:1", 0), assignment("assignment:co-2:1", 1)]) == set()
    changed = {**note("note:1", 0), "text": "another text"}
    assert await store.insert([changed, note("note:2", 2)]) == {"note:1"}
    (first, second) = await store.items(["cu-1"], Page(None, 10))
    assert (first["_id"], first["text"]) == ("note:1", "text of note:1")
    assert second["_id"] == "note:2"
    (queued,) = await store.items(["cu-2"], Page(None, 10))
    assert queued == assignment("assignment:co-2:1", 1)  # every field as stored
    assert await store.insert([]) == set()


async def test_pages_follow_at_then_id_across_customers_and_by_conversation(
    store: ActivityStore,
) -> None:
    await store.insert(
        [
            note("note:b", 1),
            note("note:a", 1),
            note("note:c", 0, customer="cu-3", conv="co-3"),
            note("note:d", 0.001),
            note("note:e", 5, customer="cu-9"),
        ]
    )
    first = await store.items(["cu-1", "cu-3"], Page(None, 2))
    assert [d["_id"] for d in first] == ["note:c", "note:d"]
    position = (first[-1]["at"], first[-1]["_id"])
    rest = await store.items(["cu-1", "cu-3"], Page(position, 10))
    assert [d["_id"] for d in rest] == ["note:a", "note:b"]
    by_conversation = await store.conversation_items("co-1", Page(None, 10))
    assert [d["_id"] for d in by_conversation] == ["note:d", "note:a", "note:b", "note:e"]
    after = await store.conversation_items("co-1", Page((at(1), "note:a"), 10))
    assert [d["_id"] for d in after] == ["note:b", "note:e"]


async def test_erasure_drops_texts_and_error_texts_keeps_skeletons_and_is_idempotent(
    store: ActivityStore,
) -> None:
    await store.insert(
        [
            note("note:1", 0),
            delivery(
                "delivery:r-1:failed", 1, {"code": "rejected", "text": "+34600111222 blocked"}
            ),
            delivery("delivery:r-1:sent", 2, None),
            assignment("assignment:co-2:1", 3),
            note("note:other", 4, customer="cu-2", conv="co-2"),
        ]
    )
    assert await store.erase(["cu-1", "cu-5"]) == {"activity_items": 2}
    noted, failed, sent = await store.items(["cu-1"], Page(None, 10))
    assert (noted["text"], noted["erased"], noted["agent_id"]) == (None, True, "agent-7")
    assert failed["error"] == {"code": "rejected", "text": None}
    assert failed["erased"] is True
    assert sent == delivery("delivery:r-1:sent", 2, None)  # nothing personal in it
    others = await store.items(["cu-2"], Page(None, 10))
    assert [d.get("text") for d in others] == [None, "text of note:other"]
    assert "erased" not in others[1]
    assert await store.erase(["cu-1"]) == {"activity_items": 0}


async def test_redact_names_items_by_id(store: ActivityStore) -> None:
    await store.insert([note("note:1", 0), note("note:2", 1)])
    await store.redact(["note:2", "note:missing"])
    await store.redact([])
    one, two = await store.items(["cu-1"], Page(None, 10))
    assert (one["text"], two["text"], two["erased"]) == ("text of note:1", None, True)
