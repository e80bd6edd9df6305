"""DurablePublisher: all-or-refuse, a deadline, and no duplicate from a sender's retry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, ClassVar

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber
from aiokafka.structs import TopicPartition

from switchboard_common.contract import INBOUND, TopicNames
from switchboard_common.kafka import EventPublisher, Outgoing, aiokafka_producer, make_broker
from switchboard_common.publishing import (
    DurablePublisher,
    PublishUnavailableError,
    leaders_reachable,
)
from switchboard_common.settings import ServiceSettings
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.builders import message


class SlowKafka:
    """Stands in for EventPublisher: holds sends until released, or fails them."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()
        self.fail = False

    async def publish_all(self, items: Iterable[Outgoing]) -> list[Any]:
        batch = list(items)
        self.sent.extend(str(i.event_id) for i in batch)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("broker gone")
        return [None for _ in batch]


def durable(kafka: SlowKafka, timeout: float = 5.0) -> DurablePublisher:
    return DurablePublisher(
        broker=object(),  # type: ignore[arg-type]  # no producer to gate on: gate skipped
        publisher=kafka,  # type: ignore[arg-type]
        topics=TopicNames(),
        timeout=timeout,
    )


def item(n: int) -> Outgoing:
    return Outgoing(INBOUND, key=f"k{n}", event=message(f"m{n}"), event_id=f"m{n}")


@pytest.mark.unit
async def test_every_item_needs_an_event_id() -> None:
    with pytest.raises(ValueError, match="event_id"):
        await durable(SlowKafka()).publish([Outgoing(INBOUND, key="k", event=message())])


@pytest.mark.unit
async def test_an_acknowledged_item_is_not_sent_again() -> None:
    kafka = SlowKafka()
    kafka.release.set()
    publisher = durable(kafka)
    await publisher.publish([item(1), item(2)])
    await publisher.publish([item(1)])  # the sender retries after losing our answer
    assert kafka.sent == ["m1", "m2"]


@pytest.mark.unit
async def test_a_retry_of_a_pending_item_waits_for_it_instead_of_sending_twice() -> None:
    kafka = SlowKafka()
    publisher = durable(kafka, timeout=0.2)
    with pytest.raises(PublishUnavailableError, match="within"):
        await publisher.publish([item(1)])  # too slow: the sender is told to retry
    retry = asyncio.create_task(publisher.publish([item(1)]))
    await asyncio.sleep(0.05)
    kafka.release.set()  # the first send completes
    await retry
    assert kafka.sent == ["m1"]


@pytest.mark.unit
async def test_a_failed_send_is_sent_again_on_retry() -> None:
    kafka = SlowKafka()
    kafka.fail = True
    kafka.release.set()
    publisher = durable(kafka)
    with pytest.raises(PublishUnavailableError, match="ConnectionError"):
        await publisher.publish([item(1)])
    kafka.fail = False
    await publisher.publish([item(1)])
    assert kafka.sent == ["m1", "m1"]


class GateSettings(ServiceSettings):
    service_name: ClassVar[str] = "gate-check"


@pytest.mark.integration
async def test_the_reachability_gate_finds_the_producer_inside_faststream(infra: Infra) -> None:
    """The gate reaches the aiokafka producer through FastStream internals; if an upgrade
    moved them, the gate would silently be skipped. This fails instead."""
    settings = GateSettings(kafka_bootstrap_servers=infra.kafka_bootstrap)
    broker = make_broker(settings)
    await broker.start()
    try:
        producer = aiokafka_producer(broker)
        assert producer is not None
        assert await leaders_reachable(producer, settings.topics.inbound)
    finally:
        await broker.stop()


class StaleCluster:
    """aiokafka's cluster view as taken while the broker restarted: no leader yet."""

    def __init__(self) -> None:
        self.leader: int | None = -1

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return {0, 1}

    def leader_for_partition(self, _partition: Any) -> int | None:
        return self.leader


class RestartedClient:
    """A client whose metadata is stale until refreshed; the broker itself is back."""

    def __init__(self, *, broker_back: bool) -> None:
        self.cluster = StaleCluster()
        self.broker_back = broker_back
        self.refreshes = 0

    async def force_metadata_update(self) -> bool:
        self.refreshes += 1
        if self.broker_back:
            self.cluster.leader = 1
        return self.broker_back

    async def ready(self, _node: int) -> bool:
        return self.broker_back


class FakeProducer:
    def __init__(self, client: RestartedClient) -> None:
        self.client = client


@pytest.mark.unit
async def test_the_gate_refreshes_stale_metadata_instead_of_refusing_until_it_expires() -> None:
    client = RestartedClient(broker_back=True)
    assert await leaders_reachable(FakeProducer(client), "support.inbound.v1")
    assert client.refreshes == 1


@pytest.mark.unit
async def test_the_gate_refuses_while_the_broker_is_still_down() -> None:
    client = RestartedClient(broker_back=False)
    assert not await leaders_reachable(FakeProducer(client), "support.inbound.v1")
    assert client.refreshes == 1


@pytest.mark.integration
async def test_after_the_broker_rejects_a_sequence_the_next_publish_goes_through(
    infra: Infra, topics: TopicNames
) -> None:
    """A broker that lost track of the producer (a restart, say) answers every later
    batch with OutOfOrderSequenceNumber, and aiokafka alone never recovers: the ingest
    refused mail until it was restarted. The publisher starts over with a new producer
    id, so the sender's retry is accepted."""
    settings = GateSettings(kafka_bootstrap_servers=infra.kafka_bootstrap)
    broker = make_broker(settings)
    await broker.start()
    try:
        publisher = EventPublisher(broker, topics, "gate-check", publishes=[INBOUND])
        await publisher.publish(item(1))
        producer = aiokafka_producer(broker)
        assert producer is not None
        first_id = producer._txn_manager.producer_id
        # Desynchronise: the producer now numbers its next batches past what the broker
        # has, as after a broker lost the producer's last batches.
        for partition in range(3):
            producer._txn_manager.increment_sequence_number(
                TopicPartition(topics(INBOUND), partition), 1000
            )
        with pytest.raises(OutOfOrderSequenceNumber):
            await publisher.publish(item(1))
        metadata = await publisher.publish(item(1))  # the sender's retry
        assert metadata.offset >= 1
        assert producer._txn_manager.producer_id != first_id
    finally:
        await broker.stop()


@pytest.mark.unit
async def test_a_publisher_refuses_topics_it_does_not_declare() -> None:
    """What a service publishes is what it declares (and what docs/asyncapi.yaml shows)."""
    from faststream.kafka import KafkaBroker

    from switchboard_common.contract import SLA_EVENTS

    broker = KafkaBroker("127.0.0.1:9")  # never connected: the check comes first
    publisher = EventPublisher(broker, TopicNames(), "auditor", publishes=[SLA_EVENTS])
    with pytest.raises(ValueError, match=f"auditor does not declare {INBOUND}"):
        await publisher.enqueue(Outgoing(INBOUND, "email:ana@example.com", message()))
    (declared,) = broker.publishers
    assert declared.specification.config.title_ == f"auditor.publish:{SLA_EVENTS}"
