"""Publishing on a request path: acknowledge the sender only once Kafka has everything.

Ingest services (SMTP, webhooks) answer "accepted" (250, 200) only after Kafka
acknowledged every record (acks=all), and "retry later" (451, 503) otherwise, so the
sender keeps the message until it is durable. Two details make that exact rather than
approximate, and both live here so every ingest service behaves the same:

- **The idempotent producer never gives up on a record it has accepted**: a record handed
  to it during an outage is delivered whenever Kafka comes back, even after we answered
  "retry later". So (1) a reachability gate refuses at once, with nothing enqueued, when
  the topic's partition leaders cannot be reached; and (2) records are remembered by
  their event id while pending and for a while after delivery: the sender's retry waits
  on the pending record, or is answered at once, instead of publishing a second copy.
- **A deadline** bounds every call; past it the caller refuses and the sender retries.

Across replicas or restarts a retry may still publish again; it carries the same event
id (the CloudEvents ``ce_id``) and ``message_id``, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faststream.kafka import KafkaBroker

from switchboard_common.contract.topics import TopicNames
from switchboard_common.kafka import EventPublisher, Outgoing, aiokafka_producer
from switchboard_common.metrics import PublishMetrics


class PublishUnavailableError(RuntimeError):
    """Kafka did not take the records (unreachable, failing, or too slow): retry later."""


class DurablePublisher:
    """All-or-refuse publishing with a deadline and no duplicates from sender retries."""

    def __init__(
        self,
        broker: KafkaBroker,
        publisher: EventPublisher,
        topics: TopicNames,
        *,
        timeout: float,
        metrics: PublishMetrics | None = None,
        remember: int = 100_000,
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._topics = topics
        self._timeout = timeout
        self._metrics = metrics
        self._remember = remember
        #: Records handed to the producer and not settled yet, by event id.
        self._pending: dict[str, asyncio.Future[Any]] = {}
        #: Recently acknowledged event ids (bounded, oldest forgotten first).
        self._delivered: OrderedDict[str, None] = OrderedDict()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Return once Kafka acknowledged every item; raise ``PublishUnavailableError``
        otherwise. Every item needs an ``event_id`` (its deterministic identity).

        Idempotent for retries: an item already acknowledged is not sent again, one still
        pending is awaited rather than sent again.
        """
        if any(item.event_id is None for item in items):
            raise ValueError("durable publishing needs an event_id on every item")
        waits: list[asyncio.Future[Any]] = []
        fresh: list[Outgoing] = []
        for item in items:
            event_id = str(item.event_id)
            if event_id in self._delivered:
                self._delivered.move_to_end(event_id)
            elif event_id in self._pending:
                waits.append(self._pending[event_id])
            else:
                fresh.append(item)
        try:
            async with asyncio.timeout(self._timeout):
                if fresh:
                    waits.append(await self._send(fresh))
                if waits:
                    # Shielded: cancelling would not recall records already in the
                    # producer, only hide their outcome from the next retry.
                    await asyncio.shield(asyncio.gather(*waits))
        except TimeoutError:
            raise PublishUnavailableError(
                f"Kafka did not acknowledge within {self._timeout:g}s"
            ) from None
        except PublishUnavailableError:
            raise
        except Exception as error:
            raise PublishUnavailableError(f"Kafka refused: {type(error).__name__}") from error

    async def _send(self, fresh: list[Outgoing]) -> asyncio.Future[Any]:
        producer = aiokafka_producer(self._broker)
        deployed = {self._topics(item.topic) for item in fresh}
        if producer is not None:
            for topic in deployed:
                if not await leaders_reachable(producer, topic):
                    raise PublishUnavailableError("Kafka is unreachable: nothing was enqueued")
        started = time.perf_counter()
        ids = [str(item.event_id) for item in fresh]
        task = asyncio.ensure_future(self._publisher.publish_all(fresh))
        for event_id in ids:
            self._pending[event_id] = task
        task.add_done_callback(lambda done: self._settled(fresh, ids, done, started))
        return task

    def _settled(
        self, items: list[Outgoing], ids: list[str], done: asyncio.Future[Any], started: float
    ) -> None:
        for event_id in ids:
            self._pending.pop(event_id, None)
        if done.cancelled() or done.exception() is not None:
            return  # the sender's retry publishes them again
        for event_id in ids:
            self._delivered[event_id] = None
        while len(self._delivered) > self._remember:
            self._delivered.popitem(last=False)
        if self._metrics is not None:
            elapsed = time.perf_counter() - started
            for contract_topic in {item.topic for item in items}:
                count = sum(1 for item in items if item.topic == contract_topic)
                self._metrics.published.labels(contract_topic).inc(count)
                self._metrics.latency.labels(contract_topic).observe(elapsed)


async def leaders_reachable(producer: AIOKafkaProducer, topic: str) -> bool:
    """Whether the producer is connected (or can connect now) to every partition leader.

    Cheap while connections are up (a lookup per leader); opens a connection when one
    was closed. Unknown metadata counts as reachable: ``send`` then fetches it, within
    the caller's deadline.

    When the answer would be no, the metadata is refreshed first and the leaders checked
    again. A refusal enqueues nothing, so nothing else would ask for fresh metadata: a
    view taken while the broker was restarting (no leader yet, or a broker that has
    since moved) would otherwise refuse every sender until aiokafka's periodic refresh,
    five minutes later.
    """
    client = producer.client
    if await _leaders_ready(client, topic):
        return True
    try:
        await client.force_metadata_update()
    except Exception:  # noqa: BLE001 - no fresh metadata: the broker is not reachable
        return False
    return await _leaders_ready(client, topic)


async def _leaders_ready(client: Any, topic: str) -> bool:
    partitions = client.cluster.partitions_for_topic(topic)
    if not partitions:
        return True
    leaders = {client.cluster.leader_for_partition(TopicPartition(topic, p)) for p in partitions}
    if None in leaders or -1 in leaders:
        return False
    try:
        for node in leaders:
            if not await client.ready(node):
                return False
    except Exception:  # noqa: BLE001 - whatever the client raises, the broker is not reachable
        return False
    return True
