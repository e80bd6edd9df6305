"""A visitor's message as the contract's ``support.message.received``. Pure.

Its ``message_id`` is derived from the site, the visitor and the widget's ``client_id``,
so a resend after a lost acknowledgement (a reload, a dropped connection) is the same
message: the same record key, CloudEvents id and ``message_id``, which the publisher and
every consumer deduplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from switchboard_common.contract import Channel, MessageReceived, Sender, SenderKind
from switchboard_webchat.tokens import Visitor


def message_id(site: str, visitor_id: str, client_id: str) -> str:
    digest = hashlib.sha256(f"{site}\x00{visitor_id}\x00{client_id}".encode()).hexdigest()
    return f"webchat-{digest[:40]}"


@dataclass(frozen=True)
class Inbound:
    """One record for ``support.inbound.v1``: keyed by the sender's identity."""

    key: str
    message: MessageReceived


def received(visitor: Visitor, client_id: str, text: str, now: datetime) -> Inbound:
    """The message a visitor sent, as the router reads it."""
    if visitor.email is not None:
        sender = Sender(kind=SenderKind.EMAIL, value=visitor.email, display_name=visitor.name)
    else:
        sender = Sender(
            kind=SenderKind.WEBCHAT_VISITOR, value=visitor.visitor_id, display_name=visitor.name
        )
    message = MessageReceived(
        message_id=message_id(visitor.site, visitor.visitor_id, client_id),
        channel=Channel.WEBCHAT,
        provider_message_id=client_id,
        provider_thread_id=visitor.visitor_id,
        sender=sender,
        received_at=now,
        sent_at=None,
        subject=None,
        text=text,
        account=visitor.site,
        # The site's hash proves the address to us as DMARC does for mail; an anonymous
        # visitor's id needs no check (this service issued it).
        sender_authenticated=True if visitor.email is not None else None,
    )
    return Inbound(visitor.identity, message)
