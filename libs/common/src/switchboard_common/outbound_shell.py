"""Wiring a ``ReplyDispatcher`` into a service: the consumer group on the reply orders, the
statuses' publisher, dead letters and progress watch. The service's ``app.py`` names the
group, the topic and the records' collection; this only assembles them the same way for
every channel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.consumer import BatchConsumer, subscribe_batch
from switchboard_common.contract import CONVERSATION_EVENTS, DEADLETTER, OUTBOUND
from switchboard_common.deadletter import DeadLetterPublisher
from switchboard_common.kafka import EventPublisher
from switchboard_common.metrics import ConsumerMetrics
from switchboard_common.mongo import Document
from switchboard_common.outbound import ChannelSender, ReplyDispatcher, ReplyMetrics
from switchboard_common.outbound_records import ReplyRecords
from switchboard_common.progress import ConsumerWatch
from switchboard_common.settings import ServiceSettings

#: What a reply sender publishes: statuses, ``support.reply.sent``, refusals.
REPLY_PUBLISHES = (OUTBOUND, CONVERSATION_EVENTS, DEADLETTER)


@dataclass(frozen=True)
class ReplyConsumer:
    """Where a service's replies are consumed, recorded and how they go out."""

    group: str
    topic: str
    collection: str
    description: str
    max_records: int = 100
    backoff: float = 1.0


def subscribe_replies(
    spec: ReplyConsumer,
    sender: ChannelSender,
    *,
    settings: ServiceSettings,
    broker: KafkaBroker,
    db: AsyncDatabase[Document],
    registry: CollectorRegistry,
    clock: Callable[[], datetime],
    publisher: EventPublisher | None = None,
) -> tuple[ReplyDispatcher, ConsumerWatch]:
    """Subscribe ``sender``'s dispatcher; the watch's ``run`` is a background task.
    ``publisher``: the service's own, when it already declares some of
    ``REPLY_PUBLISHES`` (a topic is declared once per service)."""
    consumer_metrics = ConsumerMetrics.create(registry)
    if publisher is None:
        publisher = EventPublisher(
            broker, settings.topics, settings.service_name, publishes=REPLY_PUBLISHES
        )
    dispatcher = ReplyDispatcher(
        sender,
        ReplyRecords(db, spec.collection),
        publisher,
        ReplyMetrics.create(registry),
        clock,
        backoff=spec.backoff,
    )
    watch = ConsumerWatch(
        consumer_metrics,
        stall_after=settings.consumer_stall_seconds,
        interval=settings.consumer_lag_interval_seconds,
    )
    group_id = settings.topic_prefix + spec.group
    subscribe_batch(
        broker,
        BatchConsumer(
            topics=settings.topics,
            handler=dispatcher,
            dead_letters=DeadLetterPublisher(
                publisher, service=settings.service_name, consumer_group=group_id
            ),
            metrics=consumer_metrics,
        ),
        topics=[spec.topic],
        group_id=group_id,
        max_records=spec.max_records,
        watch=watch,
        title=f"{group_id}:{settings.topics(spec.topic)}",
        description=spec.description,
    )
    return dispatcher, watch
