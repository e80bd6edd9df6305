"""The shared clients the shell hands to identity, timeline and assignment."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.deadletter import DeadLetterPublisher
from switchboard_common.kafka import EventPublisher
from switchboard_common.mongo import Document
from switchboard_common.progress import ConsumerWatch
from switchboard_router.metrics import RouterMetrics
from switchboard_router.settings import RouterSettings


@dataclass(frozen=True)
class RouterContext:
    """The shared clients of one router process."""

    settings: RouterSettings
    broker: KafkaBroker
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    publisher: EventPublisher
    registry: CollectorRegistry
    metrics: RouterMetrics
    #: Progress and lag of every consumer the shell subscribes (``/healthz``).
    consumers: ConsumerWatch

    def dead_letters(self, consumer_group: str) -> DeadLetterPublisher:
        """A dead-letter sink for one of the router's consumer groups."""
        return DeadLetterPublisher(
            self.publisher, service=self.settings.service_name, consumer_group=consumer_group
        )
