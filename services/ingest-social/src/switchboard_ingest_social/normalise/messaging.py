"""Messenger (``object: page``) and Instagram (``object: instagram``) messaging webhooks.

Both use the Messenger Platform's shape::

    {"object": "page", "entry": [{"id": "<page id>", "time": 1458692752478,
      "messaging": [{"sender": {"id": "<PSID>"}, "recipient": {"id": "<page id>"},
                     "timestamp": 1458692752478,
                     "message": {"mid": "m_...", "text": "hello"}}]}]}

Instagram: ``entry.id`` is the Instagram professional account, ``sender.id`` the IGSID.

Receipts of the page's own messages come from the person (``sender``) to the page::

    Messenger  "delivery": {"mids": ["m_..."], "watermark": 1458668856253}
               (every message sent at or before the watermark was delivered; ``mids``
               may be absent)
               "read": {"watermark": 1458668856253}
               (every message sent at or before the watermark was read)
    Instagram  "read": {"mid": "<the message seen>"} (no delivery receipts)

Decisions: messages (text, attachments, quick replies, replies) are published;
``postback`` as ``kind=postback``; Instagram story replies as ``kind=story_reply`` and
story mentions as ``kind=story_mention``; ``reaction`` (react) as ``kind=reaction``
and unreact dropped; ``message_edit`` as ``kind=edit``; ``delivery`` and ``read`` become
``ProviderStatus`` values, by message id where the receipt names messages and by
``Watermark`` (the person, the page, the time) where it does not, for the shell to match
with Switchboard's replies (a receipt naming neither is counted as a status and
dropped); echoes of our own messages (``is_echo``) are counted and dropped; unsent messages
(``is_deleted``) and ``standby`` (another app owns the thread) are dropped; any other
event (referral, optin, handover, feed/comment changes) is counted as unknown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from switchboard_common.contract import Attachment, Channel, MessageReceived, Sender, SenderKind
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise.common import (
    Dropped,
    Inbound,
    MessageKind,
    Normalised,
    ProviderStatus,
    Watermark,
    from_unix_ms,
    join_text,
    location_text,
    media,
)

OBJECTS = {"page": Channel.MESSENGER, "instagram": Channel.INSTAGRAM}
_SENDER_KINDS = {Channel.MESSENGER: SenderKind.PSID, Channel.INSTAGRAM: SenderKind.IGSID}
_MEDIA_KINDS = {"image": "image", "video": "video", "audio": "audio", "file": "document"}
_ID = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.:-]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Party(_Model):
    id: str = _ID


class Coordinates(_Model):
    lat: float
    long: float


class AttachmentPayload(_Model):
    url: str | None = None
    title: str | None = None
    sticker_id: int | str | None = None
    coordinates: Coordinates | None = None


class MsgAttachment(_Model):
    type: str
    payload: AttachmentPayload | None = None


class QuickReply(_Model):
    payload: str | None = None


class Story(_Model):
    id: str | None = None
    url: str | None = None


class ReplyTo(_Model):
    mid: str | None = None
    story: Story | None = None


class Message(_Model):
    mid: str = Field(min_length=1, max_length=512)
    text: str | None = None
    attachments: list[MsgAttachment] = Field(default_factory=list)
    quick_reply: QuickReply | None = None
    reply_to: ReplyTo | None = None
    is_echo: bool = False
    is_deleted: bool = False
    is_unsupported: bool = False


class Postback(_Model):
    mid: str | None = None
    title: str | None = None
    payload: str | None = None


class Reaction(_Model):
    mid: str | None = None
    action: str | None = None
    reaction: str | None = None
    emoji: str | None = None


class MessageEdit(_Model):
    mid: str = Field(min_length=1, max_length=512)
    text: str | None = None
    num_edit: int = 0


class Delivery(_Model):
    """A Messenger delivery receipt."""

    #: The messages delivered (may be absent).
    mids: list[str] = Field(default_factory=list, max_length=1000)
    #: Unix ms: every message sent at or before it was delivered.
    watermark: int | None = None


class Read(_Model):
    """A read receipt: Messenger's by time, Instagram's by message."""

    #: Unix ms: every message sent at or before it was read (Messenger).
    watermark: int | None = None
    #: The message seen (Instagram).
    mid: str | None = Field(None, min_length=1, max_length=512)


class MessagingEvent(_Model):
    sender: Party
    recipient: Party
    timestamp: int | None = None
    message: Message | None = None
    postback: Postback | None = None
    reaction: Reaction | None = None
    message_edit: MessageEdit | None = None
    delivery: Delivery | None = None
    read: Read | None = None


class MessagingEntry(_Model):
    id: str = _ID
    time: int | None = None
    messaging: list[MessagingEvent] = Field(default_factory=list)
    standby: list[dict[str, Any]] = Field(default_factory=list)
    changes: list[dict[str, Any]] = Field(default_factory=list)


class MessagingWebhook(_Model):
    """A Messenger or Instagram messaging webhook POST."""

    object: Literal["page", "instagram"]
    entry: list[MessagingEntry]


def normalise_messaging(
    payload: dict[str, Any], directory: AccountDirectory, received_at: datetime
) -> Normalised:
    """Normalise a Messenger/Instagram webhook; raises ``ValidationError`` if malformed."""
    webhook = MessagingWebhook.model_validate(payload)
    channel = OBJECTS[webhook.object]
    out = Normalised()
    for entry in webhook.entry:
        if entry.standby:
            out.drop(channel, Dropped.STANDBY, len(entry.standby))
        if entry.changes:
            out.drop(channel, Dropped.UNKNOWN_KIND, len(entry.changes))
        if entry.messaging:
            out.accounts.add((channel, entry.id))
        for event in entry.messaging:
            result = _event(channel, entry.id, event, directory, received_at)
            if isinstance(result, Dropped):
                out.drop(channel, result)
            elif isinstance(result, list):
                out.statuses.extend(result)
            else:
                out.messages.append(result)
    return out


def _event(
    channel: Channel,
    account: str,
    event: MessagingEvent,
    directory: AccountDirectory,
    received_at: datetime,
) -> Inbound | Dropped | list[ProviderStatus]:
    if event.message is not None and event.message.is_echo:
        return Dropped.ECHO
    if event.delivery is not None or event.read is not None:
        return receipts(channel, account, event) or Dropped.STATUS
    if not directory.admits(channel, account):
        return Dropped.UNKNOWN_ACCOUNT
    build = _Builder(channel, account, event, directory, received_at)
    if event.message is not None:
        if event.message.is_deleted:
            return Dropped.DELETED
        return build.message(event.message)
    if event.postback is not None:
        return build.postback(event.postback)
    if event.reaction is not None:
        if event.reaction.action == "unreact":
            return Dropped.UNREACTION
        return build.reaction(event.reaction)
    if event.message_edit is not None:
        return build.edit(event.message_edit)
    return Dropped.UNKNOWN_KIND


def receipts(channel: Channel, account: str, event: MessagingEvent) -> list[ProviderStatus]:
    """The statuses a delivery or read receipt gives the page's messages to its sender."""
    at = from_unix_ms(event.timestamp)

    def receipt(status: str, mids: list[str], watermark: int | None) -> list[ProviderStatus]:
        # The messages named are the receipt's news; its watermark says the same of them
        # and of what came before, which earlier receipts reported.
        if mids:
            return [ProviderStatus(channel, mid, status, at) for mid in mids]
        until = from_unix_ms(watermark)
        if until is None:
            return []
        mark = Watermark(account, event.sender.id, until)
        return [ProviderStatus(channel, None, status, at, watermark=mark)]

    found: list[ProviderStatus] = []
    if event.delivery is not None:
        found += receipt("delivered", event.delivery.mids, event.delivery.watermark)
    if event.read is not None:
        found += receipt("read", [event.read.mid] if event.read.mid else [], event.read.watermark)
    return found


class _Builder:
    """Builds the ``MessageReceived`` of one messaging event."""

    def __init__(
        self,
        channel: Channel,
        account: str,
        event: MessagingEvent,
        directory: AccountDirectory,
        received_at: datetime,
    ) -> None:
        self.channel = channel
        self.account = account
        self.event = event
        self.customer = event.sender.id
        self.tenant = directory.tenant(channel, account)
        self.received_at = received_at

    def _inbound(
        self,
        *,
        message_id: str,
        provider_message_id: str | None,
        text: str,
        kind: MessageKind,
        attachments: list[Attachment] | None = None,
        reply_to: str | None = None,
        payload: str | None = None,
        parse_errors: list[str] | None = None,
    ) -> Inbound:
        prefix = self.channel.value
        return Inbound(
            key=f"{prefix}:{self.account}:{self.customer}",
            message=MessageReceived(
                message_id=f"{prefix}:{message_id}",
                channel=self.channel,
                provider_message_id=provider_message_id,
                provider_thread_id=f"{self.account}:{self.customer}",
                sender=Sender(kind=_SENDER_KINDS[self.channel], value=self.customer),
                received_at=self.received_at,
                sent_at=from_unix_ms(self.event.timestamp),
                subject=None,
                text=text,
                attachments=attachments or [],
                account=self.account,
                tenant=self.tenant,
                parse_errors=parse_errors or [],
                reply_to_provider_message_id=reply_to,
                kind=kind.value,
                postback_payload=payload,
            ),
        )

    def message(self, message: Message) -> Inbound:
        kind = MessageKind.MESSAGE
        reply_to = message.reply_to.mid if message.reply_to else None
        payload = None
        if message.quick_reply is not None:
            kind = MessageKind.INTERACTIVE
            payload = message.quick_reply.payload
        if message.reply_to is not None and message.reply_to.story is not None:
            kind = MessageKind.STORY_REPLY
            reply_to = message.reply_to.story.id
        attachments: list[Attachment] = []
        extra_text: list[str] = []
        for attachment in message.attachments:
            item_payload = attachment.payload or AttachmentPayload()
            if attachment.type == "story_mention":
                kind = MessageKind.STORY_MENTION
            if attachment.type == "location" and item_payload.coordinates is not None:
                where = item_payload.coordinates
                extra_text.append(location_text(where.lat, where.long, item_payload.title))
                attachments.append(media("location", content_type=None, provider_media_id=None))
            elif attachment.type == "image" and item_payload.sticker_id is not None:
                attachments.append(
                    media("sticker", content_type=None, provider_media_id=item_payload.url)
                )
            elif attachment.type in _MEDIA_KINDS:
                attachments.append(
                    media(
                        _MEDIA_KINDS[attachment.type],
                        content_type=None,
                        provider_media_id=item_payload.url,
                    )
                )
            elif attachment.type == "story_mention":
                attachments.append(
                    media("image", content_type=None, provider_media_id=item_payload.url)
                )
            else:
                # Shares, reels, posts, templates, fallbacks: a link, not a file.
                extra_text.append(join_text(item_payload.title, item_payload.url))
        parse_errors = []
        if message.is_unsupported:
            parse_errors.append(f"{self.channel.value} reports an unsupported message type")
        return self._inbound(
            message_id=message.mid,
            provider_message_id=message.mid,
            text=join_text(message.text, *extra_text),
            kind=kind,
            attachments=attachments,
            reply_to=reply_to,
            payload=payload,
            parse_errors=parse_errors,
        )

    def postback(self, postback: Postback) -> Inbound:
        # Older API versions send no mid: the sender and time identify the tap.
        message_id = (
            postback.mid or f"postback:{self.account}:{self.customer}:{self.event.timestamp}"
        )
        return self._inbound(
            message_id=message_id,
            provider_message_id=postback.mid,
            text=postback.title or "",
            kind=MessageKind.POSTBACK,
            payload=postback.payload,
        )

    def reaction(self, reaction: Reaction) -> Inbound:
        emoji = reaction.emoji or reaction.reaction or ""
        return self._inbound(
            message_id=f"reaction:{reaction.mid}:{self.customer}:{self.event.timestamp}",
            provider_message_id=None,
            text=emoji,
            kind=MessageKind.REACTION,
            reply_to=reaction.mid,
        )

    def edit(self, edit: MessageEdit) -> Inbound:
        return self._inbound(
            message_id=f"{edit.mid}:edit:{edit.num_edit}",
            provider_message_id=edit.mid,
            text=edit.text or "",
            kind=MessageKind.EDIT,
            reply_to=edit.mid,
        )
