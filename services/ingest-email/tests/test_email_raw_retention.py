"""Raw mail is kept for ``INGEST_EMAIL_RAW_RETENTION_DAYS`` and no longer, on the real
FerretDB (which has no TTL indexes: the service purges it periodically)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import INBOUND
from switchboard_common.mongo import Document
from switchboard_common.raw_mail import CHUNKS, MANIFESTS, digest_of
from switchboard_devkit.running.inprocess import running
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_ingest_email.app import build
from switchboard_ingest_email.raw_store import MongoRawStore

pytestmark = pytest.mark.integration


async def test_purge_deletes_mail_stored_before_the_cutoff_chunks_included(
    mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    db = mongo_client[database_name]
    now = [T0]
    store = MongoRawStore(db, chunk_size=1024, clock=lambda: now[0])
    old_small = await store.put(b"From: a@b.c\r\n\r\nold\r\n")
    old_big = await store.put(b"x" * 3000)  # three chunks
    now[0] = T0 + timedelta(days=31)
    recent = await store.put(b"From: a@b.c\r\n\r\nrecent\r\n")

    purged = await store.purge_stored_before(T0 + timedelta(days=1), batch=1)

    assert purged == 2
    assert await store.get(old_small) is None
    assert await store.get(old_big) is None
    assert await db[CHUNKS].count_documents({}) == 0
    assert await store.get(recent) == b"From: a@b.c\r\n\r\nrecent\r\n"
    assert await store.purge_stored_before(T0 + timedelta(days=1)) == 0  # idempotent


async def test_the_service_purges_raw_mail_past_its_retention(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    database_name: str,
) -> None:
    # A retention of about a second, checked five times a second.
    settings = make_settings(
        INGEST_EMAIL_RAW_RETENTION_DAYS=str(1 / 86400),
        INGEST_EMAIL_RAW_PURGE_INTERVAL_SECONDS="0.2",
    )
    service = build(settings)
    async with running(service.runtime):
        data = b"From: ana@example.com\r\nTo: help@support.example.com\r\n\r\nhello\r\n"
        reply = await asyncio.to_thread(smtp_send, settings.smtp_port, data)
        assert reply.code == 250  # stored before the answer
        ((_, event),) = await probe.read_events(INBOUND, count=1, timeout=30)
        digest = digest_of(event.raw_ref)  # type: ignore[attr-defined]
        assert digest is not None
        manifests = mongo_client[database_name][MANIFESTS]

        async def purged() -> bool:
            return await manifests.find_one({"_id": digest}) is None

        deadline = asyncio.get_running_loop().time() + 60
        while not await purged():
            assert asyncio.get_running_loop().time() < deadline, "raw mail never purged"
            await asyncio.sleep(0.2)
