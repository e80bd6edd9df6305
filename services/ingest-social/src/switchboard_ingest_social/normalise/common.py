"""What every provider's normaliser returns, and the small helpers they share.

A normaliser is a pure function: the provider's validated payload, the account
directory and the time of receipt in, a ``Normalised`` out. It never raises for content
it does not understand: unknown update kinds are counted in ``dropped`` (the webhook is
still answered 200, so the provider does not retry forever), and a customer message of
a type we cannot read is still published with ``parse_errors`` saying what was lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from switchboard_common.contract import Attachment, Channel, MessageReceived


class Dropped(StrEnum):
    """Why an item of a webhook was not published (a bounded metric label)."""

    STATUS = "status"  # delivery/read receipts, typing indicators
    ECHO = "echo"  # our own outgoing messages reflected back
    UNKNOWN_KIND = "unknown_kind"  # update kinds this service does not route
    UNKNOWN_ACCOUNT = (
        "unknown_account"  # account not configured, INGEST_SOCIAL_UNKNOWN_ACCOUNTS=ignore
    )
    STANDBY = "standby"  # Meta handover: another app owns the conversation
    DELETED = "deleted"  # the customer unsent a message
    UNREACTION = "unreaction"  # a reaction was removed
    SYSTEM = "system"  # provider system notices (number changed, member joined, ...)
    BOT = "bot"  # a message from another bot (Telegram groups)


class MessageKind(StrEnum):
    """``MessageReceived.kind`` values this service publishes."""

    MESSAGE = "message"
    POSTBACK = "postback"
    INTERACTIVE = "interactive"
    STORY_REPLY = "story_reply"
    STORY_MENTION = "story_mention"
    EDIT = "edit"
    REACTION = "reaction"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One event to publish on ``support.inbound.v1`` under its identity key."""

    key: str
    message: MessageReceived


@dataclass(frozen=True)
class Watermark:
    """Every message sent to ``recipient`` from ``account`` at or before ``until``: what a
    Messenger receipt without message ids speaks of."""

    account: str
    recipient: str
    until: datetime


@dataclass(frozen=True)
class ProviderStatus:
    """What a provider says became of a message Switchboard sent (a WhatsApp status, a
    Messenger or Instagram receipt): ``delivered``, ``read`` or ``failed`` with the
    provider's code and text. It names the message (``provider_message_id``) or, for a
    receipt by time, the messages up to a ``watermark``."""

    channel: Channel
    provider_message_id: str | None
    status: str
    at: datetime | None
    error_code: str | None = None
    error_text: str | None = None
    watermark: Watermark | None = None


@dataclass
class Normalised:
    """The outcome of one webhook: what to publish, and what was dropped and why."""

    messages: list[Inbound] = field(default_factory=list)
    #: Items dropped, by (provider label, reason): a channel, or ``meta`` when a Meta
    #: webhook's object is not one of its three messaging products.
    dropped: Counter[tuple[str, Dropped]] = field(default_factory=Counter)
    #: Every (channel, account) the webhook spoke for, published or not: the shell
    #: checks each was signed with that account's secret.
    accounts: set[tuple[Channel, str]] = field(default_factory=set)
    #: Delivery statuses of sent messages (matched to replies by the shell, if any).
    statuses: list[ProviderStatus] = field(default_factory=list)

    def drop(self, provider: str, reason: Dropped, count: int = 1) -> None:
        self.dropped[(str(provider), reason)] += count


def from_unix(seconds: float | int | str | None) -> datetime | None:
    """A provider timestamp in seconds (number or numeric string) as an aware datetime."""
    if seconds is None:
        return None
    try:
        value = float(seconds)
    except ValueError:
        return None
    if not 0 <= value < 1e11:  # beyond year 5000: not seconds (or nonsense)
        return None
    return datetime.fromtimestamp(value, UTC)


def from_unix_ms(millis: float | int | str | None) -> datetime | None:
    """A provider timestamp in milliseconds as an aware datetime."""
    if millis is None:
        return None
    try:
        return from_unix(float(millis) / 1000)
    except ValueError:
        return None


def media(
    kind: str,
    *,
    content_type: str | None,
    provider_media_id: str | None,
    filename: str | None = None,
    size: int | None = None,
    sha256: str | None = None,
) -> Attachment:
    """An attachment delivered by reference (the bytes stay with the provider)."""
    return Attachment(
        filename=filename,
        content_type=content_type or DEFAULT_CONTENT_TYPES.get(kind, "application/octet-stream"),
        size=size if size is not None and size >= 0 else None,
        sha256=sha256,
        kind=kind,
        provider_media_id=provider_media_id,
    )


#: When a provider does not say the media type, the kind says at least this much.
DEFAULT_CONTENT_TYPES = {
    "image": "image/*",
    "video": "video/*",
    "audio": "audio/*",
    "sticker": "image/webp",
    "document": "application/octet-stream",
    "file": "application/octet-stream",
    "location": "application/geo+json",
    "contacts": "text/vcard",
}


def location_text(
    latitude: float, longitude: float, name: str | None = None, address: str | None = None
) -> str:
    """A shared location as text an agent can read and click (a ``geo:`` URI)."""
    label = " ".join(part for part in (name, address) if part)
    uri = f"geo:{latitude:.6f},{longitude:.6f}"
    return f"{label} {uri}" if label else uri


def join_text(*parts: str | None) -> str:
    """Non-empty parts on separate lines."""
    return "\n".join(part for part in parts if part)
