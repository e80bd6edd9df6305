"""Ports of the SLA monitor's state, and their in-memory implementations.

Two stores, both keyed by natural ids in ``_id`` (the FerretDB rules):

- ``ConversationStore``: per conversation, its facts (added idempotently by key) and the
  clocks derived from them, with ``next_check`` (when an emission becomes due),
  ``active`` (an open clock exists) and ``due`` (metric → due time of each clock running
  now: the read model the router shows agents). Written by the consumer that owns the
  conversation.
- ``EmissionStore``: one claim per at-risk/breach emission, ``_id`` = the emission id.
  ``claim`` is an insert: of several replicas claiming the same id, exactly one wins
  (the only atomic primitive on both MongoDB and FerretDB v1).

The MongoDB adapters are in ``mongo_store``; one contract test suite runs against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from switchboard_sla_monitor.clocks import ClockState, due_times
from switchboard_sla_monitor.facts import Fact


@dataclass(frozen=True)
class ConversationRecord:
    """What is stored about one conversation."""

    conversation_id: str
    #: Fact key → fact.
    facts: dict[str, Fact] = field(default_factory=dict)
    clocks: tuple[ClockState, ...] = ()
    next_check: datetime | None = None
    active: bool = False
    #: First and last instants of its facts: what KPI reports select on.
    first_at: datetime | None = None
    last_at: datetime | None = None
    #: Writes so far: the evaluator's conditional writes check it (see ``DoneUpdate``).
    revision: int = 0
    #: The stored ``due`` read model (metric → due time of the clocks running), None
    #: when the record was written before it existed.
    due: dict[str, datetime] | None = None


@dataclass(frozen=True)
class ConversationUpdate:
    """New facts (merged by key, idempotent) and the freshly derived clocks."""

    conversation_id: str
    new_facts: dict[str, Fact]
    clocks: tuple[ClockState, ...]
    next_check: datetime | None
    active: bool
    #: No record existed when this update was computed (the store may insert it; if
    #: another writer created it meanwhile, the update is applied to that one instead).
    new: bool = False
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def due(self) -> dict[str, datetime]:
        """Metric → due time of the clocks running now (stored for the router)."""
        return due_times(self.clocks)


@dataclass(frozen=True)
class DoneUpdate:
    """Facts the evaluator adds (a decision is recorded) and the ``next_check`` they give,
    applied only while the record is still at ``expected_revision``: if the consumer wrote
    meanwhile, its newer clocks stay and the conversation comes due again."""

    conversation_id: str
    new_facts: dict[str, Fact]
    next_check: datetime | None
    expected_revision: int


@dataclass(frozen=True)
class ClaimRecord:
    """A claimed emission: the event to publish, and whether its publish completed."""

    id: str
    conversation_id: str
    kind: str
    #: The SLA event payload as JSON-compatible data (re-publishes send exactly this).
    payload: dict[str, Any]
    claimed_at: datetime
    claimed_by: str
    published_at: datetime | None = None


class ConversationStore(Protocol):
    async def ensure_indexes(self) -> None:
        """Create what the queries need (idempotent)."""

    async def load(self, conversation_ids: Sequence[str]) -> dict[str, ConversationRecord]:
        """The stored records among these ids (absent ids are left out)."""

    async def save(self, updates: Sequence[ConversationUpdate]) -> None:
        """Upsert: add the new facts by key and replace the derived fields. Idempotent."""

    async def due(self, now: datetime, limit: int) -> list[ConversationRecord]:
        """Up to ``limit`` records with ``next_check <= now``, earliest first."""

    async def record_done(self, updates: Sequence[DoneUpdate]) -> None:
        """Add facts and move ``next_check``, each only if the record's ``revision`` is
        the expected one (clocks and other fields untouched). One round trip."""

    async def marker(self, name: str) -> str | None:
        """A named value the monitor keeps about its state (e.g. the policy fingerprint)."""

    async def set_marker(self, name: str, value: str) -> None:
        """Store a named value (idempotent)."""

    def live(
        self, *, with_facts: bool = False, open_only: bool = False
    ) -> AsyncIterator[ConversationRecord]:
        """Every record with an open clock or a pending emission (``next_check`` set:
        also resolved conversations awaiting their first-contact decision).

        Without ``with_facts`` only the derived fields are read (facts are left empty).
        With ``open_only`` only records with an open clock (what the gauges count).
        """

    async def in_period(
        self, start: datetime, end: datetime, limit: int
    ) -> list[ConversationRecord]:
        """Up to ``limit`` records (with facts) that may hold a figure of [start, end):
        a fact before ``end`` and one at or after ``start``, or an open clock. One query."""


class EmissionStore(Protocol):
    async def ensure_indexes(self) -> None:
        """Create what the queries need (idempotent)."""

    async def claim(self, claims: Sequence[ClaimRecord]) -> set[str]:
        """Insert the claims; return the ids this call inserted (it won them)."""

    async def get(self, ids: Sequence[str]) -> dict[str, ClaimRecord]:
        """The stored claims among these ids."""

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        """Record that these claims' events were acknowledged by Kafka."""


class InMemoryConversationStore:
    """``ConversationStore`` in a dict (unit tests of the core)."""

    def __init__(self) -> None:
        self.records: dict[str, ConversationRecord] = {}
        self.markers: dict[str, str] = {}

    async def marker(self, name: str) -> str | None:
        return self.markers.get(name)

    async def set_marker(self, name: str, value: str) -> None:
        self.markers[name] = value

    async def ensure_indexes(self) -> None:
        return None

    async def load(self, conversation_ids: Sequence[str]) -> dict[str, ConversationRecord]:
        return {i: self.records[i] for i in conversation_ids if i in self.records}

    async def save(self, updates: Sequence[ConversationUpdate]) -> None:
        for u in updates:
            old = self.records.get(u.conversation_id, ConversationRecord(u.conversation_id))
            self.records[u.conversation_id] = replace(
                old,
                facts={**old.facts, **u.new_facts},
                clocks=u.clocks,
                next_check=u.next_check,
                active=u.active,
                first_at=u.first_at,
                last_at=u.last_at,
                revision=old.revision + 1,
                due=u.due,
            )

    async def record_done(self, updates: Sequence[DoneUpdate]) -> None:
        for u in updates:
            old = self.records.get(u.conversation_id)
            if old is not None and old.revision == u.expected_revision:
                self.records[u.conversation_id] = replace(
                    old,
                    facts={**old.facts, **u.new_facts},
                    next_check=u.next_check,
                    revision=old.revision + 1,
                )

    async def due(self, now: datetime, limit: int) -> list[ConversationRecord]:
        due = [r for r in self.records.values() if r.next_check and r.next_check <= now]
        due.sort(key=lambda r: (r.next_check, r.conversation_id))
        return due[:limit]

    async def live(
        self, *, with_facts: bool = False, open_only: bool = False
    ) -> AsyncIterator[ConversationRecord]:
        for record in list(self.records.values()):
            if record.active or (record.next_check is not None and not open_only):
                yield record if with_facts else replace(record, facts={})

    async def in_period(
        self, start: datetime, end: datetime, limit: int
    ) -> list[ConversationRecord]:
        found = [
            r
            for r in sorted(self.records.values(), key=lambda r: r.conversation_id)
            if r.first_at is not None
            and r.first_at < end
            and (r.active or (r.last_at is not None and r.last_at >= start))
        ]
        return found[:limit]


class InMemoryEmissionStore:
    """``EmissionStore`` in a dict; ``claim`` is first-writer-wins like a unique insert."""

    def __init__(self) -> None:
        self.claims: dict[str, ClaimRecord] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def claim(self, claims: Sequence[ClaimRecord]) -> set[str]:
        won = set()
        for c in claims:
            if c.id not in self.claims:
                self.claims[c.id] = c
                won.add(c.id)
        return won

    async def get(self, ids: Sequence[str]) -> dict[str, ClaimRecord]:
        return {i: self.claims[i] for i in ids if i in self.claims}

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        for i in ids:
            if i in self.claims:
                self.claims[i] = replace(self.claims[i], published_at=at)
