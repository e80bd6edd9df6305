"""The bare essential pipeline: the least work any router must do, as a baseline.

One process consumes ``support.inbound.v1``, writes each batch's messages to the
database with one ``insert_many`` and produces one record per message to
``support.assignments.v1``, committing after the acks: the passthrough loop
(``passthrough.py``) with that one write per batch added. The pipeline benchmarks run
it beside the router in the same run; the router's targets are ratios against it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from bench.passthrough import Store, arguments, serve
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from switchboard_common.mongo import Document

DUPLICATE_KEY = 11000


def inserting(collection: AsyncCollection[Document]) -> Store:
    """One unordered ``insert_many`` per batch, a message per document (``_id`` its id)."""

    async def store(records: Sequence[Any]) -> None:
        documents = []
        for record in records:
            body = json.loads(record.value)
            documents.append({"_id": body["message_id"], **body})
        try:
            await collection.insert_many(documents, ordered=False)
        except BulkWriteError as error:  # a redelivered batch: those are already there
            if any(e.get("code") != DUPLICATE_KEY for e in error.details["writeErrors"]):
                raise

    return store


async def main(bootstrap: str, prefix: str, mongodb_url: str, database: str) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        store = inserting(client[database]["messages"])
        await serve("essential", bootstrap, prefix, store=store)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = arguments("the bare essential pipeline as its own process")
    parser.add_argument("--mongodb-url", required=True)
    parser.add_argument("--database", required=True)
    options = parser.parse_args()
    asyncio.run(main(options.bootstrap, options.prefix, options.mongodb_url, options.database))
