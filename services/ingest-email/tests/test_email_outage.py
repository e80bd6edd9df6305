"""Outages: Kafka or the raw store down means 451 and nothing half-published; after
recovery the sender's retry is published exactly once. Kafka here is our own instance
(never the shared one); the store outage is a MongoDB URL on a dead port."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from switchboard_common.contract import INBOUND, MessageReceived, TopicNames
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.mongo import Document
from switchboard_common.publishing import DurablePublisher
from switchboard_common.topics import create_topics
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.servers.local import LocalKafka
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_ingest_email.admission import Admission
from switchboard_ingest_email.app import build
from switchboard_ingest_email.ingest import Ingestor
from switchboard_ingest_email.metrics import IngestEmailMetrics
from switchboard_ingest_email.raw_store import MongoRawStore
from switchboard_ingest_email.smtp import IngestHandler, SmtpServer

pytestmark = pytest.mark.integration


def message(message_id: str, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "ana@example.com"
    msg["To"] = "help@support.example.com"
    msg["Subject"] = "outage"
    msg["Message-ID"] = message_id
    msg.set_content(text)
    return msg.as_bytes(policy=SMTP_POLICY)


@pytest.fixture
def own_kafka() -> Iterator[LocalKafka]:
    kafka = LocalKafka(
        name="kafka-ingest-email", host="127.0.0.1", port=free_port(), controller_port=free_port()
    )
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(kafka.state, ignore_errors=True)


async def read_all(bootstrap: str, topic: str, settle: float = 3.0) -> list[MessageReceived]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        events: list[MessageReceived] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                quiet_since = time.monotonic()
                events.extend(MessageReceived.model_validate_json(r.value) for r in records)
        return events
    finally:
        await consumer.stop()


async def test_kafka_down_gives_451_and_the_retry_is_published_exactly_once(
    own_kafka: LocalKafka,
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    mongo_client: AsyncMongoClient[Document],
    database_name: str,
) -> None:
    prefix = f"outage{free_port()}."
    await create_topics(own_kafka.bootstrap, prefix=prefix, partitions=3)
    settings = make_settings(
        KAFKA_BOOTSTRAP_SERVERS=own_kafka.bootstrap,
        SWITCHBOARD_TOPIC_PREFIX=prefix,
        INGEST_EMAIL_PUBLISH_TIMEOUT_SECONDS="3",
    )
    service = build(settings)
    before = message("<before@example.com>", "sent while Kafka is up\n")
    during = message("<during@example.com>", "sent while Kafka is down\n")
    port = settings.smtp_port
    async with running(service.runtime):
        assert (await asyncio.to_thread(smtp_send, port, before)).code == 250

        await asyncio.to_thread(own_kafka.stop)
        deferred = await asyncio.to_thread(smtp_send, port, during)
        assert (deferred.code, deferred.message.split()[0]) == (451, "4.3.0")

        await asyncio.to_thread(own_kafka.start)
        # The sending server retries later, as MTAs do, until it gets a 250.
        replies = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            reply = await asyncio.to_thread(smtp_send, port, during)
            replies.append(reply.code)
            if reply.code == 250:
                break
            assert reply.code == 451
            await asyncio.sleep(1)
        assert replies[-1] == 250

    events = await read_all(own_kafka.bootstrap, TopicNames(prefix).inbound)
    ids = sorted(e.provider_message_id or "" for e in events)
    assert ids == ["<before@example.com>", "<during@example.com>"]  # exactly once each
    # The raw bytes were kept even for the deferred attempt (idempotent: one document).
    assert await mongo_client[database_name]["email_raw"].count_documents({}) == 2


async def test_store_down_gives_451_and_publishes_nothing(
    infra: Any,
    topics: TopicNames,
    probe: TopicProbe,
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500"
    settings = make_settings(MONGODB_URL=dead, INGEST_EMAIL_PUBLISH_TIMEOUT_SECONDS="2")
    metrics = IngestEmailMetrics.create(CollectorRegistry())
    broker = make_broker(settings)
    client: AsyncMongoClient[Document] = AsyncMongoClient(dead)
    ingestor = Ingestor(
        store=MongoRawStore(client["nowhere"]),
        publisher=DurablePublisher(
            broker,
            EventPublisher(broker, settings.topics, settings.service_name, publishes=[INBOUND]),
            settings.topics,
            timeout=2.0,
        ),
        metrics=metrics,
        clock=lambda: datetime.now(UTC),
        timeout=2.0,
        max_in_flight=4,
    )
    handler = IngestHandler(
        ingestor, settings.recipient_policy, metrics, Admission(settings.limits)
    )
    smtp = SmtpServer(handler, settings)
    await broker.start()
    await smtp.start()
    try:
        reply = await asyncio.to_thread(
            smtp_send, settings.smtp_port, message("<lost@example.com>", "no store\n")
        )
    finally:
        await smtp.stop(drain_timeout=5)
        await broker.stop()
        await client.close()
    assert (reply.code, reply.message.split()[0]) == (451, "4.3.0")
    assert await probe.read(INBOUND, timeout=3) == []  # nothing published without the store
