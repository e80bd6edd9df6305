"""What each workspace request id stands for: the agent, the request's digest and the
event's identity (topic, key, type, id and time), so a retry publishes exactly the same
event again: the retry carries the same body (the digest says so), and ``commands``
rebuilds the event from it with the stored id and time. No text of the request is kept
(a reply, a note, a rejection's reason), so these records hold no personal data and
erasure has nothing to find here.

One record per request id (``_id``), claimed by a unique insert: the first writer wins
and every later request with that id is compared with the winner. Only ``_id`` lookups
and inserts, which FerretDB v1 does cheaply and atomically. Records older than the
retention are forgotten by a periodic sweep (FerretDB v1 has no TTL index): a client
retries within minutes, not weeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from switchboard_common.kafka import Outgoing
from switchboard_common.mongo import Document

COLLECTION = "workspace_requests"


@dataclass(frozen=True)
class RequestRecord:
    """A request id's claim: who sent it, a digest of what it asked, and the identity of
    the event it publishes."""

    request_id: str
    agent_id: str
    digest: str
    topic: str
    key: str
    event_type: str
    event_id: str
    at: datetime

    @classmethod
    def of(cls, request_id: str, agent_id: str, digest: str, item: Outgoing) -> RequestRecord:
        if item.event_id is None or item.time is None:
            raise ValueError("a workspace event has a fixed id and time")
        return cls(
            request_id=request_id,
            agent_id=agent_id,
            digest=digest,
            topic=item.topic,
            key=item.key,
            event_type=item.event.ce_type,
            event_id=item.event_id,
            at=item.time,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.request_id,
            "agent_id": self.agent_id,
            "digest": self.digest,
            "topic": self.topic,
            "key": self.key,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "at": self.at,
        }

    @classmethod
    def from_document(cls, doc: Document) -> RequestRecord:
        return cls(
            request_id=str(doc["_id"]),
            agent_id=str(doc["agent_id"]),
            digest=str(doc["digest"]),
            topic=str(doc["topic"]),
            key=str(doc["key"]),
            event_type=str(doc["event_type"]),
            event_id=str(doc["event_id"]),
            at=doc["at"],
        )


class RequestStore(Protocol):
    async def get(self, request_id: str) -> RequestRecord | None: ...

    async def claim(self, record: RequestRecord) -> RequestRecord:
        """Store ``record`` unless its request id is taken; the record that holds the
        id afterwards (``record`` itself, or the earlier one)."""
        ...

    async def forget_before(self, cutoff: datetime) -> int:
        """Drop the records of events stamped before ``cutoff``; how many."""
        ...


class InMemoryRequestStore:
    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}

    async def get(self, request_id: str) -> RequestRecord | None:
        return self.records.get(request_id)

    async def claim(self, record: RequestRecord) -> RequestRecord:
        return self.records.setdefault(record.request_id, record)

    async def forget_before(self, cutoff: datetime) -> int:
        old = [key for key, record in self.records.items() if record.at < cutoff]
        for key in old:
            del self.records[key]
        return len(old)


class MongoRequestStore:
    """``workspace_requests``: ``_id`` = request id (no other index)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[COLLECTION]

    async def get(self, request_id: str) -> RequestRecord | None:
        doc = await self.collection.find_one({"_id": request_id})
        return None if doc is None else RequestRecord.from_document(doc)

    async def claim(self, record: RequestRecord) -> RequestRecord:
        try:
            await self.collection.insert_one(record.to_document())
        except DuplicateKeyError:
            existing = await self.get(record.request_id)
            if existing is None:  # forgotten in between (past retention): the retry claims
                raise
            return existing
        return record

    async def forget_before(self, cutoff: datetime) -> int:
        result = await self.collection.delete_many({"at": {"$lt": cutoff}})
        return result.deleted_count
