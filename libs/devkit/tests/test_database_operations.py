"""Counting a process's database work: documents per command, and the listener's totals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandStartedEvent, CommandSucceededEvent

from switchboard_common.mongo import Document
from switchboard_devkit.running.database_operations import DatabaseOperations, documents_of
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import unique

CONNECTION = ("127.0.0.1", 27017)


def docs(n: int) -> list[dict[str, Any]]:
    return [{"_id": i} for i in range(n)]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "command", "reply", "expected"),
    [
        ("insert", {"insert": "c", "documents": docs(3)}, {"ok": 1, "n": 3}, 3),
        # Every statement of a bulk update counts, matched or not.
        ("update", {"update": "c", "updates": [{"q": {}, "u": {}}] * 4}, {"n": 1}, 4),
        ("delete", {"delete": "c", "deletes": [{"q": {}, "limit": 1}] * 2}, {"n": 0}, 2),
        # An exclusive insert that hit a duplicate key was still a write sent.
        ("insert", {"insert": "c", "documents": docs(2)}, {"n": 1, "writeErrors": [{}]}, 2),
        ("find", {"find": "c"}, {"cursor": {"id": 0, "firstBatch": docs(5)}}, 5),
        ("find", {"find": "c"}, {"cursor": {"id": 0, "firstBatch": []}}, 0),
        ("aggregate", {"aggregate": "c"}, {"cursor": {"id": 0, "firstBatch": docs(2)}}, 2),
        ("getMore", {"getMore": 7}, {"cursor": {"id": 0, "nextBatch": docs(6)}}, 6),
        ("findAndModify", {"findAndModify": "c"}, {"value": None}, 1),
        ("distinct", {"distinct": "c"}, {"values": ["a", "b"]}, 2),
        ("count", {"count": "c"}, {"n": 40}, 1),
        ("ping", {"ping": 1}, {"ok": 1}, 0),
        # A failed command: its writes were attempted, nothing was read.
        ("insert", {"insert": "c", "documents": docs(3)}, None, 3),
        ("find", {"find": "c"}, None, 0),
    ],
)
def test_documents_of_counts_statements_written_and_documents_returned(
    name: str, command: dict[str, Any], reply: dict[str, Any] | None, expected: int
) -> None:
    assert documents_of(name, command, reply) == expected


def started(command: dict[str, Any], request_id: int) -> CommandStartedEvent:
    return CommandStartedEvent(command, "db", request_id, CONNECTION, request_id)


def succeeded(name: str, reply: dict[str, Any], request_id: int) -> CommandSucceededEvent:
    return CommandSucceededEvent(timedelta(0), reply, name, request_id, CONNECTION, request_id)


@pytest.mark.unit
def test_listener_pairs_each_reply_with_its_command_and_keeps_housekeeping_apart() -> None:
    operations = DatabaseOperations()
    # Two commands in flight at once: each reply is paired by its request id.
    operations.started(started({"insert": "c", "documents": docs(3)}, 1))
    operations.started(started({"find": "c"}, 2))
    operations.succeeded(succeeded("find", {"cursor": {"id": 5, "firstBatch": docs(2)}}, 2))
    operations.started(started({"getMore": 5, "collection": "c"}, 3))
    operations.succeeded(succeeded("getMore", {"cursor": {"id": 0, "nextBatch": docs(1)}}, 3))
    operations.succeeded(succeeded("insert", {"n": 3}, 1))
    operations.started(started({"update": "c", "updates": [{}, {}]}, 4))
    operations.failed(CommandFailedEvent(timedelta(0), {"ok": 0}, "update", 4, CONNECTION, 4))
    operations.started(started({"ping": 1}, 5))
    operations.succeeded(succeeded("ping", {"ok": 1}, 5))

    assert operations.snapshot() == {
        "commands": {"insert": 1, "find": 1, "getMore": 1, "update": 1},
        "documents": {"insert": 3, "find": 2, "getMore": 1, "update": 2},
        "housekeeping": {"ping": 1},
        # Where the documents went: a getMore names its collection apart.
        "by_collection": {"insert c": 3, "find c": 2, "getMore c": 1, "update c": 2},
    }


@pytest.mark.integration
async def test_listener_counts_what_a_real_client_sends_and_receives(
    infra: Infra, database_name: str
) -> None:
    operations = DatabaseOperations()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        infra.mongodb_url, event_listeners=[operations]
    )
    try:
        collection = client[database_name][unique("c")]
        await collection.insert_many(docs(7))
        await collection.update_many({"_id": {"$lt": 3}}, {"$set": {"seen": True}})
        found = await collection.find({}, batch_size=4).to_list()
        await collection.delete_one({"_id": 0})
    finally:
        await client.close()

    totals = operations.snapshot()
    assert len(found) == 7
    assert totals["documents"]["insert"] == 7
    assert totals["documents"]["update"] == 1  # one statement, three documents matched
    assert totals["documents"]["delete"] == 1
    # A first batch of four, then the rest by getMore: seven read in all.
    assert totals["documents"]["find"] + totals["documents"].get("getMore", 0) == 7
    by_collection = totals["by_collection"]
    name = collection.name
    assert by_collection[f"insert {name}"] == 7
    assert by_collection[f"find {name}"] + by_collection.get(f"getMore {name}", 0) == 7
