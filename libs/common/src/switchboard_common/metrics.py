"""Metrics every service shares: the process, build and HTTP requests, consumer
progress, dead letters, publishing.

Labels are bounded: contract topic names, route templates, outcome and reason
categories, never ids. Each service makes its registry with ``service_registry`` and
passes it on; service-specific metrics live in the service's own ``metrics`` module.
"""

from __future__ import annotations

import os
import platform
from collections import Counter as Tally
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def add_tally(counter: Counter, tally: Tally[tuple[str, ...]]) -> None:
    """Add a batch's counts, one ``labels`` lookup per distinct label set: per event,
    prometheus-client's lookup (checks and a lock) cost a few percent of a hot path."""
    for labels, count in tally.items():
        counter.labels(*labels).inc(count)


#: The image build sets it (``docker build --build-arg GIT_COMMIT=...``).
GIT_COMMIT_ENV = "SWITCHBOARD_GIT_COMMIT"


def service_registry(service: str) -> CollectorRegistry:
    """A new registry for ``service`` with what every Prometheus client exports:
    ``process_*`` (CPU, memory, file descriptors), ``python_gc_*``, ``python_info``, and
    ``switchboard_build_info`` (always 1; its labels say what runs)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    Gauge(
        "switchboard_build_info",
        "Always 1; the labels name the service, its version, Python and the git commit.",
        ["service", "version", "python", "commit"],
        registry=registry,
    ).labels(
        service=service,
        version=package_version(f"switchboard-{service}"),
        python=platform.python_version(),
        commit=os.environ.get(GIT_COMMIT_ENV, "unknown"),
    ).set(1)
    return registry


def package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class HttpMetrics:
    """Requests to a service's HTTP server (see ``switchboard_common.http.instrument``).

    ``route`` is the route's template (``/customers/{customer_id}/timeline``), never the
    raw path, which carries ids: requests that match no route share one label.
    """

    requests: Counter
    seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> HttpMetrics:
        return cls(
            requests=Counter(
                "switchboard_http_requests",
                "HTTP requests answered, by route template, method and status code.",
                ["service", "route", "method", "status"],
                registry=registry,
            ),
            seconds=Histogram(
                "switchboard_http_request_duration_seconds",
                "Seconds from receiving a request to the end of its response, by route.",
                ["service", "route", "method"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class ConsumerMetrics:
    """Progress of batch consumers (see ``switchboard_common.consumer``)."""

    records: Counter
    dead_letters: Counter
    batch_seconds: Histogram
    batch_size: Histogram
    retries: Counter
    lag: Gauge
    last_progress: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ConsumerMetrics:
        return cls(
            # Records handled, by contract topic and outcome (processed, dead_lettered).
            records=Counter(
                "switchboard_consumer_records",
                "Records consumed, by topic and outcome.",
                ["topic", "outcome"],
                registry=registry,
            ),
            # Records sent to support.deadletter.v1, by topic and reason category.
            dead_letters=Counter(
                "switchboard_consumer_dead_letters",
                "Records dead-lettered, by source topic and reason.",
                ["topic", "reason"],
                registry=registry,
            ),
            # Time to process one batch end to end (decode, writes, publishes).
            batch_seconds=Histogram(
                "switchboard_consumer_batch_seconds",
                "Seconds to process one consumed batch.",
                ["topic"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            # Records per consumed batch.
            batch_size=Histogram(
                "switchboard_consumer_batch_size",
                "Records per consumed batch.",
                ["topic"],
                buckets=BATCH_SIZE_BUCKETS,
                registry=registry,
            ),
            # Batches retried after a transient failure (database or broker unreachable).
            retries=Counter(
                "switchboard_consumer_retries",
                "Batch retries after transient failures.",
                ["topic"],
                registry=registry,
            ),
            # Records not yet processed (partitions' end offsets, asked of the broker, minus
            # the first unprocessed record), summed over this replica's partitions; sampled
            # periodically, so it rises even while a batch is stuck.
            lag=Gauge(
                "switchboard_consumer_lag_records",
                "Consumer lag in records, summed over this replica's partitions.",
                ["topic", "group"],
                registry=registry,
            ),
            # Unix time a batch of the group last finished (offsets committable); frozen
            # while the consumer is wedged. ``group`` has no prefix or replica suffix.
            last_progress=Gauge(
                "switchboard_consumer_last_progress_timestamp_seconds",
                "Unix time the consumer group last finished a batch in this replica.",
                ["topic", "group"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class PublishMetrics:
    """Publishing to Kafka from request paths (ingest)."""

    published: Counter
    latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PublishMetrics:
        return cls(
            # Events acknowledged by Kafka, by contract topic.
            published=Counter(
                "switchboard_events_published",
                "Events acknowledged by Kafka, by topic.",
                ["topic"],
                registry=registry,
            ),
            # Seconds from handing records to the producer to Kafka's acknowledgement.
            latency=Histogram(
                "switchboard_publish_seconds",
                "Seconds until Kafka acknowledged a publish (acks=all).",
                ["topic"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
        )
