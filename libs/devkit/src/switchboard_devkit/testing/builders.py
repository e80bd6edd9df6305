"""Builders of valid contract events for tests: override only what a test is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    Channel,
    ContractModel,
    MessageReceived,
    Sender,
    SenderKind,
)
from switchboard_common.deadletter import RawRecord

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def message(message_id: str = "m-1", **overrides: Any) -> MessageReceived:
    """A valid inbound email message."""
    fields: dict[str, Any] = {
        "message_id": message_id,
        "channel": Channel.EMAIL,
        "provider_message_id": f"<{message_id}@mail.example.com>",
        "provider_thread_id": None,
        "sender": Sender(kind=SenderKind.EMAIL, value="ana@example.com", display_name="Ana"),
        "received_at": T0,
        "sent_at": None,
        "subject": "Order 1234 has not arrived",
        "text": "Hello, my order has not arrived.",
    }
    fields.update(overrides)
    return MessageReceived.model_validate(fields)


def delivery(
    event: ContractModel, topic: str, *, key: str, offset: int = 0, partition: int = 0
) -> Delivery:
    """A consumed record of ``event`` as a batch handler receives it (its CloudEvents id
    ``ce-<key>-<offset>``)."""
    record = RawRecord(
        topic=topic, partition=partition, offset=offset, key=key.encode(), value=b"{}", headers=()
    )
    attributes = CloudEventAttributes(
        id=f"ce-{key}-{offset}", type=event.ce_type, source="/tests", time=T0
    )
    return Delivery(record, attributes, event, topic)
