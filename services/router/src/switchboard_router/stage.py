"""What each pipeline stage gets from the shell, and what it gives back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.deadletter import DeadLetterPublisher
from switchboard_common.kafka import EventPublisher
from switchboard_common.mongo import Document
from switchboard_common.progress import ConsumerWatch
from switchboard_common.service import BackgroundTask
from switchboard_router.metrics import RouterMetrics
from switchboard_router.settings import RouterSettings


@dataclass(frozen=True)
class RouterContext:
    """The shared clients a stage wires itself to."""

    settings: RouterSettings
    broker: KafkaBroker
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    publisher: EventPublisher
    registry: CollectorRegistry
    metrics: RouterMetrics
    #: Progress and lag of every consumer the stages subscribe (``/healthz``).
    consumers: ConsumerWatch

    def dead_letters(self, consumer_group: str) -> DeadLetterPublisher:
        """A dead-letter sink for one of the stage's consumer groups."""
        return DeadLetterPublisher(
            self.publisher, service=self.settings.service_name, consumer_group=consumer_group
        )


@dataclass
class StageParts:
    """What a stage adds to the service: API routes, start hooks, background loops."""

    routers: list[APIRouter] = field(default_factory=list)
    #: Run before the broker starts (e.g. create indexes); must be idempotent.
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Long-running loops (timers such as offer timeouts); cancelled on stop.
    background: list[BackgroundTask] = field(default_factory=list)
    #: Anything tests or other stages may want to reach (stores, engines).
    extras: dict[str, Any] = field(default_factory=dict)
