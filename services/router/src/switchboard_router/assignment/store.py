"""The assignment store port and its two adapters (MongoDB, in-memory).

Exclusive steps are inserts of documents whose ``_id`` names the exclusive thing, the
one primitive that is atomic on MongoDB *and* FerretDB v1 (where a conditional update is
a read followed by a write, see services/router/README.md):

- a capacity slot ``<agent>|<channel>|<k>`` (k < capacity) or ``<agent>|*|<k>`` (a unit
  of total capacity): inserting it reserves it, deleting it by ``_id`` releases it;
- a decision ``<conversation_id>:<seq>``: inserting it takes step ``seq`` of the
  conversation (claiming a queued conversation, accepting, requeuing, resolving ...);
  the loser of a race gets a duplicate key and re-reads.

Everything else is addressed by ``_id`` on the hot path. The scans (held slots, routes by
status, agents) serve start-up, the periodic refresh and the read API only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from switchboard_common.mongo import Document
from switchboard_router.assignment.model import (
    Agent,
    RouteState,
    RouteStatus,
    Slot,
    decision_id,
)


@dataclass(frozen=True, slots=True)
class Decision:
    """Step ``state.seq`` of a conversation; ``kind`` is the event it publishes, if any."""

    state: RouteState
    kind: str | None
    reason: dict[str, Any]
    #: The replica (and attempt) that made it.
    token: str

    @property
    def decision_id(self) -> str:
        return decision_id(self.state.conversation_id, self.state.seq)


class AssignmentStore(Protocol):
    """What the assignment engine persists. Every method may raise the database's
    transient errors (the consumer retries the batch); none blocks otherwise."""

    async def ensure_indexes(self) -> None: ...

    async def reserve(self, slots: Sequence[Slot]) -> str | None:
        """Insert every slot, or none: returns None on success, else the id of a slot that
        is already held (the ones inserted before it are released again)."""
        ...

    async def release(self, slot_ids: Sequence[str]) -> None:
        """Delete slots by id (idempotent)."""
        ...

    async def held_slots(self, agent_id: str | None = None) -> list[Slot]: ...

    async def claim(self, decision: Decision) -> bool:
        """Insert the decision; False if step ``seq`` of that conversation is taken."""
        ...

    async def decision(self, conversation_id: str, seq: int) -> Decision | None: ...

    async def head(self, conversation_id: str) -> RouteState | None:
        """The last state written to the head (may lag the decisions: probe forward)."""
        ...

    async def put_head(self, state: RouteState) -> None: ...

    async def routes(self, statuses: Sequence[RouteStatus]) -> list[RouteState]: ...

    async def save_agents(self, agents: Sequence[Agent]) -> None:
        """Replace agent documents by id (last write wins)."""
        ...

    async def update_agents(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Set fields of agent documents by id, creating missing ones. A ``capacity``
        field also raises ``ceiling`` per channel to at least that capacity."""
        ...

    async def agent(self, agent_id: str) -> Agent | None: ...

    async def slot_held(self, slot_id: str) -> bool: ...

    async def agents(self) -> list[Agent]: ...

    async def agents_page(self, after: str | None, limit: int) -> list[Agent]: ...

    async def remember_agent(self, customer_id: str, agent_id: str, at: datetime) -> None: ...

    async def last_agent(self, customer_id: str) -> tuple[str, datetime] | None: ...


# --------------------------------------------------------------------------- in memory


class InMemoryAssignmentStore:
    """The store in dicts, for unit tests of the engine (checked against the MongoDB
    adapter by ``test_assignment_store_contract.py``)."""

    def __init__(self) -> None:
        self.slots: dict[str, Slot] = {}
        self.decisions: dict[str, Decision] = {}
        self.heads: dict[str, RouteState] = {}
        self.agent_docs: dict[str, Agent] = {}
        self.customers: dict[str, tuple[str, datetime]] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def reserve(self, slots: Sequence[Slot]) -> str | None:
        for slot in slots:
            if slot.slot_id in self.slots:
                return slot.slot_id
        for slot in slots:
            self.slots[slot.slot_id] = slot
        return None

    async def release(self, slot_ids: Sequence[str]) -> None:
        for slot in slot_ids:
            self.slots.pop(slot, None)

    async def held_slots(self, agent_id: str | None = None) -> list[Slot]:
        return sorted(
            (s for s in self.slots.values() if agent_id is None or s.agent_id == agent_id),
            key=lambda s: s.slot_id,
        )

    async def claim(self, decision: Decision) -> bool:
        if decision.decision_id in self.decisions:
            return False
        self.decisions[decision.decision_id] = decision
        return True

    async def decision(self, conversation_id: str, seq: int) -> Decision | None:
        return self.decisions.get(decision_id(conversation_id, seq))

    async def head(self, conversation_id: str) -> RouteState | None:
        return self.heads.get(conversation_id)

    async def put_head(self, state: RouteState) -> None:
        self.heads[state.conversation_id] = state

    async def routes(self, statuses: Sequence[RouteStatus]) -> list[RouteState]:
        return sorted(
            (s for s in self.heads.values() if s.status in statuses),
            key=lambda s: s.conversation_id,
        )

    async def save_agents(self, agents: Sequence[Agent]) -> None:
        for agent in agents:
            self.agent_docs[agent.agent_id] = agent

    async def update_agents(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        for agent_id, fields in updates.items():
            current = self.agent_docs.get(agent_id)
            base = {} if current is None else current.to_document()
            ceiling = dict(base.get("ceiling") or {})
            for channel, capacity in (fields.get("capacity") or {}).items():
                ceiling[channel] = max(capacity, ceiling.get(channel, 0))
            document = {**base, **fields, "ceiling": ceiling, "_id": agent_id}
            self.agent_docs[agent_id] = Agent.from_document(document)

    async def agent(self, agent_id: str) -> Agent | None:
        return self.agent_docs.get(agent_id)

    async def slot_held(self, slot_id: str) -> bool:
        return slot_id in self.slots

    async def agents(self) -> list[Agent]:
        return [self.agent_docs[k] for k in sorted(self.agent_docs)]

    async def agents_page(self, after: str | None, limit: int) -> list[Agent]:
        ids = sorted(k for k in self.agent_docs if after is None or k > after)
        return [self.agent_docs[k] for k in ids[:limit]]

    async def remember_agent(self, customer_id: str, agent_id: str, at: datetime) -> None:
        self.customers[customer_id] = (agent_id, at)

    async def last_agent(self, customer_id: str) -> tuple[str, datetime] | None:
        return self.customers.get(customer_id)


# --------------------------------------------------------------------------- MongoDB


class MongoAssignmentStore:
    """The store on MongoDB / FerretDB. Collections (all ``assignment_*``):

    - ``assignment_slots``      ``_id`` = slot id; held capacity (index: agent_id)
    - ``assignment_decisions``  ``_id`` = ``<conversation_id>:<seq>``; the decision log
    - ``assignment_routes``     ``_id`` = conversation id; latest routing state (index:
      status, priority_rank, waiting_since — for the queue listing)
    - ``assignment_agents``     ``_id`` = agent id; profile and presence
    - ``assignment_customers``  ``_id`` = customer id; the agent who last served them
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.slots = db["assignment_slots"]
        self.decisions = db["assignment_decisions"]
        self.routes_ = db["assignment_routes"]
        self.agents_ = db["assignment_agents"]
        self.customers = db["assignment_customers"]

    async def ensure_indexes(self) -> None:
        await self.slots.create_index([("agent_id", ASCENDING)], name="agent")
        await self.routes_.create_index(
            [("status", ASCENDING), ("priority_rank", ASCENDING), ("waiting_since", ASCENDING)],
            name="queue_order",
        )

    async def reserve(self, slots: Sequence[Slot]) -> str | None:
        inserted: list[str] = []
        for slot in slots:
            try:
                await self.slots.insert_one(_slot_document(slot))
            except DuplicateKeyError:
                if inserted:
                    await self.release(inserted)
                return slot.slot_id
            inserted.append(slot.slot_id)
        return None

    async def release(self, slot_ids: Sequence[str]) -> None:
        if len(slot_ids) == 1:
            await self.slots.delete_one({"_id": slot_ids[0]})
        else:
            for slot in slot_ids:  # by _id each: the only indexed filter on FerretDB
                await self.slots.delete_one({"_id": slot})

    async def held_slots(self, agent_id: str | None = None) -> list[Slot]:
        query = {} if agent_id is None else {"agent_id": agent_id}
        return [
            Slot(
                slot_id=d["_id"],
                agent_id=d["agent_id"],
                channel=d["channel"],
                conversation_id=d["conversation_id"],
                seq=int(d["seq"]),
                at=d["at"],
            )
            async for d in self.slots.find(query).sort("_id", ASCENDING)
        ]

    async def claim(self, decision: Decision) -> bool:
        try:
            await self.decisions.insert_one(
                {
                    "_id": decision.decision_id,
                    "state": decision.state.to_document(),
                    "kind": decision.kind,
                    "reason": decision.reason,
                    "token": decision.token,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def decision(self, conversation_id: str, seq: int) -> Decision | None:
        doc = await self.decisions.find_one({"_id": decision_id(conversation_id, seq)})
        if doc is None:
            return None
        return Decision(
            state=RouteState.from_document(doc["state"]),
            kind=doc.get("kind"),
            reason=dict(doc.get("reason") or {}),
            token=str(doc.get("token") or ""),
        )

    async def head(self, conversation_id: str) -> RouteState | None:
        doc = await self.routes_.find_one({"_id": conversation_id})
        return None if doc is None else RouteState.from_document(doc)

    async def put_head(self, state: RouteState) -> None:
        await _upsert(self.routes_, _head_document(state))

    async def routes(self, statuses: Sequence[RouteStatus]) -> list[RouteState]:
        query = {"status": {"$in": [str(s) for s in statuses]}}
        return [
            RouteState.from_document(d)
            async for d in self.routes_.find(query).sort("_id", ASCENDING)
        ]

    async def save_agents(self, agents: Sequence[Agent]) -> None:
        if not agents:
            return
        try:
            await self.agents_.bulk_write(
                [ReplaceOne({"_id": a.agent_id}, a.to_document(), upsert=True) for a in agents],
                ordered=False,
            )
        except BulkWriteError as error:  # two concurrent upserts of a new id: retry once
            if any(e.get("code") != 11000 for e in error.details.get("writeErrors", [])):
                raise
            for agent in agents:
                await self.agents_.replace_one(
                    {"_id": agent.agent_id}, agent.to_document(), upsert=True
                )

    async def update_agents(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        if not updates:
            return
        operations = [
            UpdateOne({"_id": agent_id}, _agent_update(fields), upsert=True)
            for agent_id, fields in updates.items()
        ]
        try:
            await self.agents_.bulk_write(operations, ordered=False)
        except BulkWriteError as error:  # two concurrent upserts of a new id: retry once
            if any(e.get("code") != 11000 for e in error.details.get("writeErrors", [])):
                raise
            await self.agents_.bulk_write(operations, ordered=False)

    async def agent(self, agent_id: str) -> Agent | None:
        doc = await self.agents_.find_one({"_id": agent_id})
        return None if doc is None else Agent.from_document(doc)

    async def slot_held(self, slot_id: str) -> bool:
        return await self.slots.find_one({"_id": slot_id}, {"_id": 1}) is not None

    async def agents(self) -> list[Agent]:
        return [Agent.from_document(d) async for d in self.agents_.find({}).sort("_id", 1)]

    async def agents_page(self, after: str | None, limit: int) -> list[Agent]:
        query = {} if after is None else {"_id": {"$gt": after}}
        cursor = self.agents_.find(query).sort("_id", ASCENDING).limit(limit)
        return [Agent.from_document(d) async for d in cursor]

    async def remember_agent(self, customer_id: str, agent_id: str, at: datetime) -> None:
        await _upsert(self.customers, {"_id": customer_id, "agent_id": agent_id, "at": at})

    async def last_agent(self, customer_id: str) -> tuple[str, datetime] | None:
        doc = await self.customers.find_one({"_id": customer_id})
        return None if doc is None else (str(doc["agent_id"]), doc["at"])


def _agent_update(fields: Mapping[str, Any]) -> dict[str, Any]:
    update: dict[str, Any] = {"$set": dict(fields)}
    capacity = fields.get("capacity") or {}
    if capacity:
        update["$max"] = {f"ceiling.{channel}": n for channel, n in capacity.items()}
    return update


async def _upsert(collection: AsyncCollection[Document], document: dict[str, Any]) -> None:
    """Replace by ``_id``, creating the document if missing. Two concurrent upserts of a
    new ``_id`` can both try to insert; the loser's duplicate key means the document
    exists now, so it replaces it."""
    try:
        await collection.replace_one({"_id": document["_id"]}, document, upsert=True)
    except DuplicateKeyError:
        await collection.replace_one({"_id": document["_id"]}, document)


def _slot_document(slot: Slot) -> dict[str, Any]:
    return {
        "_id": slot.slot_id,
        "agent_id": slot.agent_id,
        "channel": slot.channel,
        "conversation_id": slot.conversation_id,
        "seq": slot.seq,
        "at": slot.at,
    }


def _head_document(state: RouteState) -> dict[str, Any]:
    return {
        "_id": state.conversation_id,
        **state.to_document(),
        "priority_rank": state.priority.rank,
    }
