"""Customers by display name: the one query of the customer search that is not by
``_id`` (identities are looked up by ``_id``; see ``read_api``)."""

from __future__ import annotations

from typing import Protocol

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from switchboard_common.mongo import Document
from switchboard_router.timeline.memory import InMemoryIdentityStore
from switchboard_router.workspace.shaping import name_matches, name_pattern


class CustomerNames(Protocol):
    async def search(self, text: str, after: str | None, limit: int) -> list[str]:
        """The ids of the customers whose display name holds ``text`` (any case), after
        ``after``, at most ``limit`` (one read). Erased customers have no name and are
        never found."""
        ...


class MongoCustomerNames:
    """``CustomerNames`` on the ``customers`` collection. A case-insensitive regular
    expression scans on both servers (no index serves a substring), bounded by ``limit``."""

    def __init__(self, customers: AsyncCollection[Document]) -> None:
        self.customers = customers

    async def search(self, text: str, after: str | None, limit: int) -> list[str]:
        query: Document = {
            "display_name": {"$regex": name_pattern(text), "$options": "i"},
            "erased_at": None,
        }
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.customers.find(query, {"_id": 1}).sort("_id", ASCENDING)
        return [str(d["_id"]) async for d in cursor.limit(limit)]


class InMemoryCustomerNames:
    """``CustomerNames`` over the in-memory identity store (unit tests)."""

    def __init__(self, identities: InMemoryIdentityStore) -> None:
        self.identities = identities

    async def search(self, text: str, after: str | None, limit: int) -> list[str]:
        found = [
            c.customer_id
            for c in sorted(self.identities.customers.values(), key=lambda c: c.customer_id)
            if c.erased_at is None
            and name_matches(c.display_name, text)
            and (after is None or c.customer_id > after)
        ]
        return found[:limit]
