"""One contract suite for both raw store adapters: in-memory (unit) and MongoDB (integration,
on the real FerretDB). The fake cannot drift from the real thing."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.mongo import Document
from switchboard_common.raw_mail import CHUNKS, MANIFESTS
from switchboard_ingest_email.raw_store import (
    InMemoryRawStore,
    MongoRawStore,
    RawStore,
)

ADAPTERS = [
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("mongo", marks=pytest.mark.integration),
]


@pytest.fixture(params=ADAPTERS)
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """("memory", "") or ("mongo", database name); only the integration tier touches servers."""
    if request.param == "memory":
        return ("memory", "")
    return ("mongo", request.getfixturevalue("database_name"))


@pytest.fixture
async def store(
    backend: tuple[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[RawStore]:
    kind, database = backend
    if kind == "memory":
        yield InMemoryRawStore()
        return
    infra = request.getfixturevalue("infra")
    client: AsyncMongoClient[Document] = AsyncMongoClient(infra.mongodb_url, tz_aware=True)
    # Small chunks so that multi-chunk messages stay small in tests.
    yield MongoRawStore(client[database], chunk_size=64 * 1024)
    await client.close()


async def test_put_returns_the_sha256_and_get_returns_the_exact_bytes(store: RawStore) -> None:
    data = b"From: a@b.c\r\n\r\nhello\r\n"
    digest = await store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert await store.get(digest) == data


async def test_unknown_digests_are_none(store: RawStore) -> None:
    assert await store.get("0" * 64) is None


async def test_putting_the_same_bytes_again_is_harmless(store: RawStore) -> None:
    data = os.urandom(1000)
    first = await store.put(data)
    second = await store.put(data, sha256=first)
    assert first == second
    assert await store.get(first) == data


async def test_large_messages_span_chunks_and_come_back_whole(store: RawStore) -> None:
    data = os.urandom(300 * 1024 + 17)  # several 64 KiB chunks and a partial one
    digest = await store.put(data)
    assert await store.get(digest) == data
    assert await store.get(await store.put(b"")) == b""  # the empty message too


async def test_concurrent_puts_are_all_durable(store: RawStore) -> None:
    messages = [os.urandom(100 + i) for i in range(40)] + [b"duplicate"] * 5
    digests = await asyncio.gather(*(store.put(m) for m in messages))
    for data, digest in zip(messages, digests, strict=True):
        assert await store.get(digest) == data


@pytest.mark.integration
async def test_mongo_documents_are_addressed_by_id_only(
    mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    store = MongoRawStore(mongo_client[database_name], chunk_size=10)
    digest = await store.put(b"0123456789abcdefghij!")
    db = mongo_client[database_name]
    manifest = await db[MANIFESTS].find_one({"_id": digest})
    assert manifest is not None
    assert (manifest["size"], manifest["chunks"], manifest["chunk_size"]) == (21, 3, 10)
    chunk_ids = sorted([d["_id"] async for d in db[CHUNKS].find({})])
    assert chunk_ids == [f"{digest}:0", f"{digest}:1", f"{digest}:2"]
    # A message that fits in one chunk is one document: no chunk documents.
    small = await store.put(b"0123456789")
    inline = await db[MANIFESTS].find_one({"_id": small})
    assert inline is not None
    assert (inline["chunks"], bytes(inline["data"])) == (0, b"0123456789")
    assert await db[CHUNKS].count_documents({}) == 3


@pytest.mark.integration
async def test_a_missing_chunk_is_an_error_not_silent_truncation(
    mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    store = MongoRawStore(mongo_client[database_name], chunk_size=10)
    digest = await store.put(b"0123456789abcdefghij")
    await mongo_client[database_name][CHUNKS].delete_one({"_id": f"{digest}:1"})
    with pytest.raises(LookupError, match="chunk 1 is missing"):
        await store.get(digest)
