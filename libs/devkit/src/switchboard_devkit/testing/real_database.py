"""The real MongoDB-wire server for a store's contract suite: one database unique to the
test (dropped by the ``database_name`` fixture afterwards)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.mongo import Document

#: A contract suite's two stores: in memory (a unit test) and on the real server.
STORES = [
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("ferretdb", marks=pytest.mark.integration),
]


@contextlib.asynccontextmanager
async def real_database(request: pytest.FixtureRequest) -> AsyncIterator[AsyncDatabase[Document]]:
    """The test's own database, from a fixture parametrised over in-memory and real
    stores (it asks only for sync fixtures, so it works from any async fixture)."""
    url: str = request.getfixturevalue("infra").mongodb_url
    name: str = request.getfixturevalue("database_name")
    client: AsyncMongoClient[Document] = AsyncMongoClient(url, tz_aware=True)
    try:
        yield client[name]
    finally:
        await client.close()
