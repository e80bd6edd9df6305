"""Metrics every service shares: consumer progress, dead letters, publishing.

Labels are bounded: contract topic names, outcome and reason categories, never ids.
Each service passes its own ``CollectorRegistry``; service-specific metrics live in the
service's own ``metrics`` module.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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
