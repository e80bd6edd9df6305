"""Kafka clients: the FastStream broker factory and a publisher of contract events.

Producers are durable by construction: ``acks=all`` and the idempotent producer, so an
acknowledged send is on every in-sync replica and a retried send is never duplicated by
the broker. ``EventPublisher`` enqueues many records without awaiting each one and then
awaits all acknowledgements together: callers acknowledge upstream (SMTP 250, HTTP 200,
offset commit) only after ``publish_all`` returns.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Union

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.producer.transaction_manager import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, PidAndEpoch
from aiokafka.structs import RecordMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from switchboard_common.cloudevents import encode, event_headers, source_for
from switchboard_common.contract.events import ContractModel
from switchboard_common.contract.topics import TOPICS_BY_NAME, TopicNames
from switchboard_common.logging import get_logger
from switchboard_common.settings import ServiceSettings

_log = get_logger(__name__)


def kafka_security(settings: ServiceSettings) -> BaseSecurity | None:
    """FastStream security for the configured protocol (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context)
    if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
            "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
        )
    password = settings.kafka_sasl_password.get_secret_value()
    use_ssl = protocol == "SASL_SSL"
    mechanisms: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    return mechanisms[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username, password, ssl_context=context, use_ssl=use_ssl
    )


def aiokafka_security_options(settings: ServiceSettings) -> dict[str, Any]:
    """The same security as ``kafka_security``, as keyword arguments of a bare aiokafka
    client (``AIOKafkaAdminClient``, ``AIOKafkaConsumer``...) built outside the broker."""
    security = kafka_security(settings)
    if security is None:
        return {}
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": security.ssl_context,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return options


def make_broker(settings: ServiceSettings, **overrides: Any) -> KafkaBroker:
    """A FastStream ``KafkaBroker`` with a durable producer (acks=all, idempotence)."""
    compression = None if settings.kafka_compression == "none" else settings.kafka_compression
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": compression,
        "linger_ms": settings.kafka_linger_ms,
        "max_batch_size": 256 * 1024,
        "client_id": f"switchboard-{settings.service_name}",
        "security": kafka_security(settings),
        # Topics are created by operators (or `switchboard-topics create`), with the
        # partition counts the contract specifies, never implicitly by a consumer.
        "allow_auto_create_topics": False,
        "graceful_timeout": 30.0,
        # Our logging configuration (JSON, redaction) instead of FastStream's own handler.
        "logger": logging.getLogger("switchboard.kafka"),
        "log_level": logging.DEBUG,
    }
    options.update(overrides)
    return KafkaBroker(settings.kafka_bootstrap_servers, **options)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish: contract topic name, key and payload."""

    topic: str
    key: str
    event: ContractModel
    event_id: str | None = None
    time: datetime | None = None


class EventPublisher:
    """Publishes contract events with CloudEvents headers onto the deployed topics.

    ``publishes`` names the contract topics this publisher writes: each is declared on the
    broker as a FastStream publisher (title ``<service>.publish:<topic>``, the topic's payload
    schemas), which is what the AsyncAPI document is generated from, and publishing on
    any other topic raises.
    """

    def __init__(
        self,
        broker: KafkaBroker,
        topics: TopicNames,
        service: str,
        *,
        publishes: Iterable[str],
    ) -> None:
        self._broker = broker
        self._topics = topics
        self._service = service
        self._source = source_for(service)
        self._declared = {t: declare_publisher(broker, topics, service, t) for t in publishes}

    async def enqueue(self, item: Outgoing) -> asyncio.Future[RecordMetadata]:
        """Hand one record to the producer; the future resolves when Kafka acknowledged it.

        Blocks only when the producer's buffer is full (backpressure).
        """
        send = self._declared.get(item.topic)
        if send is None:
            raise ValueError(
                f"{self._service} does not declare {item.topic} among the topics it "
                f"publishes ({', '.join(self._declared)}): add it to publishes="
            )
        value, topic, key = encode(item.event), self._topics(item.topic), item.key.encode()
        headers = event_headers(
            item.event, source=self._source, event_id=item.event_id, time=item.time
        )
        producer = aiokafka_producer(self._broker)
        if producer is not None:
            # Straight to the producer FastStream holds: its publish path (middleware
            # stack, a correlation id per record) was a third of the cost of a send, and
            # the records carry the contract's headers either way.
            sent: asyncio.Future[RecordMetadata] = await producer.send(
                topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
            )
            return sent
        future: asyncio.Future[RecordMetadata] = await send.publish(
            value, topic, key=key, headers=headers, no_confirm=True
        )
        return future

    async def publish_all(self, items: Iterable[Outgoing]) -> list[RecordMetadata]:
        """Publish every item and wait until Kafka acknowledged all of them.

        Raises the first failure (``KafkaError`` and friends) after all futures settled,
        so a caller that reports failure upstream never leaves an unobserved send behind.
        """
        futures = [await self.enqueue(item) for item in items]
        try:
            return await gather_acks(futures)
        except DESYNCHRONISED:
            producer = aiokafka_producer(self._broker)
            if producer is not None:
                resynchronise(producer)
            raise

    async def publish(self, item: Outgoing) -> RecordMetadata:
        """Publish one item and wait for its acknowledgement."""
        (metadata,) = await self.publish_all([item])
        return metadata


def declare_publisher(
    broker: KafkaBroker, topics: TopicNames, service: str, topic: str
) -> DefaultPublisher:
    """Declare that ``service`` publishes on the contract ``topic`` (for AsyncAPI)."""
    spec = TOPICS_BY_NAME[topic]
    events = spec.events
    return broker.publisher(
        topics(topic),
        title=f"{service}.publish:{topic}",
        description=spec.description,
        schema=events[0] if len(events) == 1 else Union[events],  # noqa: UP007 - a runtime union of classes
    )


async def gather_acks(futures: Sequence[asyncio.Future[RecordMetadata]]) -> list[RecordMetadata]:
    """Await every acknowledgement; raise the first error once all have settled."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, RecordMetadata)]


#: Produce errors after which an idempotent aiokafka producer fails every later batch of
#: the partition the same way: it keeps the producer id and sequence numbers the broker
#: no longer agrees with (after a broker restart, for instance), and unlike the Java
#: client never asks for a new id (aio-libs/aiokafka#1017). The caller's retry succeeds
#: once ``resynchronise`` has run.
DESYNCHRONISED = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


def aiokafka_producer(broker: KafkaBroker) -> AIOKafkaProducer | None:
    """The aiokafka producer inside FastStream's broker, or None if it cannot be found.

    FastStream keeps it behind private attributes; if an upgrade moves them, callers
    skip what needs it rather than failing. A test checks that it is found with the
    FastStream version in use.
    """
    fast = getattr(getattr(broker, "config", None), "producer", None)
    state = getattr(fast, "_producer", None)
    producer = getattr(state, "producer", None)
    return producer if isinstance(producer, AIOKafkaProducer) else None


def resynchronise(producer: AIOKafkaProducer) -> bool:
    """Make an idempotent (not transactional) producer start over with a new producer id.

    Forgets the producer id, epoch and sequence numbers; aiokafka's sender asks the
    broker for a new id before it drains the next batch, whose sequences start at 0, as
    the broker expects of a new producer. Batches already in flight fail or succeed as
    they would have; their senders retry and the retry carries the same event id, which
    consumers deduplicate. Returns whether it reset anything (False when the producer is
    not idempotent, is transactional, is already waiting for a new id, or aiokafka's
    internals moved: a test pins them).
    """
    manager = getattr(producer, "_txn_manager", None)
    if manager is None or getattr(manager, "transactional_id", None) is not None:
        return False
    if not manager.has_pid():
        return False  # already starting over
    manager._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    manager._pid_waiter = asyncio.get_running_loop().create_future()
    manager._sequence_numbers.clear()
    _log.warning("kafka producer resynchronised", reason="sequence rejected by the broker")
    return True
