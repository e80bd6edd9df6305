"""Publishing a webhook's messages to Kafka within a deadline, or refusing cleanly.

A provider retries a webhook we answer with 503, so the rule is: answer 200 only when
Kafka acknowledged every message of the POST (``acks=all``), and never leave behind a
record the provider would not retry. Two mechanisms serve it:

- **Reachability gate.** Before handing anything to the producer, check that the
  producer holds (or can open) a connection to the leaders of the inbound topic. When
  Kafka is known to be down, the request fails fast with nothing enqueued, so the
  provider's retry later publishes exactly one copy. (The idempotent producer never
  expires a record it has accepted: a record enqueued during an outage would be
  delivered whenever Kafka came back, beside the retry's copy.)
- **Deadline.** Gate and publish together must finish within the publish timeout, or
  the request answers 503. Records already enqueued when the deadline passes (Kafka
  died mid-request) may still be delivered later; they carry the same ``message_id``
  and CloudEvents id as the provider's retry, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faststream.kafka import KafkaBroker

from switchboard_common.contract import INBOUND
from switchboard_common.kafka import EventPublisher, Outgoing
from switchboard_common.logging import get_logger
from switchboard_ingest_social.metrics import IngestSocialMetrics
from switchboard_ingest_social.normalise import Inbound

log = get_logger(__name__)


class KafkaUnavailableError(RuntimeError):
    """Kafka did not acknowledge in time (or is unreachable): answer 503."""


class InboundPublisher:
    """Publishes normalised messages to ``support.inbound.v1`` within a deadline."""

    def __init__(
        self,
        broker: KafkaBroker,
        publisher: EventPublisher,
        metrics: IngestSocialMetrics,
        *,
        topic: str,
        timeout: float,
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._metrics = metrics
        self._topic = topic
        self._timeout = timeout

    async def publish(self, messages: Sequence[Inbound]) -> None:
        """Publish all ``messages`` and return once Kafka acknowledged every one.

        Raises ``KafkaUnavailableError`` when Kafka is unreachable (nothing enqueued), fails,
        or does not acknowledge within the timeout. Idempotent for redelivered webhooks:
        the same message gets the same key, ``message_id`` and CloudEvents id.
        """
        items = [
            Outgoing(INBOUND, m.key, m.message, event_id=m.message.message_id) for m in messages
        ]
        started = time.perf_counter()
        task = asyncio.create_task(self._gate_then_publish(items))
        # The task is shielded from our deadline: cancelling it would not recall records
        # already in the producer, only hide their outcome. Its result is always read.
        task.add_done_callback(_observe)
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(task)
        except TimeoutError:
            raise KafkaUnavailableError(
                f"Kafka did not acknowledge within {self._timeout:g}s"
            ) from None
        except KafkaUnavailableError:
            raise
        except Exception as error:
            raise KafkaUnavailableError(
                f"Kafka refused the publish: {type(error).__name__}"
            ) from error
        self._metrics.publish.latency.labels(topic=INBOUND).observe(time.perf_counter() - started)
        self._metrics.publish.published.labels(topic=INBOUND).inc(len(items))
        for message in messages:
            self._metrics.published.labels(
                channel=message.message.channel.value, kind=message.message.kind
            ).inc()

    async def _gate_then_publish(self, items: list[Outgoing]) -> None:
        producer = _aiokafka_producer(self._broker)
        if producer is not None and not await leaders_reachable(producer, self._topic):
            raise KafkaUnavailableError("Kafka is unreachable: nothing was enqueued")
        await self._publisher.publish_all(items)


def _observe(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, KafkaUnavailableError):
        log.warning("publish failed", error_type=type(error).__name__)


def _aiokafka_producer(broker: KafkaBroker) -> AIOKafkaProducer | None:
    """The aiokafka producer inside FastStream's broker, or None if it is not reachable.

    FastStream keeps it behind private attributes; if a FastStream upgrade moves them,
    the gate is skipped (the deadline still bounds every request) rather than failing.
    """
    fast = getattr(getattr(broker, "config", None), "producer", None)
    state = getattr(fast, "_producer", None)
    producer = getattr(state, "producer", None)
    return producer if isinstance(producer, AIOKafkaProducer) else None


async def leaders_reachable(producer: AIOKafkaProducer, topic: str) -> bool:
    """Whether the producer is connected (or can connect now) to every partition leader.

    Cheap while connections are up (a dictionary lookup each); opens a connection when
    one was closed. Unknown metadata counts as reachable: ``send`` then fetches it,
    within the caller's deadline.
    """
    client = producer.client
    partitions = client.cluster.partitions_for_topic(topic)
    if not partitions:
        return True
    leaders = {client.cluster.leader_for_partition(TopicPartition(topic, p)) for p in partitions}
    if None in leaders or -1 in leaders:
        return False
    try:
        for node in leaders:  # one per broker: usually a handful
            if not await client.ready(node):
                return False
    except Exception:  # noqa: BLE001 - whatever the client raises, the broker is not reachable
        return False
    return True
