"""Every metric the router exports, one dataclass per stage. Labels are bounded
(channel, priority, queue, outcome): never ids."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from switchboard_common.metrics import ConsumerMetrics


@dataclass(frozen=True)
class RouterMetrics:
    """All of the router's metrics, registered on one registry."""

    consumer: ConsumerMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        return cls(consumer=ConsumerMetrics.create(registry))
