"""Is every consumer making progress? Lag, last progress and stalls, per consumer group.

A consumer wedged inside its handler (a dependency that never answers, a deadlock)
finishes no batch, so nothing measured at the end of a batch moves. ``ConsumerWatch``
therefore measures independently of batch completion:

- last progress: when a batch of the group last finished with its offsets committable
  (``switchboard_consumer_last_progress_timestamp_seconds``); it stays frozen while the
  consumer is wedged, which is what the stall alert looks at;
- lag: every ``interval`` seconds, the assigned partitions' end offsets asked of the
  broker minus the first record not yet processed (``switchboard_consumer_lag_records``),
  so it keeps rising while a wedged consumer holds its batch;
- stalled: work is pending (a batch in flight, or lag) and no batch finished for
  ``stall_after`` seconds. ``/healthz`` fails then (``liveness_check``), so the
  orchestrator restarts a replica that cannot get out of it by itself.

``ConsumerProgress`` is the pure part (a clock passed in); the rest reads the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from switchboard_common.http import ReadinessCheck
from switchboard_common.logging import get_logger
from switchboard_common.metrics import ConsumerMetrics

log = get_logger(__name__)


@dataclass
class ConsumerProgress:
    """Progress of one consumer group in this replica (monotonic seconds)."""

    stall_after: float
    in_flight: int = 0
    lag: int = 0
    last_progress: float | None = None
    #: When work became pending after none was (the stall clock never starts earlier);
    #: None once nothing is left to do.
    pending_since: float | None = None

    @property
    def pending(self) -> bool:
        return self.in_flight > 0 or self.lag > 0

    def batch_started(self, now: float) -> None:
        self._becomes_pending(now)
        self.in_flight += 1

    def batch_finished(self, now: float, *, committed: bool) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if committed:
            self.last_progress = now
            if not self.pending:
                self.pending_since = None
        # Not committed: the batch comes back (redelivered), so the stall clock runs on.

    def lag_sampled(self, lag: int, now: float) -> None:
        if lag > 0:
            self._becomes_pending(now)
        self.lag = lag
        if not self.pending:
            self.pending_since = None

    def stalled_for(self, now: float) -> float:
        """Seconds with work pending and no batch finished (0 when nothing is pending)."""
        if self.pending_since is None:
            return 0.0
        since = max(self.pending_since, self.last_progress or self.pending_since)
        return max(0.0, now - since)

    def stalled(self, now: float) -> bool:
        return self.stalled_for(now) > self.stall_after

    def _becomes_pending(self, now: float) -> None:
        if self.pending_since is None:
            self.pending_since = now


@dataclass
class WatchedConsumer:
    """One subscription: its bounded metric label, topics and the Kafka consumer."""

    group: str
    #: Deployed topic name → its metric label (the contract name).
    topics: dict[str, str]
    progress: ConsumerProgress
    #: Returns the subscription's aiokafka consumer once the broker started it.
    kafka_consumer: Callable[[], Any]
    #: (topic, partition) → first offset of the batch in the handler.
    held: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class ConsumerWatch:
    """Every batch consumer of a service: progress gauges, broker-side lag, liveness."""

    metrics: ConsumerMetrics
    stall_after: float = 300.0
    interval: float = 15.0
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    consumers: list[WatchedConsumer] = field(default_factory=list)

    def watch(
        self, group: str, topics: dict[str, str], kafka_consumer: Callable[[], Any]
    ) -> WatchedConsumer:
        """Register a subscription; ``subscribe_batch`` does this for every consumer."""
        watched = WatchedConsumer(group, topics, ConsumerProgress(self.stall_after), kafka_consumer)
        self.consumers.append(watched)
        self._mark_progress(watched)  # the process start is where the stall clock begins
        return watched

    def batch_started(self, watched: WatchedConsumer, firsts: dict[tuple[str, int], int]) -> None:
        """A batch entered the handler; ``firsts``: its first offset per partition."""
        watched.held.update(firsts)
        watched.progress.batch_started(self.monotonic())

    def batch_finished(self, watched: WatchedConsumer, *, committed: bool) -> None:
        watched.held.clear()
        watched.progress.batch_finished(self.monotonic(), committed=committed)
        if committed:
            self._mark_progress(watched)

    def _mark_progress(self, watched: WatchedConsumer) -> None:
        now = self.wall()
        for label in set(watched.topics.values()):
            self.metrics.last_progress.labels(label, watched.group).set(now)

    def stalled(self) -> list[WatchedConsumer]:
        now = self.monotonic()
        return [w for w in self.consumers if w.progress.stalled(now)]

    def liveness_check(self) -> ReadinessCheck:
        """For ``/healthz``: fails while a consumer with pending work is stalled."""

        async def check() -> bool:
            stalled = self.stalled()
            for watched in stalled:
                log.error(
                    "consumer stalled",
                    group=watched.group,
                    seconds=round(watched.progress.stalled_for(self.monotonic())),
                    in_flight=watched.progress.in_flight,
                    lag=watched.progress.lag,
                )
            return not stalled

        return ReadinessCheck("consumers", check)

    async def run(self) -> None:
        """Sample lag from the broker every ``interval`` seconds, until cancelled.

        Each round runs as its own task that this loop waits on: aiokafka's offset calls
        can swallow a cancellation while the consumer stops, and the service's shutdown
        must never wait on them. A round still running when cancelled is abandoned."""
        while True:
            round_ = asyncio.create_task(self.sample(), name="consumer-lag-sample")
            try:
                done, _ = await asyncio.wait({round_}, timeout=max(10.0, 2 * self.interval))
            except asyncio.CancelledError:
                round_.cancel()
                raise
            if not done:
                round_.cancel()
                log.info("lag sampling round abandoned")
            await asyncio.sleep(self.interval)

    async def sample(self) -> None:
        """One round of broker-side lag for every subscription (errors skip a round)."""
        for watched in self.consumers:
            kafka_consumer = watched.kafka_consumer()
            if kafka_consumer is None:
                continue  # not started yet
            try:
                async with asyncio.timeout(max(5.0, self.interval)):
                    lag = await broker_lag(kafka_consumer, watched.topics, dict(watched.held))
            except (KafkaError, AssertionError, OSError, TimeoutError) as error:
                # A rebalance or a broker hiccup: the next round reports again.
                log.info("lag not sampled", group=watched.group, error_type=type(error).__name__)
                continue
            for label, value in lag.items():
                self.metrics.lag.labels(label, watched.group).set(value)
            watched.progress.lag_sampled(sum(lag.values()), self.monotonic())


async def broker_lag(
    kafka_consumer: Any, topics: dict[str, str], held: dict[tuple[str, int], int]
) -> dict[str, int]:
    """Records not yet processed, from the partitions' end offsets (asked of the broker),
    summed per topic label over this replica's partitions (0 for a topic it holds none
    of). A partition's first unprocessed record is the first of the batch in the handler
    (``held``), else the consumer's position (prefetched records do not move it)."""
    lag = dict.fromkeys(topics.values(), 0)
    assigned = [tp for tp in kafka_consumer.assignment() if tp.topic in topics]
    if not assigned:
        return lag
    ends = await kafka_consumer.end_offsets(assigned)
    for tp in assigned:
        first = held.get((tp.topic, tp.partition))
        if first is None:
            first = await kafka_consumer.position(tp)
        lag[topics[tp.topic]] += max(0, ends[tp] - first)
    return lag
