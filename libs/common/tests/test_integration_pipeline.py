"""The shared plumbing against real Kafka and the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

import pytest
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, UpdateOne

from switchboard_common.cloudevents import encode, event_headers
from switchboard_common.consumer import BatchConsumer, Delivery, subscribe_batch
from switchboard_common.contract import (
    DEADLETTER,
    INBOUND,
    DeadLetter,
    MessageReceived,
    TopicNames,
)
from switchboard_common.deadletter import DeadLetterPublisher
from switchboard_common.kafka import EventPublisher, Outgoing, make_broker
from switchboard_common.metrics import ConsumerMetrics
from switchboard_common.mongo import Document, make_mongo_client
from switchboard_common.progress import ConsumerWatch
from switchboard_common.settings import ServiceSettings
from switchboard_devkit.testing.builders import message
from switchboard_devkit.testing.kafka_probe import TopicProbe

pytestmark = pytest.mark.integration


class SmokeSettings(ServiceSettings):
    service_name: ClassVar[str] = "smoke"


class TimelineWriter:
    """A miniature service core: idempotent bulk writes keyed by message_id."""

    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        self.collection = client[database]["timeline"]
        self.batches: list[int] = []

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        self.batches.append(len(deliveries))
        writes = []
        for d in deliveries:
            assert isinstance(d.event, MessageReceived)
            writes.append(
                UpdateOne(
                    {"_id": d.event.message_id},
                    {"$setOnInsert": {"text": d.event.text, "ce_id": d.attributes.id}},
                    upsert=True,
                )
            )
        await self.collection.bulk_write(writes, ordered=False)
        return []


@pytest.fixture
async def running(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[KafkaBroker, TimelineWriter, SmokeSettings]]:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    settings = SmokeSettings.load()
    broker = make_broker(settings)
    client = make_mongo_client(settings)
    writer = TimelineWriter(client, settings.mongodb_database)
    publisher = EventPublisher(
        broker, settings.topics, settings.service_name, publishes=[DEADLETTER]
    )
    metrics = ConsumerMetrics.create(CollectorRegistry())
    consumer = BatchConsumer(
        topics=settings.topics,
        handler=writer,
        dead_letters=DeadLetterPublisher(publisher, service="smoke", consumer_group="smoke"),
        metrics=metrics,
    )
    subscribe_batch(
        broker, consumer, topics=[INBOUND], group_id="smoke", watch=ConsumerWatch(metrics)
    )
    await broker.start()
    try:
        yield broker, writer, settings
    finally:
        await broker.stop()
        await client.close()


async def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_event_flows_through_kafka_into_the_database_with_cloudevents_headers(
    running: tuple[KafkaBroker, TimelineWriter, SmokeSettings],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
) -> None:
    broker, _writer, settings = running
    publisher = EventPublisher(broker, settings.topics, "ingest-email", publishes=[INBOUND])
    sent = message("smoke-1", text="Where is my parcel?")
    (ack,) = await publisher.publish_all(
        [Outgoing(INBOUND, key="email:ana@example.com", event=sent, event_id="ce-smoke-1")]
    )
    assert ack.topic == settings.topics.inbound

    collection = mongo_client[settings.mongodb_database]["timeline"]

    async def stored() -> bool:
        return await collection.find_one({"_id": "smoke-1"}) is not None

    await wait_for(stored)
    document = await collection.find_one({"_id": "smoke-1"})
    assert document == {"_id": "smoke-1", "text": "Where is my parcel?", "ce_id": "ce-smoke-1"}

    (record,) = await probe.read(INBOUND, count=1)
    headers = {k: (v or b"").decode() for k, v in record.headers}
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == "ce-smoke-1"
    assert headers["ce_type"] == "support.message.received"
    assert headers["ce_source"] == "/switchboard/ingest-email"
    assert headers["content-type"] == "application/json"
    assert record.key == b"email:ana@example.com"
    assert MessageReceived.model_validate_json(record.value or b"") == sent


async def test_bad_records_go_to_the_dead_letter_topic_and_consuming_continues(
    running: tuple[KafkaBroker, TimelineWriter, SmokeSettings],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
) -> None:
    _, _, settings = running
    good_headers = [(k, v.encode()) for k, v in event_headers(message(), source="/t").items()]
    wrong_type = [(k, b"support.offer.accepted" if k == "ce_type" else v) for k, v in good_headers]
    await probe.send_raw(INBOUND, b"this is not json", key="k-1", headers=good_headers)
    await probe.send_raw(INBOUND, encode(message("wrong-type")), key="k-2", headers=wrong_type)
    await probe.send_raw(INBOUND, b'{"message_id": "m"}', key="k-3", headers=good_headers)
    await probe.send_raw(INBOUND, encode(message("no-headers")), key="k-4")
    await probe.send(INBOUND, message("after-the-bad-ones"), key="k-5")

    collection = mongo_client[settings.mongodb_database]["timeline"]

    async def valid_one_processed() -> bool:
        return await collection.find_one({"_id": "after-the-bad-ones"}) is not None

    await wait_for(valid_one_processed)
    letters = await probe.read_events(DEADLETTER, count=4, settle=1.0)
    by_key = {record.key: event for record, event in letters}
    assert set(by_key) == {b"k-1", b"k-2", b"k-3", b"k-4"}
    reasons = {k: (e.reason, e.error) for k, e in by_key.items() if isinstance(e, DeadLetter)}
    assert reasons[b"k-1"][0] == "not_json"
    assert reasons[b"k-2"][0] == "unknown_type"
    assert "support.offer.accepted" in reasons[b"k-2"][1]
    assert reasons[b"k-3"][0] == "invalid_payload"
    assert reasons[b"k-4"][0] == "bad_headers"
    letter = by_key[b"k-1"]
    assert isinstance(letter, DeadLetter)
    assert letter.topic == TopicNames(settings.topic_prefix).inbound
    assert base64.b64decode(letter.value_b64 or "") == b"this is not json"
    assert {h.key for h in letter.headers} >= {"ce_type", "ce_id"}
    assert await collection.count_documents({}) == 1


async def test_redelivery_is_harmless_with_idempotent_writes(
    running: tuple[KafkaBroker, TimelineWriter, SmokeSettings],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
) -> None:
    _, writer, settings = running
    for _ in range(3):
        await probe.send(INBOUND, message("dup-1"), key="email:ana@example.com")
    await probe.send(INBOUND, message("dup-2"), key="email:ana@example.com")
    collection = mongo_client[settings.mongodb_database]["timeline"]

    async def both() -> bool:
        return await collection.count_documents({}) == 2

    await wait_for(both)
    await asyncio.sleep(0.5)
    assert await collection.count_documents({}) == 2
    assert sum(writer.batches) == 4  # every record was processed, the duplicates harmlessly
    dead = await probe.read(DEADLETTER, timeout=1.0)
    assert dead == []
    assert json.loads((await probe.read(INBOUND, count=4))[0].value or b"{}")["message_id"]
