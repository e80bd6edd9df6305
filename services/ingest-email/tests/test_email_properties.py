"""Property tests: no bytes crash the parser, and every DATA gets an event or a clean reply."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from switchboard_common.cloudevents import encode
from switchboard_common.contract import INBOUND, MessageReceived
from switchboard_common.kafka import Outgoing
from switchboard_ingest_email.admission import Admission
from switchboard_ingest_email.ingest import Ingestor
from switchboard_ingest_email.metrics import IngestEmailMetrics
from switchboard_ingest_email.normalise import MAX_EVENT_BYTES, Delivery, to_inbound
from switchboard_ingest_email.raw_store import InMemoryRawStore
from switchboard_ingest_email.recipients import RecipientPolicy
from switchboard_ingest_email.settings import IngestEmailSettings
from switchboard_ingest_email.smtp import REPLY_ACCEPTED, IngestHandler

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DELIVERY = Delivery(account="help@support.example.com", tenant=None, mail_from="a@b.c",
                    transport="smtp")  # fmt: skip

# Raw bytes, and bytes shaped like mail: header lines, MIME boundaries, encodings.
header_names = st.sampled_from(
    ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
     "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version",
     "Auto-Submitted", "X-Junk"]
)  # fmt: skip
header_values = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(
        [b"multipart/mixed; boundary=b", b"multipart/alternative; boundary=\"b\"",
         b"text/html; charset=x-unknown", b"base64", b"quoted-printable", b"<a@b>",
         b"=?utf-8?b?w6k=?=", b"=?bogus?q?x?=", b"attachment; filename*=utf-8''%E2%82",
         b"message/rfc822", b"multipart/report; report-type=delivery-status; boundary=b"]
    ),
)  # fmt: skip
body_lines = st.one_of(
    st.binary(max_size=120),
    st.sampled_from([b"--b", b"--b--", b"", b"Content-Type: text/plain", b"=C3=A9", b"w6k="]),
)
mail_like = st.builds(
    lambda headers, lines: (
        b"".join(n.encode() + b": " + v + b"\r\n" for n, v in headers)
        + b"\r\n"
        + b"\r\n".join(lines)
    ),
    st.lists(st.tuples(header_names, header_values), max_size=12),
    st.lists(body_lines, max_size=30),
)
any_data = st.one_of(st.binary(max_size=4096), mail_like)


@settings(max_examples=400, deadline=None)
@given(any_data)
def test_any_bytes_parse_into_a_valid_bounded_event(data: bytes) -> None:
    inbound = to_inbound(data, DELIVERY, received_at=T0)
    encoded = encode(inbound.event)
    assert len(encoded) <= MAX_EVENT_BYTES
    assert MessageReceived.model_validate_json(encoded) == inbound.event  # round-trips
    assert inbound.key == f"email:{inbound.event.sender.value}"
    assert inbound.event.message_id.startswith("email:")
    # Deterministic: the same bytes give the same event.
    assert to_inbound(data, DELIVERY, received_at=T0) == inbound


class RecordingPublisher:
    """Stands in for EventPublisher: keeps what would go to Kafka, or fails on demand."""

    def __init__(self) -> None:
        self.items: list[Outgoing] = []
        self.fail = False

    async def publish(self, items: Sequence[Outgoing]) -> None:
        if self.fail:
            raise ConnectionError("Kafka unreachable")
        self.items.extend(items)


def handler(publisher: RecordingPublisher, store: InMemoryRawStore) -> IngestHandler:
    metrics = IngestEmailMetrics.create(CollectorRegistry())
    ingestor = Ingestor(
        store=store, publisher=publisher, metrics=metrics, clock=lambda: T0, timeout=5,
        max_in_flight=4,
    )  # fmt: skip
    limits = IngestEmailSettings.model_construct().limits  # the defaults
    return IngestHandler(
        ingestor, RecipientPolicy.of(["support.example.com"]), metrics, Admission(limits)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_data, st.booleans())
def test_any_data_gets_250_with_one_event_or_a_clean_451(data: bytes, kafka_down: bool) -> None:
    publisher, store = RecordingPublisher(), InMemoryRawStore()
    publisher.fail = kafka_down
    reply = asyncio.run(handler(publisher, store).accept(data, DELIVERY))
    assert store.messages == {hashlib.sha256(data).hexdigest(): data}
    if kafka_down:
        assert reply.startswith("451 4.3.0 ")
        assert publisher.items == []
    else:
        assert reply == REPLY_ACCEPTED
        (item,) = publisher.items
        assert item.topic == INBOUND
        assert isinstance(item.event, MessageReceived)
        assert item.event_id == item.event.message_id
