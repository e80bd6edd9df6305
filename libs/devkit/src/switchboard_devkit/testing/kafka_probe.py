"""Reading and writing topics in tests, as a frontend or a producer would."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from switchboard_common.cloudevents import decode, encode, event_headers
from switchboard_common.contract.events import ContractModel
from switchboard_common.contract.topics import TOPICS_BY_NAME, TopicNames
from switchboard_common.deadletter import RawRecord


class TopicProbe:
    """Reads whole topics from the beginning and publishes raw or contract records.

    No consumer group: partitions are assigned manually, so probes never disturb the
    consumer groups under test.
    """

    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> TopicProbe:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send_raw(
        self,
        contract_topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Publish an arbitrary record (for bad-input tests) and wait for the ack."""
        if self._producer is None:
            raise RuntimeError("use `async with TopicProbe(...)`")
        await self._producer.send_and_wait(
            self.topics(contract_topic),
            value=value,
            key=key.encode() if isinstance(key, str) else key,
            headers=list(headers),
        )

    async def send(
        self,
        contract_topic: str,
        event: ContractModel,
        *,
        key: str,
        event_id: str | None = None,
        time: datetime | None = None,
        source: str = "/tests",
    ) -> None:
        """Publish a contract event with CloudEvents headers and wait for the ack."""
        headers = event_headers(event, source=source, event_id=event_id, time=time)
        await self.send_raw(
            contract_topic,
            encode(event),
            key=key,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def read(
        self,
        contract_topic: str,
        *,
        count: int | None = None,
        timeout: float = 20.0,
        settle: float = 0.0,
    ) -> list[RawRecord]:
        """Every record of the topic from the beginning, in partition order.

        Waits until at least ``count`` records exist (or ``timeout``); with ``settle``,
        keeps reading that many seconds more to catch records that should not be there.
        """
        consumer = AIOKafkaConsumer(
            self.topics(contract_topic),
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,  # no group: every partition, from the beginning
            metadata_max_age_ms=1000,
        )
        await consumer.start()
        try:
            started = time.monotonic()
            deadline = started + timeout
            records: list[RawRecord] = []
            settle_until: float | None = None
            idle_since = time.monotonic()
            while True:
                now = time.monotonic()
                if count is not None and len(records) >= count and settle_until is None:
                    settle_until = now + settle
                if settle_until is not None and now >= settle_until:
                    break
                # Without a count: read until the topic has been quiet for a second.
                if count is None and now - idle_since >= min(1.0, timeout):
                    break
                if now >= deadline:
                    break
                batch = await consumer.getmany(timeout_ms=200)
                if batch:
                    idle_since = time.monotonic()
                for tp_records in batch.values():
                    records.extend(
                        RawRecord(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key,
                            value=r.value,
                            headers=tuple(r.headers or ()),
                            timestamp_ms=r.timestamp or 0,
                        )
                        for r in tp_records
                    )
            return records
        finally:
            await stop_consumer(consumer)

    async def read_events(
        self, contract_topic: str, **kwargs: Any
    ) -> list[tuple[RawRecord, ContractModel]]:
        """Like ``read`` but decoded against the contract (fails on a bad record)."""
        spec = TOPICS_BY_NAME[contract_topic]
        out = []
        for record in await self.read(contract_topic, **kwargs):
            _, event = decode(spec, record.headers, record.value)
            out.append((record, event))
        return out


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop ``consumer``, even while its broker is away.

    aiokafka's fetcher cancels its fetch tasks on close and then awaits them, so closing
    during a broker outage can raise *their* CancelledError in the caller. That one is
    swallowed; the caller's own cancellation still propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def unique(prefix: str = "t") -> str:
    """A short unique name for test isolation."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def utcnow() -> datetime:
    return datetime.now(UTC)
