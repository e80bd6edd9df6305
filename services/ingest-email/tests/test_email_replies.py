"""Agent replies by email (``replies.py``): the message composed, the relay settings, and
the sender against a real local relay and the real database — retries on a temporary
refusal, one submission per ``reply_id`` across redeliveries, a permanent refusal
dead-lettered with the relay's answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    OUTBOUND,
    REPLY_DELIVERIES,
    Channel,
    DeliveryStatus,
    ReplyDelivery,
    ReplySent,
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
from switchboard_devkit.servers.relay import LocalRelay
from switchboard_devkit.testing.builders import T0, delivery
from switchboard_devkit.testing.fakes import Published
from switchboard_ingest_email.replies import (
    REPLIES,
    RelayConfig,
    SmtpRelay,
    compose,
    is_own_reply,
    parse_from_addresses,
    reply_message_id,
)


def order(reply_id: str = "r-1", **overrides: Any) -> ReplyDelivery:
    fields: dict[str, Any] = {
        "reply_id": reply_id,
        "conversation_id": "co-1",
        "customer_id": "cu-1",
        "agent_id": "agent-7",
        "channel": Channel.EMAIL,
        "recipient": "ana@example.org",
        "account": "help@support.example.com",
        "text": "It arrives on Monday.",
        "subject": "Where is my order?",
        "references": ("first@mail.example.org", "<second@mail.example.org>"),
        "requested_at": T0,
        "ordered_at": T0 + timedelta(seconds=1),
        **overrides,
    }
    return ReplyDelivery.model_validate(fields)


# --------------------------------------------------------------------------- pure


@pytest.mark.unit
def test_the_reply_threads_on_the_customers_messages() -> None:
    message = compose(order())
    assert message["From"] == "help@support.example.com"
    assert message["To"] == "ana@example.org"
    assert message["Subject"] == "Re: Where is my order?"
    assert message["In-Reply-To"] == "<second@mail.example.org>"
    assert message["References"] == "<first@mail.example.org> <second@mail.example.org>"
    assert message["Message-ID"] == reply_message_id("r-1", "help@support.example.com")
    assert message.get_content().strip() == "It arrives on Monday."
    assert message["Auto-Submitted"] is None  # a person wrote it


@pytest.mark.unit
def test_the_message_id_is_the_replys_and_names_nobody() -> None:
    first = reply_message_id("r-1", "help@support.example.com")
    assert first == reply_message_id("r-1", "help@support.example.com")
    assert first != reply_message_id("r-2", "help@support.example.com")
    assert first.endswith("@support.example.com>")
    assert "r-1" not in first


@pytest.mark.unit
def test_an_html_reply_keeps_a_plain_text_part_and_a_subject_is_not_re_red() -> None:
    message = compose(order(html="<p>It arrives on <b>Monday</b>.</p>", subject="RE: Order"))
    assert message["Subject"] == "RE: Order"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


@pytest.mark.unit
def test_each_support_domain_replies_from_its_own_sender() -> None:
    senders = parse_from_addresses(
        "support.example.com=Example Shop, Support <care@support.example.com>;"
        " other.example=help@other.example"
    )
    configured = compose(order(), senders)
    assert configured["From"] == '"Example Shop, Support" <care@support.example.com>'
    # The customer wrote to help@: their answer goes there, so it threads as before.
    assert configured["Reply-To"] == "help@support.example.com"
    same = compose(order(account="help@other.example"), senders)
    assert (same["From"], same["Reply-To"]) == ("help@other.example", None)
    unlisted = compose(order(account="sales@elsewhere.example"), senders)
    assert (unlisted["From"], unlisted["Reply-To"]) == ("sales@elsewhere.example", None)


@pytest.mark.unit
@pytest.mark.parametrize(
    "spec", ["support.example.com", "support.example.com=Support", "=a@b.example", "x@y=a@b.c"]
)
def test_a_bad_sender_list_names_the_entry(spec: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"OUTBOUND_EMAIL_FROM: {spec!r}")):
        parse_from_addresses(spec)


@pytest.mark.unit
def test_switchboards_own_reply_is_recognised_by_its_message_id_in_the_headers() -> None:
    ours = compose(order(), {"support.example.com": "Support <care@support.example.com>"})
    raw = ours.as_bytes()
    assert is_own_reply(raw, {"support.example.com"})
    assert not is_own_reply(raw, {"other.example"})  # not a domain we send from
    # A customer quoting or forwarding our reply inline: the id is in the body only.
    quoted = b"Message-ID: <ana@example.org>\r\n\r\n" + raw
    assert not is_own_reply(quoted, {"support.example.com"})
    assert not is_own_reply(
        b"Message-ID: <reply.abc@support.example.com>\n\nhi", {"support.example.com"}
    )


@pytest.mark.unit
def test_relay_urls() -> None:
    plain = RelayConfig.parse("smtp://relay.example.com")
    assert (plain.host, plain.port, plain.tls, plain.username) == (
        "relay.example.com",
        587,
        "starttls",
        None,
    )
    tls = RelayConfig.parse("smtps://switchboard%40example.com@relay.example.com")
    assert (tls.port, tls.tls, tls.username) == (465, "implicit", "switchboard@example.com")
    assert RelayConfig.parse("smtp://127.0.0.1:2526?tls=none").tls == "none"
    for bad, says in [
        ("http://relay.example.com", "smtp://relay:587"),
        ("smtp://user:secret@relay.example.com", "OUTBOUND_SMTP_PASSWORD"),
        ("smtps://relay.example.com?tls=none", "drop ?tls=none"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            RelayConfig.parse(bad)


# --------------------------------------------------------------------------- against a relay


@pytest.fixture
def relay() -> Iterator[LocalRelay]:
    with LocalRelay.started() as running:
        yield running


@pytest.fixture
def records(mongo_client: AsyncMongoClient[Document], database_name: str) -> ReplyRecords:
    return ReplyRecords(mongo_client[database_name], REPLIES)


def sender_for(
    relay: LocalRelay,
    records: ReplyRecords,
    published: Published,
    registry: CollectorRegistry | None = None,
) -> ReplyDispatcher:
    config = RelayConfig.parse(f"{relay.url}?tls=none", timeout=10)
    return ReplyDispatcher(
        SmtpRelay(config),
        records,
        published,
        ReplyMetrics.create(registry or CollectorRegistry()),
        clock=lambda: T0 + timedelta(minutes=1),
        backoff=0.01,
    )


@pytest.mark.integration
async def test_a_busy_relay_is_retried_and_the_reply_goes_once(
    relay: LocalRelay, records: ReplyRecords
) -> None:
    relay.busy = 2
    published = Published()
    sender = sender_for(relay, records, published)
    batch = [delivery(order(), REPLY_DELIVERIES, key="co-1")]
    assert await sender(batch) == []
    assert len(relay.messages) == 1
    [status] = published.statuses()
    assert status.status is DeliveryStatus.SENT
    assert status.provider_message_id == relay.messages[0]["Message-ID"]
    sent = [i for i in published.items if i.topic == CONVERSATION_EVENTS]
    assert [type(i.event) for i in sent] == [ReplySent]

    # Redelivered (the offsets were not committed): nothing goes to the relay again, and
    # the same events are published again with the same ids.
    again = Published()
    assert await sender_for(relay, records, again)(batch) == []
    assert len(relay.messages) == 1
    assert [(i.topic, i.event_id) for i in again.items] == [
        (i.topic, i.event_id) for i in published.items
    ]
    assert {i.topic for i in again.items} == {OUTBOUND, CONVERSATION_EVENTS}


@pytest.mark.integration
async def test_a_relay_that_stays_busy_fails_the_batch_for_redelivery(
    relay: LocalRelay, records: ReplyRecords
) -> None:
    relay.busy = 100
    published = Published()
    batch = [delivery(order(), REPLY_DELIVERIES, key="co-1")]
    registry = CollectorRegistry()
    with pytest.raises(DeliveryUnavailableError, match="451"):
        await sender_for(relay, records, published, registry)(batch)
    assert relay.messages == []
    # Nothing stays counted in hand: the batch goes back to the topic.
    assert registry.get_sample_value("switchboard_outbound_queued", {"channel": "email"}) == 0
    assert published.statuses() == []

    relay.busy = 0  # the relay is back; the batch comes again
    assert await sender_for(relay, records, published)(batch) == []
    assert len(relay.messages) == 1
    assert [s.status for s in published.statuses()] == [DeliveryStatus.SENT]


class HeldRelay:
    """A relay that answers the first attempt "later" and holds the second until let go,
    so the test can look at what is in hand meanwhile."""

    channels = frozenset({Channel.EMAIL})

    def __init__(self) -> None:
        self.calls = 0
        self.retrying = asyncio.Event()
        self.let_go = asyncio.Event()

    def planned_id(self, order: ReplyDelivery) -> str | None:  # noqa: ARG002
        return None

    async def send_all(self, orders: Sequence[ReplyDelivery]) -> list[Outcome]:
        self.calls += 1
        if self.calls == 1:
            return [Unavailable("451 busy") for _ in orders]
        self.retrying.set()
        await self.let_go.wait()
        return [Accepted(f"<{o.reply_id}@x>") for o in orders]


@pytest.mark.integration
async def test_replies_in_hand_are_counted_as_queued_until_the_relay_takes_them(
    records: ReplyRecords,
) -> None:
    registry = CollectorRegistry()
    relay = HeldRelay()
    sender = ReplyDispatcher(
        relay, records, Published(), ReplyMetrics.create(registry), clock=lambda: T0, backoff=0
    )

    def queued() -> float | None:
        return registry.get_sample_value("switchboard_outbound_queued", {"channel": "email"})

    batch = [delivery(order(f"r-q{i}"), REPLY_DELIVERIES, key="co-1", offset=i) for i in (0, 1)]
    sending = asyncio.create_task(sender(batch))
    await asyncio.wait_for(relay.retrying.wait(), timeout=30)  # bounds a hang only
    assert queued() == 2, "both wait for the second attempt"
    relay.let_go.set()
    assert await sending == []
    assert queued() == 0


@pytest.mark.integration
async def test_a_reply_the_relay_refuses_fails_with_its_answer_and_is_dead_lettered(
    relay: LocalRelay, records: ReplyRecords
) -> None:
    published = Published()
    refused = delivery(
        order("r-9", recipient="refuse.ana@example.org"), REPLY_DELIVERIES, key="co-1"
    )
    fine = delivery(order("r-10"), REPLY_DELIVERIES, key="co-1", offset=1)
    rejected = await sender_for(relay, records, published)([refused, fine])
    assert rejected == [(refused, "reply refused: smtp_550 5.1.1 No such mailbox")]
    by_reply = {s.reply_id: s for s in published.statuses()}
    assert by_reply["r-9"].status is DeliveryStatus.FAILED
    assert by_reply["r-9"].error is not None
    assert by_reply["r-9"].error.code == "smtp_550"
    assert by_reply["r-10"].status is DeliveryStatus.SENT
    assert [m["To"] for m in relay.messages] == ["ana@example.org"]

    # Redelivered: the refusal is published again but neither retried nor dead-lettered
    # a second time.
    again = Published()
    assert await sender_for(relay, records, again)([refused, fine]) == []
    assert len(relay.messages) == 1


@pytest.mark.integration
async def test_a_reply_whose_attempt_died_mid_send_goes_again_with_the_same_message_id(
    relay: LocalRelay, records: ReplyRecords
) -> None:
    the_order = order("r-20")
    message_id = reply_message_id("r-20", "help@support.example.com")
    # What a process that died after recording the attempt leaves behind.
    await records.start([(ReplyRecord("r-20", "sending", T0, message_id), the_order)])
    published = Published()
    assert (
        await sender_for(relay, records, published)(
            [delivery(the_order, REPLY_DELIVERIES, key="co-1")]
        )
        == []
    )
    assert [m["Message-ID"] for m in relay.messages] == [message_id]
    assert [s.status for s in published.statuses()] == [DeliveryStatus.SENT]
