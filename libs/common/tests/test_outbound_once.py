"""Each ``reply_id`` is handed to a provider at most once (``switchboard_common.outbound``),
on the real database: a hand-over that died before its answer is not repeated when the
provider takes no idempotency key, while replies the provider answered "later" are sent
again on redelivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    OUTBOUND,
    REPLY_DELIVERIES,
    Channel,
    DeliveryStatus,
    ReplyDelivery,
)
from switchboard_common.mongo import Document
from switchboard_common.outbound import (
    Accepted,
    DeliveryUnavailableError,
    Outcome,
    ReplyDispatcher,
    ReplyMetrics,
    Unavailable,
)
from switchboard_common.outbound_records import ReplyRecord, ReplyRecords
from switchboard_devkit.testing.builders import T0, delivery
from switchboard_devkit.testing.fakes import Published

pytestmark = pytest.mark.integration


class Provider:
    """A send API without idempotency keys: answers "later" ``busy`` times, then takes."""

    channels = frozenset({Channel.TELEGRAM})

    def __init__(self, busy: int = 0) -> None:
        self.busy = busy
        self.sent: list[str] = []

    def planned_id(self, order: ReplyDelivery) -> str | None:  # noqa: ARG002
        return None

    async def send_all(self, orders: Sequence[ReplyDelivery]) -> list[Outcome]:
        if self.busy:
            self.busy -= 1
            return [Unavailable("429", retry_after=0) for _ in orders]
        self.sent += [o.reply_id for o in orders]
        return [Accepted(f"msg-{o.reply_id}") for o in orders]


def order(reply_id: str) -> ReplyDelivery:
    return ReplyDelivery(
        reply_id=reply_id,
        conversation_id="co-1",
        customer_id="cu-1",
        agent_id="agent-7",
        channel=Channel.TELEGRAM,
        recipient="4242",
        account="bot-1",
        text="It arrives on Monday.",
        requested_at=T0,
        ordered_at=T0 + timedelta(seconds=1),
    )


@pytest.fixture
def records(mongo_client: AsyncMongoClient[Document], database_name: str) -> ReplyRecords:
    return ReplyRecords(mongo_client[database_name], "test_replies")


def dispatcher(provider: Provider, records: ReplyRecords, published: Published) -> ReplyDispatcher:
    return ReplyDispatcher(
        provider,
        records,
        published,
        ReplyMetrics.create(CollectorRegistry()),
        clock=lambda: T0 + timedelta(minutes=1),
        backoff=0,
    )


async def test_a_hand_over_that_died_unanswered_is_not_repeated(records: ReplyRecords) -> None:
    the_order = order("r-1")
    # What a process killed while the provider had the request leaves behind.
    await records.start([(ReplyRecord("r-1", "sending", T0), the_order)])
    provider, published = Provider(), Published()
    batch = [delivery(the_order, REPLY_DELIVERIES, key="co-1")]
    rejected = await dispatcher(provider, records, published)(batch)
    assert provider.sent == [], "never handed over a second time"
    [status] = published.statuses()
    assert status.status is DeliveryStatus.FAILED
    assert status.error is not None
    assert status.error.code == "delivery_uncertain"
    assert [reason for _, reason in rejected] == [
        f"reply refused: delivery_uncertain {status.error.text}"
    ]
    # Redelivered again: the same status, no second dead letter, still not sent.
    again = Published()
    assert await dispatcher(provider, records, again)(batch) == []
    assert [(i.topic, i.event_id) for i in again.items] == [
        (i.topic, i.event_id) for i in published.items
    ]
    assert {i.topic for i in again.items} == {OUTBOUND}
    assert provider.sent == []


async def test_replies_the_provider_answered_later_are_sent_on_redelivery(
    records: ReplyRecords,
) -> None:
    provider, published = Provider(busy=3), Published()  # every attempt of the first batch
    batch = [delivery(order(f"r-{i}"), REPLY_DELIVERIES, key="co-1", offset=i) for i in (2, 3)]
    with pytest.raises(DeliveryUnavailableError):
        await dispatcher(provider, records, published)(batch)
    stored = await records.get(["r-2", "r-3"])
    assert {r.status for r in stored.values()} == {"waiting"}
    assert await dispatcher(provider, records, published)(batch) == []
    assert provider.sent == ["r-2", "r-3"]
    assert {s.status for s in published.statuses()} == {DeliveryStatus.SENT}
