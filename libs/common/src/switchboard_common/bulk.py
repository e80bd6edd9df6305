"""Batch reads and writes by ``_id``, the fast path on MongoDB *and* FerretDB v1.

The project's FerretDB build serves ``{_id: {$in: [...]}}`` (strings, up to 10,000 ids)
from the ``_id`` index, so a batch reads its documents in one round trip instead of one
per document. Writes: an ``insert_many(ordered=False)`` is one SQLite transaction for the
whole batch, while every update or replace statement is a read-modify-write with its own
transaction (measured here: about 0.05 ms per inserted document against about 1 ms per
updated one, bulk or not). So documents that are most likely new are inserted, and only
the ones that turn out to exist are replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from switchboard_common.mongo import Document

DUPLICATE_KEY = 11000
#: Ids per ``$in`` query (the FerretDB build pushes down at most 10,000).
IN_CHUNK = 1000


def _chunks(ids: Sequence[Any], size: int = IN_CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


async def find_by_ids(
    collection: AsyncCollection[Document],
    ids: Iterable[Any],
    projection: Document | None = None,
) -> dict[Any, Document]:
    """The documents whose ``_id`` is among ``ids`` (missing ones are absent), one
    indexed ``$in`` query per thousand ids."""
    keys = list(dict.fromkeys(ids))
    found: dict[Any, Document] = {}
    for chunk in _chunks(keys):
        query = {"_id": chunk[0]} if len(chunk) == 1 else {"_id": {"$in": chunk}}
        async for document in collection.find(query, projection):
            found[document["_id"]] = document
    return found


def duplicate_indexes(error: BulkWriteError) -> set[int]:
    """Indexes of the documents an unordered insert refused as duplicates; raises the
    error again when any other write failed."""
    errors = error.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise error
    return {int(e["index"]) for e in errors}


async def insert_each(
    collection: AsyncCollection[Document], documents: Sequence[Document]
) -> set[int]:
    """Insert every document that does not exist yet (one unordered ``insert_many``);
    return the indexes of those whose ``_id`` was taken. Each insert is atomic on its own:
    this is the exclusive step (slots, claims) of a whole batch at once."""
    if not documents:
        return set()
    try:
        await collection.insert_many(list(documents), ordered=False)
    except BulkWriteError as error:
        return duplicate_indexes(error)
    return set()


async def insert_new(
    collection: AsyncCollection[Document], documents: Sequence[Document]
) -> set[Any]:
    """Insert documents, ignoring those whose ``_id`` exists; return the existing ids.

    Any other write error is raised.
    """
    taken = await insert_each(collection, documents)
    return {documents[i]["_id"] for i in taken}


async def put_documents(
    collection: AsyncCollection[Document], documents: Sequence[Document]
) -> None:
    """Store whole documents by ``_id``, last write wins (like ``replace_one(upsert=
    True)`` each): insert them all, then replace the ones that existed already. The
    last document of an ``_id`` given twice wins."""
    latest = list({d["_id"]: d for d in documents}.values())
    taken = await insert_each(collection, latest)
    if not taken:
        return
    existing = [latest[i] for i in sorted(taken)]
    try:
        await collection.bulk_write(
            [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in existing], ordered=False
        )
    except BulkWriteError as error:
        # Two writers upserting one new _id at once: the loser's insert met the winner's
        # document, which exists now, so a plain replace is what the loser meant.
        again = duplicate_indexes(error)
        await collection.bulk_write(
            [ReplaceOne({"_id": existing[i]["_id"]}, existing[i]) for i in sorted(again)],
            ordered=False,
        )
