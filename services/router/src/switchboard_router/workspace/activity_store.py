"""Where the timeline's activity items are kept: the port, its MongoDB adapter and the
in-memory one (held to each other by ``tests/test_activity_store_contract.py``).

One collection, ``timeline_activity``, ``_id`` = the item's id (``activity``). Items are
only ever inserted (a redelivered event's item exists already: a duplicate key, ignored),
so storing a batch is one unordered ``insert_many`` on both MongoDB and FerretDB v1.
Reads page by ``(at, _id)`` like the timeline's messages, so the read API merges both.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.bulk import insert_new
from switchboard_common.mongo import Document
from switchboard_router.timeline.mongo import find_page, of_customers
from switchboard_router.timeline.ports import Page
from switchboard_router.workspace.activity import TEXT_TYPES, carries_personal_data, redacted

COLLECTION = "timeline_activity"
#: The read API's two orders (MongoDB uses them; FerretDB v1 scans: the read path only).
INDEXES = [
    IndexModel([("customer_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)]),
    IndexModel([("conversation_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)]),
]


class ActivityStore(Protocol):
    """Activity items of the timeline (documents as ``activity.filed`` makes them)."""

    async def insert(self, documents: Sequence[Document]) -> set[str]:
        """Insert the items not stored yet (one bulk insert); return the ids that were
        stored already (left unchanged). Idempotent."""
        ...

    async def redact(self, item_ids: Sequence[str]) -> None:
        """Drop the personal data of these items (``activity.redacted``). Idempotent."""
        ...

    async def items(self, customer_ids: Sequence[str], page: Page) -> list[Document]:
        """The customers' items in ``(at, _id)`` order after the page's position, at most
        ``page.limit``."""
        ...

    async def conversation_items(self, conversation_id: str, page: Page) -> list[Document]:
        """One conversation's items, as ``items``."""
        ...

    async def erase(self, customer_ids: Sequence[str]) -> dict[str, int]:
        """Redact every item filed under the customers (texts of replies, notes,
        acknowledgements and surveys, error texts of deliveries); the items stay, as
        skeletons. Idempotent. Returns ``{"activity_items": <items redacted>}``."""
        ...


class MongoActivityStore:
    """``ActivityStore`` on MongoDB (and FerretDB v1)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[COLLECTION]

    async def ensure_indexes(self) -> None:
        # One index per command (FerretDB v1.24 panics on several existing ones at once).
        for index in INDEXES:
            await self.collection.create_indexes([index])

    async def insert(self, documents: Sequence[Document]) -> set[str]:
        unique = list({d["_id"]: d for d in reversed(documents)}.values())
        return {str(i) for i in await insert_new(self.collection, unique)}

    async def redact(self, item_ids: Sequence[str]) -> None:
        if item_ids:
            await self._redact({"_id": {"$in": list(item_ids)}})

    async def _redact(self, scope: Document) -> int:
        """Two updates (texts, error texts), each only of items that still hold some:
        a second erasure finds and counts nothing."""
        texts = await self.collection.update_many(
            {**scope, "type": {"$in": list(TEXT_TYPES)}, "text": {"$ne": None}},
            {"$set": {"text": None, "erased": True}},
        )
        errors = await self.collection.update_many(
            {**scope, "type": "delivery", "error.text": {"$ne": None}},
            {"$set": {"error.text": None, "erased": True}},
        )
        return texts.modified_count + errors.modified_count

    async def items(self, customer_ids: Sequence[str], page: Page) -> list[Document]:
        return await find_page(self.collection, of_customers(customer_ids), page, "at")

    async def conversation_items(self, conversation_id: str, page: Page) -> list[Document]:
        return await find_page(self.collection, {"conversation_id": conversation_id}, page, "at")

    async def erase(self, customer_ids: Sequence[str]) -> dict[str, int]:
        return {"activity_items": await self._redact({"customer_id": {"$in": list(customer_ids)}})}


class InMemoryActivityStore:
    """``ActivityStore`` in a dictionary of documents."""

    def __init__(self) -> None:
        self.documents: dict[str, Document] = {}

    async def insert(self, documents: Sequence[Document]) -> set[str]:
        existing: set[str] = set()
        for document in documents:
            if document["_id"] in self.documents:
                existing.add(document["_id"])
            else:
                self.documents[document["_id"]] = copy.deepcopy(document)
        return existing

    async def redact(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            document = self.documents.get(item_id)
            if document is not None and carries_personal_data(document):
                self.documents[item_id] = redacted(document)

    async def items(self, customer_ids: Sequence[str], page: Page) -> list[Document]:
        wanted = set(customer_ids)
        return page.of((d for d in self.documents.values() if d["customer_id"] in wanted), "at")

    async def conversation_items(self, conversation_id: str, page: Page) -> list[Document]:
        found = (d for d in self.documents.values() if d["conversation_id"] == conversation_id)
        return page.of(found, "at")

    async def erase(self, customer_ids: Sequence[str]) -> dict[str, int]:
        wanted = set(customer_ids)
        doomed = [
            key
            for key, d in self.documents.items()
            if d["customer_id"] in wanted and carries_personal_data(d)
        ]
        await self.redact(doomed)
        return {"activity_items": len(doomed)}
