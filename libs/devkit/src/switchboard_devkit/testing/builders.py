"""Builders of valid contract events for tests: override only what a test is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchboard_common.contract import Channel, MessageReceived, Sender, SenderKind

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
