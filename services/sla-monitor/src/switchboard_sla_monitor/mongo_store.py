"""MongoDB adapters of the SLA monitor's stores (PyMongo async; FerretDB v1 compatible).

Collections: ``sla_conversations`` (``_id`` = conversation id; its ``due`` field, metric →
BSON date of each clock running now, is the read model the router reads by ``_id``),
``sla_emissions``
(``_id`` = emission id) and ``sla_meta`` (``_id`` = marker name). Hot-path reads and
writes address documents by ``_id``.

Facts are stored under ``facts.<sha256 of the fact key>`` and added with ``$set`` of
those fields: on MongoDB that is atomic per document and commutes with any other fact
write, so redelivered or concurrent events never lose one another. (FerretDB v1 rewrites
whole documents, which is why one consumer replica owns each conversation: see README.)

Writes are bulk (``insert_many``/``bulk_write``, unordered) on both servers. The
project's FerretDB build is patched so ``_id`` filters use the ``_id`` index and a bulk
update releases each statement's cursor (``infra/ferretdb/patches.toml``); a write that
meets SQLite's ``database is locked`` is a transient failure the batch consumer retries.

Scaling: ``due`` filters on ``next_check`` and ``live`` on ``active``/``next_check``; on MongoDB the
indexes created here make both proportional to what they return; on FerretDB v1 they
are full scans (fine for thousands of open conversations), bounded by ``limit``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from switchboard_common.mongo import Document
from switchboard_sla_monitor.clocks import ClockState
from switchboard_sla_monitor.facts import Fact, fact_key_field
from switchboard_sla_monitor.store import (
    ClaimRecord,
    ConversationRecord,
    ConversationUpdate,
    DoneUpdate,
)

CONVERSATIONS = "sla_conversations"
EMISSIONS = "sla_emissions"
META = "sla_meta"
_DUPLICATE_KEY = 11000
_FACT: TypeAdapter[Fact] = TypeAdapter(Fact)
#: Ids per ``$in`` read.
_READ_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class _Update:
    """One single-document update by ``_id``."""

    id: str
    fields: dict[str, Any]
    upsert: bool = False
    #: Also count the write in ``revision`` (conversation documents).
    revise: bool = False


async def _update_all(collection: AsyncCollection[Document], updates: Sequence[_Update]) -> None:
    """Apply single-document updates by ``_id`` in one unordered bulk write."""
    if not updates:
        return
    writes = [
        UpdateOne(
            {"_id": u.id},
            {"$set": u.fields, "$inc": {"revision": 1}} if u.revise else {"$set": u.fields},
            upsert=u.upsert,
        )
        for u in updates
    ]
    await collection.bulk_write(writes, ordered=False)


async def _by_ids(
    collection: AsyncCollection[Document], ids: Sequence[str], projection: dict[str, int] | None
) -> list[Document]:
    """Documents by ``_id``, one ``$in`` query per chunk (an index lookup on MongoDB;
    FerretDB v1 pushes down only single-``_id`` filters, so there it is one scan per
    chunk, which measured cheaper than a thousand single lookups)."""
    unique = list(dict.fromkeys(ids))
    found: list[Document] = []
    for start in range(0, len(unique), _READ_CHUNK):
        chunk = unique[start : start + _READ_CHUNK]
        found.extend([d async for d in collection.find({"_id": {"$in": chunk}}, projection)])
    return found


def _fields(update: ConversationUpdate) -> dict[str, Any]:
    fields: dict[str, Any] = {
        f"facts.{fact_key_field(key)}": fact.model_dump(mode="json")
        for key, fact in update.new_facts.items()
    }
    fields["clocks"] = [c.model_dump(mode="json") for c in update.clocks]
    fields["next_check"] = update.next_check
    fields["active"] = update.active
    fields["first_at"] = update.first_at
    fields["last_at"] = update.last_at
    # Replaced whole (never per metric): a clock that stopped or paused leaves no due time.
    fields["due"] = update.due
    return fields


def _document(update: ConversationUpdate) -> Document:
    return {
        "_id": update.conversation_id,
        "facts": {
            fact_key_field(key): fact.model_dump(mode="json")
            for key, fact in update.new_facts.items()
        },
        "clocks": [c.model_dump(mode="json") for c in update.clocks],
        "next_check": update.next_check,
        "active": update.active,
        "first_at": update.first_at,
        "last_at": update.last_at,
        "due": update.due,
        "revision": 1,
    }


def _duplicates(error: BulkWriteError, ids: Sequence[str]) -> set[str]:
    """The ids an unordered insert found taken; re-raise any other failure."""
    taken = set()
    for failure in error.details.get("writeErrors", []):
        if failure.get("code") != _DUPLICATE_KEY:
            raise error
        taken.add(ids[failure["index"]])
    return taken


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
        first_at=doc.get("first_at"),
        last_at=doc.get("last_at"),
        revision=int(doc.get("revision") or 0),
        due=doc.get("due"),
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
        await self.collection.create_index([("last_at", ASCENDING)], name="last_at")

    async def load(self, conversation_ids: Sequence[str]) -> dict[str, ConversationRecord]:
        docs = await _by_ids(self.collection, conversation_ids, None)
        return {d["_id"]: _record(d) for d in docs}

    async def save(self, updates: Sequence[ConversationUpdate]) -> None:
        if not updates:
            return
        # A new conversation is inserted (cheap on both servers: no lookup), all in one
        # command; one that another writer created meanwhile is updated instead.
        new = {u.conversation_id: u for u in updates if u.new}
        raced: set[str] = set()
        if new:
            try:
                await self.collection.insert_many(
                    [_document(u) for u in new.values()], ordered=False
                )
            except BulkWriteError as error:
                raced = _duplicates(error, list(new))
        writes = [
            _Update(u.conversation_id, _fields(u), upsert=True, revise=True)
            for u in updates
            if u.conversation_id not in new or u.conversation_id in raced
        ]
        await _update_all(self.collection, writes)

    async def record_done(self, updates: Sequence[DoneUpdate]) -> None:
        if not updates:
            return
        writes = [
            UpdateOne(
                {
                    "_id": u.conversation_id,
                    # Documents written before revisions existed have none: revision 0.
                    "revision": u.expected_revision or {"$in": [0, None]},
                },
                {
                    "$set": {
                        **{
                            f"facts.{fact_key_field(key)}": fact.model_dump(mode="json")
                            for key, fact in u.new_facts.items()
                        },
                        "next_check": u.next_check,
                    },
                    "$inc": {"revision": 1},
                },
            )
            for u in updates
        ]
        await self.collection.bulk_write(writes, ordered=False)

    async def due(self, now: datetime, limit: int) -> list[ConversationRecord]:
        cursor = (
            self.collection.find({"next_check": {"$lte": now}})
            .sort([("next_check", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [_record(d) async for d in cursor]

    async def live(
        self, *, with_facts: bool = False, open_only: bool = False
    ) -> AsyncIterator[ConversationRecord]:
        projection = None if with_facts else {"clocks": 1, "active": 1, "next_check": 1}
        query: Document = (
            {"active": True}
            if open_only
            else {"$or": [{"active": True}, {"next_check": {"$ne": None}}]}
        )
        cursor = self.collection.find(query, projection)
        async for doc in cursor:
            yield _record(doc)

    async def in_period(
        self, start: datetime, end: datetime, limit: int
    ) -> list[ConversationRecord]:
        # One query, bounded by ``limit``; the last_at index serves it on
        # MongoDB, FerretDB v1 scans (reports are rare, and bounded).
        cursor = (
            self.collection.find(
                {
                    "first_at": {"$lt": end},
                    "$or": [{"last_at": {"$gte": start}}, {"active": True}],
                }
            )
            .sort([("_id", ASCENDING)])
            .limit(limit)
        )
        return [_record(d) async for d in cursor]


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
            lost = _duplicates(error, [c.id for c in claims])
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
        writes = [_Update(i, {"published_at": at}) for i in ids]
        await _update_all(self.collection, writes)
