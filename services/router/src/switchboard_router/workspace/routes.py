"""Routing heads as lists: a read-only port over ``assignment_routes`` for the workspace.

Assignment owns the heads (``assignment.store``); the workspace only lists them, with
filters and keyset paging, so a page is one bounded query whatever the collection's size
(on FerretDB v1 the filter still scans; MongoDB uses the indexes created here). Heads may
lag a conversation's latest decision by a moment (see the assignment store): a list shows
what the head says, as ``GET /queue`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from switchboard_common.mongo import Document
from switchboard_router.assignment.matcher import queue_key
from switchboard_router.assignment.model import RouteState, RouteStatus
from switchboard_router.assignment.store import InMemoryAssignmentStore

#: A head's position in an order: (priority rank, waiting since, conversation id).
RouteKey = tuple[int, datetime, str]


class RouteOrder(StrEnum):
    """How a list is sorted."""

    #: Most urgent first, then longest waiting (an agent's inbox, as the queue serves).
    QUEUE = "queue"
    #: Latest to start waiting first (a list of every conversation: newest on top).
    RECENT = "recent"


@dataclass(frozen=True)
class RouteQuery:
    """Which heads: every given filter must hold (None: any)."""

    statuses: frozenset[RouteStatus] | None = None
    agent_id: str | None = None
    queue: str | None = None
    channel: str | None = None


#: A head's position: the queue's own order (the inbox serves as the queue does).
route_key = queue_key


class RouteReads(Protocol):
    async def ensure_indexes(self) -> None: ...

    async def page(
        self, query: RouteQuery, order: RouteOrder, after: RouteKey | None, limit: int
    ) -> list[RouteState]:
        """At most ``limit`` heads matching ``query`` in ``order``, after ``after`` (one
        read)."""
        ...


def _filter(query: RouteQuery) -> Document:
    found: Document = {}
    if query.statuses is not None:
        found["status"] = {"$in": sorted(str(s) for s in query.statuses)}
    if query.agent_id is not None:
        found["agent_id"] = query.agent_id
    if query.queue is not None:
        found["queue"] = query.queue
    if query.channel is not None:
        found["channel"] = query.channel
    return found


def _fields(order: RouteOrder) -> list[str]:
    if order is RouteOrder.QUEUE:
        return ["priority_rank", "waiting_since", "_id"]
    return ["waiting_since", "_id"]


def _values(order: RouteOrder, key: RouteKey) -> list[Any]:
    return list(key) if order is RouteOrder.QUEUE else [key[1], key[2]]


def _after(order: RouteOrder, key: RouteKey) -> Document:
    """Heads strictly past ``key`` in ``order``: (a > x) or (a = x and b > y) or ..."""
    fields, values = _fields(order), _values(order, key)
    past = "$gt" if order is RouteOrder.QUEUE else "$lt"
    branches = [
        {**dict(zip(fields[:n], values[:n], strict=True)), fields[n]: {past: values[n]}}
        for n in range(len(fields))
    ]
    return {"$or": branches}


class MongoRouteReads:
    """``RouteReads`` on the assignment store's ``assignment_routes``."""

    def __init__(self, routes: AsyncCollection[Document]) -> None:
        self.routes = routes

    async def ensure_indexes(self) -> None:
        # The inbox (one agent's heads) and the agent filter; the status filter is served
        # by assignment's own ``status, priority_rank, waiting_since``.
        await self.routes.create_index(
            [("agent_id", ASCENDING), ("priority_rank", ASCENDING), ("waiting_since", ASCENDING)],
            name="agent_order",
        )
        await self.routes.create_index(
            [("waiting_since", DESCENDING), ("_id", DESCENDING)], name="recent_order"
        )

    async def page(
        self, query: RouteQuery, order: RouteOrder, after: RouteKey | None, limit: int
    ) -> list[RouteState]:
        found = _filter(query)
        if after is not None:
            found = {"$and": [found, _after(order, after)]} if found else _after(order, after)
        direction = ASCENDING if order is RouteOrder.QUEUE else DESCENDING
        cursor = self.routes.find(found).sort([(f, direction) for f in _fields(order)])
        return [RouteState.from_document(d) async for d in cursor.limit(limit)]


class InMemoryRouteReads:
    """``RouteReads`` over the in-memory assignment store's heads (unit tests)."""

    def __init__(self, store: InMemoryAssignmentStore) -> None:
        self.store = store

    async def ensure_indexes(self) -> None:
        return None

    async def page(
        self, query: RouteQuery, order: RouteOrder, after: RouteKey | None, limit: int
    ) -> list[RouteState]:
        found = [s for s in self.store.heads.values() if matches(query, s)]
        recent = order is RouteOrder.RECENT

        def position(state: RouteState) -> tuple[Any, ...]:
            key = route_key(state)
            return key if not recent else (key[1], key[2])

        found.sort(key=position, reverse=recent)
        if after is not None:
            mark = after if not recent else (after[1], after[2])
            found = [s for s in found if (position(s) < mark if recent else position(s) > mark)]
        return found[:limit]


def matches(query: RouteQuery, state: RouteState) -> bool:
    """Whether a head passes the query's filters (the in-memory side of ``_filter``)."""
    return (
        (query.statuses is None or state.status in query.statuses)
        and (query.agent_id is None or state.agent_id == query.agent_id)
        and (query.queue is None or state.queue == query.queue)
        and (query.channel is None or str(state.channel) == query.channel)
    )
