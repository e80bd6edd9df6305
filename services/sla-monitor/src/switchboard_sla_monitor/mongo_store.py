"""MongoDB adapters of the SLA monitor's stores (PyMongo async; FerretDB v1 compatible).

Collections: ``sla_conversations`` (``_id`` = conversation id), ``sla_emissions``
(``_id`` = emission id) and ``sla_meta`` (``_id`` = marker name). Hot-path reads and
writes address documents by ``_id``.

Facts are stored under ``facts.<sha256 of the fact key>`` and added with ``$set`` of
those fields: on MongoDB that is atomic per document and commutes with any other fact
write, so redelivered or concurrent events never lose one another. (FerretDB v1 rewrites
whole documents, which is why one consumer replica owns each conversation: see README.)

Scaling: ``due`` filters on ``next_check`` and ``live`` on ``active``/``next_check``; on MongoDB the
indexes created here make both proportional to what they return; on FerretDB v1 they
are full scans (fine for thousands of open conversations), bounded by ``limit``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from switchboard_common.mongo import Document
from switchboard_sla_monitor.clocks import ClockState
from switchboard_sla_monitor.facts import Fact, fact_key_field
from switchboard_sla_monitor.store import ClaimRecord, ConversationRecord, ConversationUpdate

CONVERSATIONS = "sla_conversations"
EMISSIONS = "sla_emissions"
META = "sla_meta"
_DUPLICATE_KEY = 11000
_FACT: TypeAdapter[Fact] = TypeAdapter(Fact)
#: Concurrent single-document reads by ``_id`` (each uses the index on FerretDB too).
_READ_CONCURRENCY = 32


async def _by_ids(
    collection: AsyncCollection[Document], ids: Sequence[str], projection: dict[str, int] | None
) -> list[Document]:
    semaphore = asyncio.Semaphore(_READ_CONCURRENCY)

    async def one(i: str) -> Document | None:
        async with semaphore:
            return await collection.find_one({"_id": i}, projection)

    found = await asyncio.gather(*(one(i) for i in dict.fromkeys(ids)))
    return [d for d in found if d is not None]


def _record(doc: Document) -> ConversationRecord:
    facts = {}
    for stored in (doc.get("facts") or {}).values():
        fact = _FACT.validate_python(stored)
        facts[fact.key] = fact
    return ConversationRecord(
        conversation_id=doc["_id"],
        facts=facts,
        clocks=tuple(ClockState.model_validate(c) for c in doc.get("clocks") or ()),
        next_check=doc.get("next_check"),
        active=bool(doc.get("active")),
    )


class MongoConversationStore:
    """``ConversationStore`` on ``sla_conversations`` (markers in ``sla_meta``)."""

    def __init__(
        self, collection: AsyncCollection[Document], meta: AsyncCollection[Document]
    ) -> None:
        self.collection = collection
        self.meta = meta

    async def marker(self, name: str) -> str | None:
        doc = await self.meta.find_one({"_id": name})
        return None if doc is None else str(doc["value"])

    async def set_marker(self, name: str, value: str) -> None:
        await self.meta.update_one({"_id": name}, {"$set": {"value": value}}, upsert=True)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("next_check", ASCENDING)], name="next_check")
        await self.collection.create_index([("active", ASCENDING)], name="active")

    async def load(self, conversation_ids: Sequence[str]) -> dict[str, ConversationRecord]:
        docs = await _by_ids(self.collection, conversation_ids, None)
        return {d["_id"]: _record(d) for d in docs}

    async def save(self, updates: Sequence[ConversationUpdate]) -> None:
        if not updates:
            return
        writes = []
        for u in updates:
            fields: dict[str, Any] = {
                f"facts.{fact_key_field(key)}": fact.model_dump(mode="json")
                for key, fact in u.new_facts.items()
            }
            fields["clocks"] = [c.model_dump(mode="json") for c in u.clocks]
            fields["next_check"] = u.next_check
            fields["active"] = u.active
            writes.append(UpdateOne({"_id": u.conversation_id}, {"$set": fields}, upsert=True))
        await self.collection.bulk_write(writes, ordered=False)

    async def due(self, now: datetime, limit: int) -> list[ConversationRecord]:
        cursor = (
            self.collection.find({"next_check": {"$lte": now}})
            .sort([("next_check", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [_record(d) async for d in cursor]

    async def live(self, *, with_facts: bool = False) -> AsyncIterator[ConversationRecord]:
        projection = None if with_facts else {"clocks": 1, "active": 1, "next_check": 1}
        cursor = self.collection.find(
            {"$or": [{"active": True}, {"next_check": {"$ne": None}}]}, projection
        )
        async for doc in cursor:
            yield _record(doc)


class MongoEmissionStore:
    """``EmissionStore`` on the ``sla_emissions`` collection; claims are unique inserts."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        # Operators look claims up by conversation (nothing on the hot path does).
        await self.collection.create_index([("conversation_id", ASCENDING)], name="conversation_id")

    async def claim(self, claims: Sequence[ClaimRecord]) -> set[str]:
        if not claims:
            return set()
        docs = [
            {
                "_id": c.id,
                "conversation_id": c.conversation_id,
                "kind": c.kind,
                "payload": c.payload,
                "claimed_at": c.claimed_at,
                "claimed_by": c.claimed_by,
                "published_at": c.published_at,
            }
            for c in claims
        ]
        lost: set[str] = set()
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            for failure in error.details.get("writeErrors", []):
                if failure.get("code") != _DUPLICATE_KEY:
                    raise
                lost.add(docs[failure["index"]]["_id"])
        return {c.id for c in claims} - lost

    async def get(self, ids: Sequence[str]) -> dict[str, ClaimRecord]:
        docs = await _by_ids(self.collection, ids, None)
        return {
            d["_id"]: ClaimRecord(
                id=d["_id"],
                conversation_id=d["conversation_id"],
                kind=d["kind"],
                payload=d["payload"],
                claimed_at=d["claimed_at"],
                claimed_by=d.get("claimed_by", ""),
                published_at=d.get("published_at"),
            )
            for d in docs
        }

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        if ids:
            await self.collection.bulk_write(
                [UpdateOne({"_id": i}, {"$set": {"published_at": at}}) for i in ids],
                ordered=False,
            )
