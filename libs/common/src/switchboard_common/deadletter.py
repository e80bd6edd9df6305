"""Dead letters: a record that cannot be processed goes to ``support.deadletter.v1``.

The dead letter keeps everything needed to replay the record after a fix: its topic,
partition and offset, the exact value (base64) and headers, and the reason. The record
key is the original key, so dead letters of one customer stay together.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from switchboard_common.contract.events import DeadLetter, DeadLetterHeader
from switchboard_common.contract.topics import DEADLETTER
from switchboard_common.kafka import EventPublisher, Outgoing

DeadLetterReason = str


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as consumed, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record given up on, with a bounded reason category and a readable error."""

    record: RawRecord
    reason: DeadLetterReason
    error: str


def dead_letter_for(
    rejection: Rejection,
    *,
    service: str,
    consumer_group: str | None,
    now: datetime | None = None,
) -> DeadLetter:
    """The ``support.deadletter`` payload for a rejected record (pure)."""
    record = rejection.record
    return DeadLetter.model_validate(
        {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "error": rejection.error[:4000],
            "value_b64": None if record.value is None else base64.b64encode(record.value).decode(),
            "headers": [
                DeadLetterHeader(
                    key=k, value_b64=None if v is None else base64.b64encode(v).decode()
                )
                for k, v in record.headers
            ],
            "consumer_group": consumer_group,
            "service": service,
            "failed_at": now or datetime.now(UTC),
            "reason": rejection.reason
            if rejection.reason
            in ("not_json", "invalid_payload", "bad_headers", "unknown_type", "processing_error")
            else "processing_error",
        },
        strict=False,
    )


class DeadLetterSink(Protocol):
    """Where rejected records go. ``publish`` returns only once they are durable."""

    async def publish(self, rejections: Sequence[Rejection]) -> None: ...


class DeadLetterPublisher:
    """Publishes rejections to the dead-letter topic and waits for Kafka's acknowledgement."""

    def __init__(self, publisher: EventPublisher, *, service: str, consumer_group: str | None):
        self._publisher = publisher
        self._service = service
        self._group = consumer_group

    async def publish(self, rejections: Sequence[Rejection]) -> None:
        """Durably publish every rejection (returns only once Kafka has them all)."""
        if not rejections:
            return
        now = datetime.now(UTC)
        await self._publisher.publish_all(
            Outgoing(
                topic=DEADLETTER,
                key=(r.record.key or b"").decode("utf-8", "replace"),
                event=dead_letter_for(
                    r, service=self._service, consumer_group=self._group, now=now
                ),
                event_id=f"{r.record.topic}/{r.record.partition}/{r.record.offset}",
                time=now,
            )
            for r in rejections
        )
