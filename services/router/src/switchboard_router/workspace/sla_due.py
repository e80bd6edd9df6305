"""SLA due times, as the SLA monitor publishes them: a read-only port.

The SLA monitor owns SLA clocks. Every write of a conversation's clocks sets
``sla_conversations.due`` (``_id`` = conversation id) to the due times of the clocks
running then, by metric (``first_response``, ``next_response``, ``resolution``); a paused
or stopped clock has none (services/sla-monitor/README.md, "Published read model"). The
router only reads that one field, by ``_id`` (one ``$in`` per page), never the facts or
clocks behind it, so the monitor may change those freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.bulk import find_by_ids
from switchboard_common.mongo import Document

#: The SLA monitor's collection (``switchboard_sla_monitor.mongo_store.CONVERSATIONS``).
SLA_CONVERSATIONS = "sla_conversations"
#: The metrics the monitor keeps clocks for; anything else in the field is ignored.
METRICS = ("first_response", "next_response", "resolution")

#: Conversation id → metric → when it is due.
DueTimes = dict[str, dict[str, datetime]]


class SlaDueTimes(Protocol):
    async def due_times(self, conversation_ids: Sequence[str]) -> DueTimes:
        """The due times of the conversations' running SLA clocks (one read); a
        conversation with none, or unknown to the monitor, is missing."""
        ...


def _due(stored: object) -> dict[str, datetime]:
    if not isinstance(stored, Mapping):
        return {}
    return {m: stored[m] for m in METRICS if isinstance(stored.get(m), datetime)}


class MongoSlaDueTimes:
    """``SlaDueTimes`` on the SLA monitor's collection (same database)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[SLA_CONVERSATIONS]

    async def due_times(self, conversation_ids: Sequence[str]) -> DueTimes:
        if not conversation_ids:
            return {}
        found = await find_by_ids(self.collection, conversation_ids, {"due": 1})
        due = {str(key): _due(document.get("due")) for key, document in found.items()}
        return {key: value for key, value in due.items() if value}


class InMemorySlaDueTimes:
    """``SlaDueTimes`` in a dict of stored ``due`` fields (unit tests)."""

    def __init__(self, due: Mapping[str, object] | None = None) -> None:
        #: Conversation id → its record's ``due`` field, as the monitor stored it.
        self.due: dict[str, object] = dict(due or {})

    async def due_times(self, conversation_ids: Sequence[str]) -> DueTimes:
        found = {c: _due(self.due[c]) for c in conversation_ids if c in self.due}
        return {key: value for key, value in found.items() if value}
