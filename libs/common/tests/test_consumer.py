"""The batch consumer's rules, with an in-memory dead-letter sink (no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pymongo.errors import AutoReconnect, OperationFailure

from switchboard_common.cloudevents import encode, event_headers
from switchboard_common.consumer import (
    BatchConsumer,
    Delivery,
    RetryPolicy,
    TransientFailureError,
    describe,
    is_transient,
)
from switchboard_common.contract import MessageReceived, TopicNames
from switchboard_common.deadletter import RawRecord, dead_letter_for
from switchboard_common.metrics import ConsumerMetrics
from switchboard_common.outbound import DeliveryUnavailableError
from switchboard_devkit.testing.builders import message
from switchboard_devkit.testing.fakes import InMemoryDeadLetters

pytestmark = pytest.mark.unit
TOPICS = TopicNames("t.")


def record(offset: int, value: bytes | None, *, ce_type: str | None = None) -> RawRecord:
    headers = event_headers(message(), source="/tests")
    if ce_type:
        headers["ce_type"] = ce_type
    return RawRecord(
        topic=TOPICS.inbound,
        partition=0,
        offset=offset,
        key=b"email:ana@example.com",
        value=value,
        headers=tuple((k, v.encode()) for k, v in headers.items()),
    )


def good(offset: int) -> RawRecord:
    return record(offset, encode(message(f"m-{offset}")))


class Recorder:
    """A handler that records what it saw and fails as told."""

    def __init__(self, *, poison: set[str] = frozenset(), transient_failures: int = 0):  # type: ignore[assignment]
        self.seen: list[str] = []
        self.calls = 0
        self.poison = poison
        self.transient_failures = transient_failures
        self.rejected: set[str] = set()

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        self.calls += 1
        if self.transient_failures:
            self.transient_failures -= 1
            raise AutoReconnect("connection refused")
        ids = [d.event.message_id for d in deliveries if isinstance(d.event, MessageReceived)]
        if any(i in self.poison for i in ids):
            raise KeyError("a bug that only this record triggers")
        rejected = [
            (d, "refused by the service")
            for d, i in zip(deliveries, ids, strict=True)
            if i in self.rejected
        ]
        self.seen.extend(i for i in ids if i not in self.rejected)
        return rejected


async def no_sleep(_: float) -> None:
    return None


def consumer(handler: Recorder, sink: InMemoryDeadLetters, **retry: float) -> BatchConsumer:
    return BatchConsumer(
        topics=TOPICS,
        handler=handler,
        dead_letters=sink,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        retry=RetryPolicy(**retry) if retry else RetryPolicy(),
        sleep=no_sleep,
    )


async def test_valid_records_reach_the_handler_in_order() -> None:
    handler, sink = Recorder(), InMemoryDeadLetters()
    await consumer(handler, sink)([good(i) for i in range(5)])
    assert handler.seen == [f"m-{i}" for i in range(5)]
    assert sink.rejections == []


async def test_bad_records_are_dead_lettered_and_the_batch_carries_on() -> None:
    handler, sink = Recorder(), InMemoryDeadLetters()
    batch = [
        good(0),
        record(1, b"not json at all"),
        record(2, encode(message()), ce_type="support.agent.upserted"),
        record(3, b'{"message_id": "incomplete"}'),
        good(4),
    ]
    await consumer(handler, sink)(batch)
    assert handler.seen == ["m-0", "m-4"]
    assert [(r.record.offset, r.reason) for r in sink.rejections] == [
        (1, "not_json"),
        (2, "unknown_type"),
        (3, "invalid_payload"),
    ]


async def test_a_record_that_crashes_the_handler_is_isolated() -> None:
    handler, sink = Recorder(poison={"m-2"}), InMemoryDeadLetters()
    await consumer(handler, sink)([good(i) for i in range(5)])
    assert handler.seen == ["m-0", "m-1", "m-3", "m-4"]
    (rejection,) = sink.rejections
    assert rejection.record.offset == 2
    assert rejection.reason == "processing_error"
    assert "KeyError" in rejection.error


async def test_records_the_handler_refuses_are_dead_lettered_with_its_reason() -> None:
    handler, sink = Recorder(), InMemoryDeadLetters()
    handler.rejected = {"m-1"}
    await consumer(handler, sink)([good(0), good(1)])
    assert handler.seen == ["m-0"]
    assert [(r.record.offset, r.error) for r in sink.rejections] == [(1, "refused by the service")]


async def test_transient_failures_are_retried_then_succeed() -> None:
    handler, sink = Recorder(transient_failures=3), InMemoryDeadLetters()
    await consumer(handler, sink)([good(0), good(1)])
    assert handler.seen == ["m-0", "m-1"]
    assert handler.calls == 4
    assert sink.rejections == []


async def test_a_dependency_that_stays_down_hands_the_batch_back_uncommitted() -> None:
    handler, sink = Recorder(transient_failures=1000), InMemoryDeadLetters()
    with pytest.raises(TransientFailureError):
        await consumer(handler, sink, initial=0.1, give_up_after=1.0)([good(0)])
    assert handler.seen == []
    assert sink.rejections == []  # nothing is dead-lettered for an outage


async def test_replies_a_provider_will_not_take_are_handed_back_not_dead_lettered() -> None:
    """The reply dispatcher's outage (a relay that stays away) is an outage, not poison."""

    async def provider_away(deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        raise DeliveryUnavailableError("2 replies not taken after 3 attempts: 451")

    sink = InMemoryDeadLetters()
    away = BatchConsumer(
        topics=TOPICS,
        handler=provider_away,
        dead_letters=sink,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        retry=RetryPolicy(initial=0.1, give_up_after=1.0),
        sleep=no_sleep,
    )
    with pytest.raises(TransientFailureError):
        await away([good(0), good(1)])
    assert sink.rejections == []


def test_retry_delays_back_off_and_respect_the_budget() -> None:
    delays = RetryPolicy(initial=0.2, factor=2, maximum=1.0, give_up_after=3.0).delays()
    assert delays == [0.2, 0.4, 0.8, 1.0]
    assert sum(delays) <= 3.0


def test_transient_errors_are_told_apart_from_bugs() -> None:
    assert is_transient(AutoReconnect("down"))
    assert is_transient(TimeoutError())
    assert not is_transient(KeyError("bug"))
    assert not is_transient(ValueError("bad data"))
    busy = "database is locked (5) (SQLITE_BUSY)"  # FerretDB v1: another writer's turn
    assert is_transient(OperationFailure(busy, code=1))
    assert not is_transient(OperationFailure("unknown operator: $foo", code=2))
    # FerretDB stopping mid-insert (seen in the database-restart fault test).
    stopping = "[msg_insert.go:168 handler.(*Handler).MsgInsert] [db.go:134] context canceled"
    assert is_transient(OperationFailure(stopping, code=1))
    assert not is_transient(OperationFailure("document is too large", code=1))
    # The broker restarted and forgot the producer; the publisher already started over.
    assert is_transient(OutOfOrderSequenceNumber())


def test_a_task_group_is_transient_only_when_every_error_in_it_is() -> None:
    down = AutoReconnect("down")
    assert is_transient(ExceptionGroup("stage", [down, ExceptionGroup("inner", [TimeoutError()])]))
    assert not is_transient(ExceptionGroup("stage", [down, KeyError("bug")]))
    assert describe(ExceptionGroup("stage", [KeyError("bug")])) == "KeyError: 'bug'"


async def test_a_transient_failure_inside_a_task_group_is_retried_not_dead_lettered() -> None:
    class Grouped(Recorder):
        async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
            async with asyncio.TaskGroup() as group:
                group.create_task(super().__call__(deliveries))
            return []

    handler, sink = Grouped(transient_failures=2), InMemoryDeadLetters()
    await consumer(handler, sink)([good(0), good(1)])
    assert handler.seen == ["m-0", "m-1"]
    assert sink.rejections == []


def test_dead_letter_payload_keeps_the_exact_bytes_and_coordinates() -> None:
    from switchboard_common.deadletter import Rejection

    raw = record(7, b"\x00\xffbinary")
    letter = dead_letter_for(
        Rejection(raw, "not_json", "value is not valid JSON"), service="router", consumer_group="g"
    )
    assert (letter.topic, letter.partition, letter.offset) == (TOPICS.inbound, 0, 7)
    assert letter.value_b64 == "AP9iaW5hcnk="
    assert letter.reason == "not_json"
    assert {h.key for h in letter.headers} >= {"ce_type", "ce_id"}


KINDS = st.sampled_from(["good", "not_json", "wrong_type", "invalid", "poison", "refused"])


@settings(max_examples=150, deadline=None)
@given(st.lists(KINDS, min_size=1, max_size=30))
async def test_every_record_is_either_processed_or_dead_lettered_exactly_once(
    kinds: list[str],
) -> None:
    handler, sink = Recorder(), InMemoryDeadLetters()
    batch: list[RawRecord] = []
    for offset, kind in enumerate(kinds):
        if kind == "not_json":
            batch.append(record(offset, b"{{{"))
        elif kind == "wrong_type":
            batch.append(record(offset, encode(message()), ce_type="support.offer.accepted"))
        elif kind == "invalid":
            batch.append(record(offset, b'{"channel": "fax"}'))
        else:
            batch.append(good(offset))
            if kind == "poison":
                handler.poison = {*handler.poison, f"m-{offset}"}
            if kind == "refused":
                handler.rejected.add(f"m-{offset}")
    await consumer(handler, sink)(batch)
    processed = {int(i.split("-")[1]) for i in handler.seen}
    dead = [r.record.offset for r in sink.rejections]
    assert len(dead) == len(set(dead)), "a record was dead-lettered twice"
    assert processed.isdisjoint(dead)
    assert processed | set(dead) == set(range(len(kinds)))
    assert processed == {o for o, k in enumerate(kinds) if k == "good"}
