"""Batch consumption with dead letters, retries and commit-after-write.

``BatchConsumer`` is the one way Switchboard services consume Kafka:

1. every record of a batch is checked against the contract (CloudEvents headers, the
   ``ce_type`` belongs on the topic, JSON, payload schema); a record that fails goes to
   the dead-letter topic with the reason, and the rest of the batch carries on;
2. the service's handler gets the valid records as ``Delivery`` objects, in partition
   order, and may reject individual records itself (they are dead-lettered too);
3. a transient failure (database or broker unreachable) retries the whole batch with
   backoff (handlers are idempotent, so a retry is harmless); if it persists the batch
   is handed back unacknowledged and will be redelivered;
4. any other exception is isolated: the batch is re-run record by record and only the
   records that fail are dead-lettered;
5. offsets are committed (by FastStream, ``AckPolicy.NACK_ON_ERROR``) only after the
   handler's writes and the dead letters are acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

from aiokafka import ConsumerRecord
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import SkipValidation
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from switchboard_common.cloudevents import CloudEventAttributes, DecodeError, decode
from switchboard_common.contract.events import ContractModel
from switchboard_common.contract.topics import TOPICS_BY_NAME, TopicNames
from switchboard_common.deadletter import DeadLetterSink, RawRecord, Rejection
from switchboard_common.kafka import DESYNCHRONISED
from switchboard_common.logging import get_logger
from switchboard_common.metrics import ConsumerMetrics
from switchboard_common.progress import ConsumerWatch

log = get_logger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A consumed record that satisfies the contract."""

    record: RawRecord
    attributes: CloudEventAttributes
    event: ContractModel
    #: The contract name of the topic it came from (without any deployment prefix).
    contract_topic: str

    @property
    def key(self) -> str | None:
        return None if self.record.key is None else self.record.key.decode("utf-8", "replace")


#: A service's batch handler: processes deliveries idempotently and returns the ones it
#: could not process (with a reason), which are dead-lettered. Raising means "retry" for
#: transient errors and "isolate the bad record" for anything else.
Handler = Callable[[Sequence[Delivery]], Awaitable[Sequence[tuple[Delivery, str]]]]


def describe(error: BaseException) -> str:
    """A dead letter's reason: the error itself, not the task group that carried it."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


def error_types(error: BaseException) -> set[str]:
    """The class names of the errors a group holds (itself for a plain error): for logs,
    which must say what failed without the messages' data."""
    if isinstance(error, BaseExceptionGroup):
        return set().union(*(error_types(e) for e in error.exceptions))
    return {type(error).__name__}


class TransientFailureError(RuntimeError):
    """A batch could not be processed because a dependency stayed unreachable."""


class DependencyUnavailableError(Exception):
    """Raised by a handler whose own dependency (a provider, a relay) did not take the
    batch now: retried like an unreachable database, never dead-lettered."""


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying: the dependency may come back, the record is not at fault.

    A group (from a handler's task group) is transient when every error in it is: one
    poison record among them still needs isolating."""
    if isinstance(error, BaseExceptionGroup):
        return all(is_transient(e) for e in error.exceptions)
    if isinstance(error, ConnectionFailure | TimeoutError | ConnectionError):
        return True
    if isinstance(error, DependencyUnavailableError):
        return True
    if isinstance(error, DESYNCHRONISED):
        # The broker forgot our producer's sequence (it restarted): the publisher has
        # already started over with a new producer id, so the retry goes through.
        return True
    if isinstance(error, PyMongoError) and error.timeout:
        return True  # the server did not answer in time (e.g. ExecutionTimeout)
    if isinstance(error, OperationFailure):
        # FerretDB over SQLite answers a write that met another writer's lock after the
        # busy timeout with "database is locked"; the next attempt usually gets through.
        if "database is locked" in str(error) or "SQLITE_BUSY" in str(error):
            return True
        # FerretDB stopping answers the requests it was running with its cancelled
        # context (InternalError, code 1): an interrupted-at-shutdown, not a bad record.
        if error.code == 1 and "context canceled" in str(error):
            return True
        return error.has_error_label("RetryableWriteError") or error.code in {
            6,  # HostUnreachable
            7,  # HostNotFound
            89,  # NetworkTimeout
            91,  # ShutdownInProgress
            189,  # PrimarySteppedDown
            10107,  # NotWritablePrimary
            11600,  # InterruptedAtShutdown
            13435,  # NotPrimaryNoSecondaryOk
        }
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False)) or type(error).__name__ in {
            "KafkaTimeoutError",
            "KafkaConnectionError",
            "NodeNotReadyError",
            "RequestTimedOutError",
        }
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures; after ``give_up_after`` the batch is redelivered."""

    initial: float = 0.2
    factor: float = 2.0
    maximum: float = 5.0
    give_up_after: float = 60.0

    def delays(self) -> list[float]:
        delays, delay, total = [], self.initial, 0.0
        while total + delay <= self.give_up_after:
            delays.append(delay)
            total += delay
            delay = min(delay * self.factor, self.maximum)
        return delays


def raw_record(record: ConsumerRecord[Any, Any]) -> RawRecord:
    """Our library-independent view of an aiokafka record."""
    return RawRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
        timestamp_ms=record.timestamp or 0,
    )


@dataclass
class BatchConsumer:
    """Decode, dead-letter, handle and retry one batch at a time (see module docs)."""

    topics: TopicNames
    handler: Handler
    dead_letters: DeadLetterSink
    metrics: ConsumerMetrics
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def decode(self, records: Sequence[RawRecord]) -> tuple[list[Delivery], list[Rejection]]:
        """Split records into valid deliveries and rejections (pure)."""
        deliveries: list[Delivery] = []
        rejections: list[Rejection] = []
        for record in records:
            try:
                contract_topic = self.topics.contract_name(record.topic)
                attributes, event = decode(
                    TOPICS_BY_NAME[contract_topic], record.headers, record.value
                )
            except DecodeError as error:
                rejections.append(Rejection(record, error.reason, str(error)))
            except KeyError as error:
                rejections.append(Rejection(record, "unknown_type", str(error)))
            else:
                deliveries.append(Delivery(record, attributes, event, contract_topic))
        return deliveries, rejections

    async def __call__(self, records: Sequence[RawRecord]) -> None:
        """Process one batch; returns when its offsets may be committed.

        Raises ``TransientFailureError`` when a dependency stayed down for the whole retry
        budget: the caller must not commit, and the batch will be redelivered.
        """
        if not records:
            return
        started = time.perf_counter()
        topic_label = self.topic_label(records[0].topic)
        deliveries, rejections = self.decode(records)
        rejected_by_handler = await self._handle_with_retries(deliveries, topic_label)
        rejections.extend(
            Rejection(d.record, "processing_error", reason) for d, reason in rejected_by_handler
        )
        if rejections:
            await self._with_retries(lambda: self.dead_letters.publish(rejections), topic_label)
            for r in rejections:
                label = self.topic_label(r.record.topic)
                self.metrics.dead_letters.labels(label, r.reason).inc()
                self.metrics.records.labels(label, "dead_lettered").inc()
                log.warning(
                    "record dead-lettered",
                    topic=r.record.topic,
                    partition=r.record.partition,
                    offset=r.record.offset,
                    reason=r.reason,
                    error=r.error[:300],
                )
        self.metrics.records.labels(topic_label, "processed").inc(len(records) - len(rejections))
        self.metrics.batch_size.labels(topic_label).observe(len(records))
        self.metrics.batch_seconds.labels(topic_label).observe(time.perf_counter() - started)

    async def _handle_with_retries(
        self, deliveries: list[Delivery], topic_label: str
    ) -> list[tuple[Delivery, str]]:
        if not deliveries:
            return []
        try:
            return list(await self._with_retries(lambda: self.handler(deliveries), topic_label))
        except TransientFailureError:
            raise
        except Exception as error:  # noqa: BLE001 - isolate whichever record broke the batch
            if len(deliveries) == 1:
                return [(deliveries[0], describe(error))]
            log.warning(
                "batch failed, isolating the failing records",
                topic=deliveries[0].record.topic,
                size=len(deliveries),
                error_type=type(error).__name__,
                error_types=sorted(error_types(error)),
            )
        rejected: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            try:
                rejected.extend(
                    await self._with_retries(
                        lambda d=delivery: self.handler([d]),  # type: ignore[misc]
                        topic_label,
                    )
                )
            except TransientFailureError:
                raise
            except Exception as error:  # noqa: BLE001 - this record is the poison one
                rejected.append((delivery, describe(error)))
        return rejected

    async def _with_retries(self, action: Callable[[], Awaitable[_T]], topic_label: str) -> _T:
        delays = self.retry.delays()
        for attempt in range(len(delays) + 1):
            try:
                return await action()
            except Exception as error:
                if not is_transient(error):
                    raise
                if attempt == len(delays):
                    raise TransientFailureError(
                        f"gave up after {attempt + 1} attempts: {describe(error)}"
                    ) from error
                self.metrics.retries.labels(topic_label).inc()
                log.warning(
                    "transient failure, retrying batch",
                    topic=topic_label,
                    attempt=attempt + 1,
                    error_type=type(error).__name__,
                )
                await self.sleep(delays[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    def topic_label(self, deployed_topic: str) -> str:
        """The bounded metric label of a deployed topic: its contract name."""
        try:
            return self.topics.contract_name(deployed_topic)
        except KeyError:
            return "unknown"


def subscribe_batch(
    broker: KafkaBroker,
    consumer: BatchConsumer,
    *,
    topics: Sequence[str],
    group_id: str,
    max_records: int = 500,
    batch_timeout_ms: int = 50,
    auto_offset_reset: Literal["latest", "earliest", "none"] = "earliest",
    title: str | None = None,
    description: str | None = None,
    max_poll_interval_ms: int = 5 * 60 * 1000,
    session_timeout_ms: int = 10 * 1000,
    partition_assignment_strategy: Sequence[type[AbstractPartitionAssignor]] | None = None,
    watch: ConsumerWatch,
    name: str | None = None,
) -> None:
    """Register ``consumer`` on ``broker`` for the given contract topics.

    ``watch`` follows its progress and lag (``switchboard_common.progress``) under the
    metric label ``name``: the group id without deployment prefix, and without the
    replica suffix of a per-replica group (bounded labels).

    Offsets are committed after ``consumer`` returns; if it raises, FastStream seeks
    back to the batch's first offsets and the batch is redelivered.

    ``partition_assignment_strategy``: pass ``(RangePartitionAssignor,)`` to consume
    co-partitioned topics (same key, same partition count) so that partition *i* of
    every topic lands on the same replica; the default is aiokafka's round robin.
    """
    deployed = [consumer.topics(t) for t in topics]
    options: dict[str, Any] = {}
    if partition_assignment_strategy is not None:
        options["partition_assignment_strategy"] = tuple(partition_assignment_strategy)
    subscriber = broker.subscriber(
        *deployed,
        batch=True,
        group_id=group_id,
        max_records=max_records,
        batch_timeout_ms=batch_timeout_ms,
        auto_offset_reset=auto_offset_reset,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=title,
        description=description,
        max_poll_interval_ms=max_poll_interval_ms,
        session_timeout_ms=session_timeout_ms,
        **options,
    )

    watched = watch.watch(
        name or group_id.removeprefix(consumer.topics.prefix),
        {topic: consumer.topic_label(topic) for topic in deployed},
        lambda: getattr(subscriber, "consumer", None),
    )

    async def handle(events: Any, message: KafkaMessage) -> None:  # noqa: ARG001 - see below
        raw = message.raw_message
        records = [raw_record(r) for r in (raw if isinstance(raw, tuple) else (raw,))]
        firsts: dict[tuple[str, int], int] = {}
        for r in records:
            firsts.setdefault((r.topic, r.partition), r.offset)
        watch.batch_started(watched, firsts)
        committed = False
        try:
            await consumer(records)
            committed = True
        finally:
            watch.batch_finished(watched, committed=committed)

    # ``events`` declares what the batch carries, so FastStream's AsyncAPI document shows
    # these topics' payloads; it is not validated (SkipValidation) and not used: FastStream
    # must not decode bodies itself, since a record that is not JSON would fail the whole
    # batch before our per-record checks could dead-letter it.
    handle.__annotations__["events"] = SkipValidation[list[payload_type(topics)]]  # type: ignore[misc]
    subscriber(handle, decoder=_raw_records)


def payload_type(topics: Sequence[str]) -> Any:
    """The union of the contract models the given topics carry."""
    events: list[type[ContractModel]] = []
    for topic in topics:
        events += [e for e in TOPICS_BY_NAME[topic].events if e not in events]
    return events[0] if len(events) == 1 else Union[tuple(events)]  # noqa: UP007 - built at runtime


async def _raw_records(message: Any) -> Any:
    """A FastStream decoder that leaves records as they are (we decode per record)."""
    return message.raw_message
