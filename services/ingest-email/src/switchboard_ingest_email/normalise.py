"""From raw bytes and how they arrived to one ``support.message.received`` event. Pure.

``to_inbound`` is total (it never raises for any bytes) and deterministic: the same
bytes and delivery give the same event except ``received_at``, which the caller's clock
supplies. The event stays small enough for Kafka whatever the message: text fields are
cut at ``TEXT_LIMIT`` / ``FULL_TEXT_LIMIT`` bytes (and further if needed) with a note in
``parse_errors``; the raw store keeps every byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from switchboard_common.cloudevents import encode
from switchboard_common.contract import Channel, MessageReceived, Sender, SenderKind
from switchboard_common.raw_mail import raw_ref
from switchboard_ingest_email.headers import message_id_for
from switchboard_ingest_email.parsing import ParsedEmail, parse_email
from switchboard_ingest_email.text import split_reply

#: UTF-8 bytes of ``text`` (the new part) and ``full_text`` kept in the event.
TEXT_LIMIT = 128 * 1024
FULL_TEXT_LIMIT = 384 * 1024
#: Largest encoded event; Kafka's default max.request.size is 1 MiB.
MAX_EVENT_BYTES = 900 * 1024
#: Sender of a message with no usable From and a null envelope sender (RFC 2606 domain).
NULL_SENDER = "mailer-daemon@invalid"
#: Sender of a message with no usable From and no envelope sender (IMAP).
UNKNOWN_SENDER = "unknown-sender@invalid"

Transport = Literal["smtp", "imap"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a message reached the service."""

    #: The support address it was delivered to, lower-cased (the event's ``account``).
    account: str
    tenant: str | None
    #: SMTP envelope sender: ``""`` for the null reverse-path ``<>``, None if unknown.
    mail_from: str | None
    transport: Transport


@dataclass(frozen=True, slots=True)
class InboundEmail:
    """One message ready to publish: record key, event and the raw bytes' digest."""

    key: str
    event: MessageReceived
    raw_sha256: str


def _cut(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def _sender(parsed: ParsedEmail, mail_from: str | None) -> Sender:
    if parsed.from_address:
        return Sender(
            kind=SenderKind.EMAIL, value=parsed.from_address, display_name=parsed.from_name
        )
    envelope = (mail_from or "").strip("<> ").lower()
    if "@" in envelope:
        value = envelope
    else:
        value = NULL_SENDER if mail_from is not None and not envelope else UNKNOWN_SENDER
    return Sender(kind=SenderKind.EMAIL, value=value, display_name=None)


def to_inbound(
    raw: bytes,
    delivery: Delivery,
    *,
    received_at: datetime,
    raw_sha256: str | None = None,
) -> InboundEmail:
    """Parse ``raw`` and build its event. Never raises; problems go to ``parse_errors``."""
    digest = raw_sha256 or hashlib.sha256(raw).hexdigest()
    parsed = parse_email(raw, mail_from=delivery.mail_from)
    sender = _sender(parsed, delivery.mail_from)
    full_text = parsed.text
    new_part = split_reply(full_text)
    thread = (parsed.references[0] if parsed.references else None) or parsed.in_reply_to
    text_limit, full_limit = TEXT_LIMIT, FULL_TEXT_LIMIT
    while True:
        text, text_cut = _cut(new_part, text_limit)
        whole, whole_cut = _cut(full_text, full_limit)
        errors = list(parsed.errors)
        if text_cut or whole_cut:
            errors.append("text truncated; the raw message has all of it")
        event = MessageReceived(
            message_id=message_id_for(parsed.message_id, raw),
            channel=Channel.EMAIL,
            provider_message_id=parsed.message_id,
            provider_thread_id=thread or parsed.message_id,
            sender=sender,
            received_at=received_at,
            sent_at=parsed.sent_at,
            subject=parsed.subject,
            text=text,
            attachments=parsed.attachments,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            auto_submitted=parsed.auto_submitted,
            account=delivery.account,
            tenant=delivery.tenant,
            full_text=whole,
            raw_ref=raw_ref(digest),
            parse_errors=errors,
            kind="message",
            recipients=parsed.recipients,
        )
        if len(encode(event)) <= MAX_EVENT_BYTES or text_limit < 1024:
            return InboundEmail(key=f"email:{sender.value}", event=event, raw_sha256=digest)
        # Escaped characters or many attachments: make room and try again.
        text_limit, full_limit = text_limit // 2, full_limit // 2
