"""The assignment store port and its two adapters (MongoDB, in-memory).

Exclusive steps are inserts of documents whose ``_id`` names the exclusive thing, the
one primitive that is atomic on MongoDB *and* FerretDB v1 (where a conditional update is
a read followed by a write, see services/router/README.md):

- a capacity slot ``<agent>|<channel>|<k>`` (k < capacity) or ``<agent>|*|<k>`` (a unit
  of total capacity): inserting it reserves it for one step of one conversation,
  deleting it releases it. A release names the conversation and step it releases for,
  so a late release (a replica that paused) never frees the slot of another
  conversation that reserved the same ``_id`` since;
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

from pymongo import ASCENDING, DeleteOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from switchboard_common.bulk import find_by_ids, insert_each, put_documents
from switchboard_common.contract import Priority
from switchboard_common.mongo import Document
from switchboard_router.assignment.model import (
    Agent,
    RouteState,
    RouteStatus,
    Slot,
    decision_id,
)

#: One reservation to give back: its slots, and the conversation and step it was for.
Release = tuple[Sequence[str], str, int]
#: Statements per bulk command of ``release_many``.
RELEASE_CHUNK = 1000


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

    async def reserve_many(self, groups: Sequence[Sequence[Slot]]) -> list[str | None]:
        """``reserve`` for many reservations at once (one bulk insert): per group, None
        when every slot of it was inserted, else the id of a slot already held (the
        group's other slots are released again). Groups must not share slots."""
        ...

    async def release(self, slot_ids: Sequence[str], conversation_id: str, seq: int) -> None:
        """Delete those of the slots that are reserved for ``conversation_id`` at step
        ``seq`` or earlier (idempotent; a slot reserved by anyone else is left alone)."""
        ...

    async def release_many(self, releases: Sequence[Release]) -> None:
        """``release`` for many reservations at once (one bulk command)."""
        ...

    async def held_slots(self, agent_ids: list[str] | None = None) -> list[Slot]:
        """The held slots (of these agents only, if named), by slot id (one read)."""
        ...

    async def claim(self, decision: Decision) -> bool:
        """Insert the decision; False if step ``seq`` of that conversation is taken."""
        ...

    async def claim_many(self, decisions: Sequence[Decision]) -> list[bool]:
        """``claim`` for many decisions at once (one bulk insert), in order: False for
        each step that was taken already. Decisions must name distinct steps."""
        ...

    async def decision(self, conversation_id: str, seq: int) -> Decision | None: ...

    async def decisions_at(self, steps: Mapping[str, int]) -> dict[str, Decision]:
        """Conversation id → its decision number ``steps[id]``, for those that exist
        (one read)."""
        ...

    async def head(self, conversation_id: str) -> RouteState | None:
        """The last state written to the head (may lag the decisions: probe forward)."""
        ...

    async def heads_of(self, conversation_ids: Sequence[str]) -> dict[str, RouteState]:
        """``head`` of many conversations (one read); absent ones are missing."""
        ...

    async def put_head(self, state: RouteState) -> None: ...

    async def put_heads(self, states: Sequence[RouteState]) -> None:
        """``put_head`` for many conversations (the last state of a conversation wins)."""
        ...

    async def routes(self, statuses: Sequence[RouteStatus]) -> list[RouteState]: ...

    async def waiting(self, channels: Sequence[str], limit: int) -> list[RouteState]:
        """The heads of conversations waiting on these channels in queue order (most
        urgent, then longest waiting), at most ``limit`` (one indexed read)."""
        ...

    async def queue_summary(self) -> list[tuple[str, str, int, datetime]]:
        """Per queue and priority with waiting conversations: (queue, priority, how
        many, the oldest ``waiting_since``): the queue gauges, the same on every replica
        (one aggregation, then one indexed read per non-empty queue and priority)."""
        ...

    async def load_summary(self, agent_ids: list[str] | None = None) -> dict[tuple[str, str], int]:
        """Slots held per (agent, channel) — of these agents only, if named — with
        total-capacity units under ``*`` (one aggregation): the load gauges, and the
        re-check after queueing."""
        ...

    async def save_agents(self, agents: Sequence[Agent]) -> None:
        """Replace agent documents by id (last write wins)."""
        ...

    async def update_agents(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Set fields of agent documents by id, creating missing ones. A ``capacity``
        field also raises ``ceiling`` per channel to at least that capacity."""
        ...

    async def agent(self, agent_id: str) -> Agent | None: ...

    async def agents_by_id(self, agent_ids: Sequence[str]) -> dict[str, Agent]:
        """The stored agents among ``agent_ids`` (one read)."""
        ...

    async def slot_held(self, slot_id: str) -> bool: ...

    async def held_among(self, slot_ids: Sequence[str]) -> set[str]:
        """The slots among ``slot_ids`` that are held (one read)."""
        ...

    async def agents(self) -> list[Agent]: ...

    async def agents_page(self, after: str | None, limit: int) -> list[Agent]: ...


# --------------------------------------------------------------------------- in memory


class InMemoryAssignmentStore:
    """The store in dicts, for unit tests of the engine (checked against the MongoDB
    adapter by ``test_assignment_store_contract.py``)."""

    def __init__(self) -> None:
        self.slots: dict[str, Slot] = {}
        self.decisions: dict[str, Decision] = {}
        self.heads: dict[str, RouteState] = {}
        self.agent_docs: dict[str, Agent] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def reserve(self, slots: Sequence[Slot]) -> str | None:
        for slot in slots:
            if slot.slot_id in self.slots:
                return slot.slot_id
        for slot in slots:
            self.slots[slot.slot_id] = slot
        return None

    async def reserve_many(self, groups: Sequence[Sequence[Slot]]) -> list[str | None]:
        return [await self.reserve(group) for group in groups]

    async def release(self, slot_ids: Sequence[str], conversation_id: str, seq: int) -> None:
        for slot_id in slot_ids:
            held = self.slots.get(slot_id)
            if held is not None and held.conversation_id == conversation_id and held.seq <= seq:
                del self.slots[slot_id]

    async def release_many(self, releases: Sequence[Release]) -> None:
        for slot_ids, conversation_id, seq in releases:
            await self.release(slot_ids, conversation_id, seq)

    async def held_slots(self, agent_ids: list[str] | None = None) -> list[Slot]:
        return sorted(
            (s for s in self.slots.values() if agent_ids is None or s.agent_id in agent_ids),
            key=lambda s: s.slot_id,
        )

    async def claim(self, decision: Decision) -> bool:
        if decision.decision_id in self.decisions:
            return False
        self.decisions[decision.decision_id] = decision
        return True

    async def claim_many(self, decisions: Sequence[Decision]) -> list[bool]:
        return [await self.claim(decision) for decision in decisions]

    async def decision(self, conversation_id: str, seq: int) -> Decision | None:
        return self.decisions.get(decision_id(conversation_id, seq))

    async def decisions_at(self, steps: Mapping[str, int]) -> dict[str, Decision]:
        found = {cid: self.decisions.get(decision_id(cid, seq)) for cid, seq in steps.items()}
        return {cid: d for cid, d in found.items() if d is not None}

    async def head(self, conversation_id: str) -> RouteState | None:
        return self.heads.get(conversation_id)

    async def heads_of(self, conversation_ids: Sequence[str]) -> dict[str, RouteState]:
        return {c: self.heads[c] for c in conversation_ids if c in self.heads}

    async def put_head(self, state: RouteState) -> None:
        self.heads[state.conversation_id] = state

    async def put_heads(self, states: Sequence[RouteState]) -> None:
        for state in states:
            self.heads[state.conversation_id] = state

    async def routes(self, statuses: Sequence[RouteStatus]) -> list[RouteState]:
        return sorted(
            (s for s in self.heads.values() if s.status in statuses),
            key=lambda s: s.conversation_id,
        )

    async def waiting(self, channels: Sequence[str], limit: int) -> list[RouteState]:
        found = [
            s
            for s in self.heads.values()
            if s.status == RouteStatus.WAITING and str(s.channel) in channels
        ]
        found.sort(key=lambda s: (s.priority.rank, s.waiting_since, s.conversation_id))
        return found[:limit]

    async def queue_summary(self) -> list[tuple[str, str, int, datetime]]:
        groups: dict[tuple[str, str], tuple[int, datetime]] = {}
        for s in self.heads.values():
            if s.status == RouteStatus.WAITING:
                n, oldest = groups.get((s.queue, str(s.priority)), (0, s.waiting_since))
                groups[(s.queue, str(s.priority))] = (n + 1, min(oldest, s.waiting_since))
        return [(q, p, n, oldest) for (q, p), (n, oldest) in sorted(groups.items())]

    async def load_summary(self, agent_ids: list[str] | None = None) -> dict[tuple[str, str], int]:
        load: dict[tuple[str, str], int] = {}
        for slot in self.slots.values():
            if agent_ids is None or slot.agent_id in agent_ids:
                key = (slot.agent_id, slot.channel)
                load[key] = load.get(key, 0) + 1
        return load

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

    async def agents_by_id(self, agent_ids: Sequence[str]) -> dict[str, Agent]:
        return {a: self.agent_docs[a] for a in agent_ids if a in self.agent_docs}

    async def slot_held(self, slot_id: str) -> bool:
        return slot_id in self.slots

    async def held_among(self, slot_ids: Sequence[str]) -> set[str]:
        return {s for s in slot_ids if s in self.slots}

    async def agents(self) -> list[Agent]:
        return [self.agent_docs[k] for k in sorted(self.agent_docs)]

    async def agents_page(self, after: str | None, limit: int) -> list[Agent]:
        ids = sorted(k for k in self.agent_docs if after is None or k > after)
        return [self.agent_docs[k] for k in ids[:limit]]


# --------------------------------------------------------------------------- MongoDB


class MongoAssignmentStore:
    """The store on MongoDB / FerretDB. Collections (all ``assignment_*``):

    - ``assignment_slots``      ``_id`` = slot id; held capacity (index: agent_id)
    - ``assignment_decisions``  ``_id`` = ``<conversation_id>:<seq>``; the decision log
    - ``assignment_routes``     ``_id`` = conversation id; latest routing state (index:
      status, priority_rank, waiting_since — for the queue listing)
    - ``assignment_agents``     ``_id`` = agent id; profile and presence
    """

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.slots = db["assignment_slots"]
        self.decisions = db["assignment_decisions"]
        self.routes_ = db["assignment_routes"]
        self.agents_ = db["assignment_agents"]

    async def ensure_indexes(self) -> None:
        await self.slots.create_index([("agent_id", ASCENDING)], name="agent")
        await self.routes_.create_index(
            [("status", ASCENDING), ("priority_rank", ASCENDING), ("waiting_since", ASCENDING)],
            name="queue_order",
        )

    async def reserve(self, slots: Sequence[Slot]) -> str | None:
        inserted: list[Slot] = []
        for slot in slots:
            try:
                await self.slots.insert_one(_slot_document(slot))
            except DuplicateKeyError:
                await self.release_many([([m.slot_id], m.conversation_id, m.seq) for m in inserted])
                return slot.slot_id
            inserted.append(slot)
        return None

    async def reserve_many(self, groups: Sequence[Sequence[Slot]]) -> list[str | None]:
        documents: list[dict[str, Any]] = []
        owner: list[int] = []
        for number, group in enumerate(groups):
            documents += [_slot_document(slot) for slot in group]
            owner += [number] * len(group)
        taken = await insert_each(self.slots, documents)
        conflicts: list[str | None] = [None] * len(groups)
        for index in sorted(taken):
            if conflicts[owner[index]] is None:
                conflicts[owner[index]] = documents[index]["_id"]
        # A group that lost any slot gives back the ones it did insert.
        await self.release_many(
            [
                ([d["_id"]], d["conversation_id"], d["seq"])
                for index, d in enumerate(documents)
                if conflicts[owner[index]] is not None and index not in taken
            ]
        )
        return conflicts

    async def release(self, slot_ids: Sequence[str], conversation_id: str, seq: int) -> None:
        await self.release_many([(slot_ids, conversation_id, seq)])

    async def release_many(self, releases: Sequence[Release]) -> None:
        # One unordered bulk command; each statement filters by ``_id`` (indexed on both
        # servers) and names its reservation. Atomic per document on MongoDB. FerretDB
        # v1 evaluates the filter and deletes by ``_id`` in two steps: a re-reservation
        # of the same ``_id`` between them is the one window left, and needs another
        # release of the same reservation.
        operations = [
            DeleteOne({"_id": slot_id, "conversation_id": conversation_id, "seq": {"$lte": seq}})
            for slot_ids, conversation_id, seq in releases
            for slot_id in dict.fromkeys(slot_ids)
        ]
        for start in range(0, len(operations), RELEASE_CHUNK):
            await self.slots.bulk_write(operations[start : start + RELEASE_CHUNK], ordered=False)

    async def held_slots(self, agent_ids: list[str] | None = None) -> list[Slot]:
        query = {} if agent_ids is None else {"agent_id": {"$in": list(agent_ids)}}
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
            await self.decisions.insert_one(_decision_document(decision))
        except DuplicateKeyError:
            return False
        return True

    async def claim_many(self, decisions: Sequence[Decision]) -> list[bool]:
        taken = await insert_each(self.decisions, [_decision_document(d) for d in decisions])
        return [index not in taken for index in range(len(decisions))]

    async def decision(self, conversation_id: str, seq: int) -> Decision | None:
        doc = await self.decisions.find_one({"_id": decision_id(conversation_id, seq)})
        return None if doc is None else _decision(doc)

    async def decisions_at(self, steps: Mapping[str, int]) -> dict[str, Decision]:
        wanted = {decision_id(cid, seq): cid for cid, seq in steps.items()}
        found = await find_by_ids(self.decisions, wanted)
        return {wanted[key]: _decision(doc) for key, doc in found.items()}

    async def head(self, conversation_id: str) -> RouteState | None:
        doc = await self.routes_.find_one({"_id": conversation_id})
        return None if doc is None else RouteState.from_document(doc)

    async def heads_of(self, conversation_ids: Sequence[str]) -> dict[str, RouteState]:
        found = await find_by_ids(self.routes_, conversation_ids)
        return {key: RouteState.from_document(doc) for key, doc in found.items()}

    async def put_head(self, state: RouteState) -> None:
        await _upsert(self.routes_, _head_document(state))

    async def put_heads(self, states: Sequence[RouteState]) -> None:
        # Most heads of a batch are new conversations: inserted, only the rest replaced.
        await put_documents(self.routes_, [_head_document(s) for s in states])

    async def routes(self, statuses: Sequence[RouteStatus]) -> list[RouteState]:
        query = {"status": {"$in": [str(s) for s in statuses]}}
        return [
            RouteState.from_document(d)
            async for d in self.routes_.find(query).sort("_id", ASCENDING)
        ]

    async def waiting(self, channels: Sequence[str], limit: int) -> list[RouteState]:
        query = {"status": str(RouteStatus.WAITING), "channel": {"$in": list(channels)}}
        order = [("priority_rank", ASCENDING), ("waiting_since", ASCENDING), ("_id", ASCENDING)]
        cursor = self.routes_.find(query).sort(order).limit(limit)
        return [RouteState.from_document(d) async for d in cursor]

    async def queue_summary(self) -> list[tuple[str, str, int, datetime]]:
        waiting = {"status": str(RouteStatus.WAITING)}
        # FerretDB v1 has $sum but neither $min nor $first in $group: the oldest of each
        # group is an indexed read (status, priority_rank, waiting_since) instead.
        counted = await self.routes_.aggregate(
            [
                {"$match": waiting},
                {"$group": {"_id": {"queue": "$queue", "priority": "$priority"}, "n": {"$sum": 1}}},
            ]
        )
        out: list[tuple[str, str, int, datetime]] = []
        async for group in counted:
            queue, priority = group["_id"]["queue"], group["_id"]["priority"]
            oldest = await self.routes_.find_one(
                {**waiting, "priority_rank": Priority(priority).rank, "queue": queue},
                {"_id": 0, "waiting_since": 1},
                sort=[("waiting_since", ASCENDING)],
            )
            if oldest is not None:  # None: the group emptied since it was counted
                out.append((queue, priority, int(group["n"]), oldest["waiting_since"]))
        return sorted(out)

    async def load_summary(self, agent_ids: list[str] | None = None) -> dict[tuple[str, str], int]:
        match = {} if agent_ids is None else {"agent_id": {"$in": agent_ids}}
        grouped = await self.slots.aggregate(
            [
                {"$match": match},
                {
                    "$group": {
                        "_id": {"agent": "$agent_id", "channel": "$channel"},
                        "n": {"$sum": 1},
                    }
                },
            ]
        )
        return {(g["_id"]["agent"], g["_id"]["channel"]): int(g["n"]) async for g in grouped}

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

    async def agents_by_id(self, agent_ids: Sequence[str]) -> dict[str, Agent]:
        found = await find_by_ids(self.agents_, agent_ids)
        return {key: Agent.from_document(doc) for key, doc in found.items()}

    async def slot_held(self, slot_id: str) -> bool:
        return await self.slots.find_one({"_id": slot_id}, {"_id": 1}) is not None

    async def held_among(self, slot_ids: Sequence[str]) -> set[str]:
        return set(await find_by_ids(self.slots, slot_ids, {"_id": 1}))

    async def agents(self) -> list[Agent]:
        return [Agent.from_document(d) async for d in self.agents_.find({}).sort("_id", 1)]

    async def agents_page(self, after: str | None, limit: int) -> list[Agent]:
        query = {} if after is None else {"_id": {"$gt": after}}
        cursor = self.agents_.find(query).sort("_id", ASCENDING).limit(limit)
        return [Agent.from_document(d) async for d in cursor]


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


def _decision_document(decision: Decision) -> dict[str, Any]:
    return {
        "_id": decision.decision_id,
        "state": decision.state.to_document(),
        "kind": decision.kind,
        "reason": decision.reason,
        "token": decision.token,
    }


def _decision(doc: Document) -> Decision:
    return Decision(
        state=RouteState.from_document(doc["state"]),
        kind=doc.get("kind"),
        reason=dict(doc.get("reason") or {}),
        token=str(doc.get("token") or ""),
    )


def _head_document(state: RouteState) -> dict[str, Any]:
    return {
        "_id": state.conversation_id,
        **state.to_document(),
        "priority_rank": state.priority.rank,
    }
