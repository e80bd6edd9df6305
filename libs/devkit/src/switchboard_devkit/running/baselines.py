"""What the benchmarks' bare baselines share: the one write a consumer cannot skip."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from switchboard_common.mongo import Document

DUPLICATE_KEY = 11000


async def insert_records(collection: AsyncCollection[Document], records: Sequence[Any]) -> None:
    """Store a consumed batch with one unordered ``insert_many``: each record's JSON value
    as a document whose ``_id`` is its ``message_id``. A redelivered batch is already
    there: duplicate keys are not an error, anything else is."""
    documents = []
    for record in records:
        body = json.loads(record.value)
        documents.append({"_id": body["message_id"], **body})
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        if any(e.get("code") != DUPLICATE_KEY for e in error.details["writeErrors"]):
            raise
