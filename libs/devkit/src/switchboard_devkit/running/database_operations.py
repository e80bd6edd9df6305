"""Counting a process's database work with PyMongo command monitoring (``make bench``).

A round trip can carry one document or five hundred, so the count that matters is the
documents each command inserts, updates, deletes or reads — the statements inside a bulk
command included — beside the number of commands. ``documents_of`` is the rule, a pure
function of one recorded command; ``DatabaseOperations`` is the listener that applies it.
Register it before the client is built (``pymongo.monitoring.register``): clients copy
the global listeners when they are created.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pymongo import monitoring

#: Where a benchmark launcher serves ``DatabaseOperations.snapshot`` on the service's port.
HTTP_PATH = "/bench/database-operations"
#: The command named, and the field holding its statements (writes) or its batch (reads).
WRITE_STATEMENTS = {
    "insert": "documents",
    "update": "updates",
    "delete": "deletes",
    "bulkWrite": "ops",
}
READ_BATCHES = {"find": "firstBatch", "aggregate": "firstBatch", "getMore": "nextBatch"}
#: Commands that touch one document, whatever they return.
SINGLE_DOCUMENT = {"findAndModify"}
#: Everything that reads or writes documents; the rest (ping, createIndexes,
#: endSessions, ...) is housekeeping, counted apart.
DATA_COMMANDS = frozenset({*WRITE_STATEMENTS, *READ_BATCHES, *SINGLE_DOCUMENT, "count", "distinct"})


def documents_of(name: str, command: Mapping[str, Any], reply: Mapping[str, Any] | None) -> int:
    """Documents one command inserted, updated, deleted or read.

    Writes count their statements (an ``update`` of 200 statements is 200, whether or not
    each matched); reads count the documents returned in this round trip (a cursor's first
    or next batch); ``findAndModify`` is one; ``count`` and ``distinct`` count what they
    return. ``reply`` is None for a command that failed: its writes were still attempted,
    nothing was read.
    """
    if name in WRITE_STATEMENTS:
        return len(command.get(WRITE_STATEMENTS[name]) or ())
    if name in SINGLE_DOCUMENT:
        return 1
    if reply is None:
        return 0
    if name in READ_BATCHES:
        cursor = reply.get("cursor") or {}
        return len(cursor.get(READ_BATCHES[name]) or ())
    if name == "count":
        return 1
    if name == "distinct":
        return len(reply.get("values") or ())
    return 0


class DatabaseOperations(monitoring.CommandListener):
    """Running totals of commands and documents, by command name, for one process."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()
        self.documents: Counter[str] = Counter()
        self.housekeeping: Counter[str] = Counter()
        #: Documents by ``"<command> <collection>"``: where the work goes.
        self.by_collection: Counter[str] = Counter()
        # The command document is in the started event, the reply in the succeeded one.
        self._pending: dict[tuple[Any, int], Mapping[str, Any]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in DATA_COMMANDS:
            self._pending[(event.connection_id, event.request_id)] = event.command

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._finish(event.command_name, (event.connection_id, event.request_id), event.reply)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finish(event.command_name, (event.connection_id, event.request_id), None)

    def _finish(self, name: str, key: tuple[Any, int], reply: Mapping[str, Any] | None) -> None:
        command = self._pending.pop(key, None)
        if command is None:
            self.housekeeping[name] += 1
            return
        self.commands[name] += 1
        documents = documents_of(name, command, reply)
        self.documents[name] += documents
        self.by_collection[f"{name} {collection_of(name, command)}"] += documents

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The totals so far (subtract two snapshots to get one phase's work)."""
        return {
            "commands": dict(self.commands),
            "documents": dict(self.documents),
            "housekeeping": dict(self.housekeeping),
            "by_collection": dict(self.by_collection),
        }


def collection_of(name: str, command: Mapping[str, Any]) -> str:
    """The collection a data command addresses (its first field names it; a ``getMore``
    carries it apart)."""
    value = command.get("collection") if name == "getMore" else command.get(name)
    return value if isinstance(value, str) else "?"
