"""Arbitrary bytes as DATA over a real SMTP connection: every message gets 250 and is on
the topic under the message_id the parser gives its bytes, or gets a clean SMTP error."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard_common.contract import INBOUND, MessageReceived, TopicNames
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_ingest_email.normalise import Delivery, to_inbound

pytestmark = pytest.mark.integration

DELIVERY = Delivery(account="help@support.example.com", tenant="acme",
                    mail_from="ana@example.com", transport="smtp")  # fmt: skip

nasty = st.one_of(
    st.binary(max_size=3000),
    st.lists(
        st.sampled_from(
            [b".", b"..", b".\r\n", b"\x00", b"\r", b"\n", b"\r\n", b"\xff\xfe", b"From: x",
             b"Content-Type: multipart/mixed; boundary=z", b"--z", b"--z--", b"=?utf-8?q?=C3?=",
             b"Subject: \xe9t\xe9", b"\r\n\r\n", b"a" * 1200]
        ),
        max_size=40,
    ).map(b"".join),
)  # fmt: skip


def as_received(data: bytes) -> bytes:
    """The bytes the server ends up with: smtplib dot-stuffs lines after any LF and ends
    the data with CRLF; the server splits on CRLF and removes one leading dot per line."""
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    lines = stuffed.split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


class TopicFollower:
    """Follows the inbound topic from the beginning and remembers every message_id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.seen: set[str] = set()

    async def wait_for(self, message_id: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while message_id not in self.seen and time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.seen.update(
                    MessageReceived.model_validate_json(r.value).message_id for r in records
                )
        return message_id in self.seen


@pytest.fixture
async def follower(infra: Any, topics: TopicNames) -> AsyncIterator[TopicFollower]:
    follower = TopicFollower(infra.kafka_bootstrap, topics.inbound)
    await follower.consumer.start()
    yield follower
    await follower.consumer.stop()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=nasty)
async def test_arbitrary_data_gets_250_and_its_event_or_a_clean_error(
    ingest_email: Any, smtp_send: Callable[..., Any], follower: TopicFollower, data: bytes
) -> None:
    # One service and one topic for all examples (function-scoped fixtures, on purpose).
    reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, data)
    if reply.code == 250:
        expected = to_inbound(as_received(data), DELIVERY, received_at=datetime.now(UTC))
        assert await follower.wait_for(expected.event.message_id)
    else:  # a clean, coded refusal: never a dropped connection or a crash
        assert reply.code in (451, 500, 552, 554), reply


async def test_every_accepted_fuzzed_message_is_on_the_topic(
    ingest_email: Any, smtp_send: Callable[..., Any], probe: TopicProbe
) -> None:
    samples = [
        b"",
        b"\x00\x01\x02 binary",
        b".\r\n..\r\n.leading dot",
        b"a" * 5000,
        b"Subject: \xe9t\xe9\r\n\r\n\xff\xfe",
        b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\r\nunterminated",
    ]
    expected = set()
    for data in samples:
        reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, data)
        assert reply.code == 250, reply
        event = to_inbound(as_received(data), DELIVERY, received_at=datetime.now(UTC)).event
        expected.add(event.message_id)
    records = await probe.read_events(INBOUND, count=len(expected), timeout=30, settle=1.0)
    published = {e.message_id for _, e in records if isinstance(e, MessageReceived)}
    assert published == expected
