"""X direct messages from the Account Activity API.

Payload shape::

    {"for_user_id": "<subscribed account>",
     "direct_message_events": [{"type": "message_create", "id": "<event id>",
        "created_timestamp": "1516403560557",
        "message_create": {"target": {"recipient_id": "<account>"},
                           "sender_id": "<customer>",
                           "message_data": {"text": "...", "entities": {...},
                                            "attachment": {"type": "media", "media": {...}}}}}],
     "users": {"<id>": {"id": "<id>", "name": "...", "screen_name": "..."}}}

Decisions: ``message_create`` from a customer is published (quick-reply answers as
``kind=interactive``); ``message_create`` sent by the subscribed account itself is our
own outgoing message (echo) and is dropped; typing indicators and read receipts are
counted as statuses and dropped; every other activity (posts, likes, follows, blocks,
revokes) is counted as unknown and dropped. X DMs cannot be edited or reacted to
through this API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchboard_common.contract import Attachment, Channel, MessageReceived, Sender, SenderKind
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise.common import (
    Dropped,
    Inbound,
    MessageKind,
    Normalised,
    from_unix_ms,
    media,
)

_USER_ID = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")
_MEDIA_KINDS = {"photo": "image", "video": "video", "animated_gif": "video"}
_HANDLED = {"direct_message_events", "direct_message_indicate_typing_events",
            "direct_message_mark_read_events"}  # fmt: skip
_STATUS_KEYS = ("direct_message_indicate_typing_events", "direct_message_mark_read_events")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class XMedia(_Model):
    id_str: str | None = None
    media_url_https: str | None = None
    type: str | None = None
    url: str | None = None


class XUrl(_Model):
    url: str
    expanded_url: str | None = None


class XEntities(_Model):
    urls: list[XUrl] = Field(default_factory=list)


class XAttachment(_Model):
    type: str
    media: XMedia | None = None


class XQuickReplyResponse(_Model):
    type: str | None = None
    metadata: str | None = None


class XMessageData(_Model):
    text: str = ""
    entities: XEntities | None = None
    attachment: XAttachment | None = None
    quick_reply_response: XQuickReplyResponse | None = None


class XTarget(_Model):
    recipient_id: str = _USER_ID


class XMessageCreate(_Model):
    target: XTarget
    sender_id: str = _USER_ID
    source_app_id: str | None = None
    message_data: XMessageData = Field(default_factory=XMessageData)


class XDirectMessageEvent(_Model):
    type: str
    id: str = Field(min_length=1, max_length=64)
    created_timestamp: str | int | None = None
    message_create: XMessageCreate | None = None


class XUser(_Model):
    id: str | None = None
    name: str | None = None
    screen_name: str | None = None


class XWebhook(_Model):
    """An Account Activity API webhook POST (only what direct messages need)."""

    for_user_id: str = _USER_ID
    direct_message_events: list[XDirectMessageEvent] = Field(default_factory=list)
    direct_message_indicate_typing_events: list[dict[str, Any]] = Field(default_factory=list)
    direct_message_mark_read_events: list[dict[str, Any]] = Field(default_factory=list)
    users: dict[str, XUser] = Field(default_factory=dict)


def normalise_x(
    payload: dict[str, Any], directory: AccountDirectory, received_at: datetime
) -> Normalised:
    """Normalise an Account Activity webhook; raises ``ValidationError`` if malformed."""
    webhook = XWebhook.model_validate(payload)
    account = webhook.for_user_id
    out = Normalised()
    out.accounts.add((Channel.X, account))
    for key in _STATUS_KEYS:
        if items := getattr(webhook, key):
            out.drop(Channel.X, Dropped.STATUS, len(items))
    for key, value in payload.items():
        if key.endswith("_events") and key not in _HANDLED:
            out.drop(Channel.X, Dropped.UNKNOWN_KIND, len(value) if isinstance(value, list) else 1)
        elif key == "user_event":
            out.drop(Channel.X, Dropped.UNKNOWN_KIND)
    for event in webhook.direct_message_events:
        create = event.message_create
        if event.type != "message_create" or create is None:
            out.drop(Channel.X, Dropped.UNKNOWN_KIND)
        elif create.sender_id == account:
            out.drop(Channel.X, Dropped.ECHO)
        elif not directory.admits(Channel.X, account):
            out.drop(Channel.X, Dropped.UNKNOWN_ACCOUNT)
        else:
            out.messages.append(_message(event, create, webhook, directory, received_at))
    return out


def _message(
    event: XDirectMessageEvent,
    create: XMessageCreate,
    webhook: XWebhook,
    directory: AccountDirectory,
    received_at: datetime,
) -> Inbound:
    account = webhook.for_user_id
    customer = create.sender_id
    data = create.message_data
    text = data.text
    attachments: list[Attachment] = []
    if data.entities is not None:
        for url in data.entities.urls:
            if url.expanded_url:
                text = text.replace(url.url, url.expanded_url)
    if data.attachment is not None and data.attachment.media is not None:
        item = data.attachment.media
        if item.url:  # X appends the media's short link to the text
            text = text.replace(item.url, "").rstrip()
        attachments.append(
            media(
                _MEDIA_KINDS.get(item.type or "", "file"),
                content_type=None,
                provider_media_id=item.media_url_https or item.id_str,
            )
        )
    kind = MessageKind.MESSAGE
    payload = None
    if data.quick_reply_response is not None:
        kind = MessageKind.INTERACTIVE
        payload = data.quick_reply_response.metadata
    user = webhook.users.get(customer)
    low, high = sorted((account, customer), key=int)
    return Inbound(
        key=f"x:{customer}",
        message=MessageReceived(
            message_id=f"x:{event.id}",
            channel=Channel.X,
            provider_message_id=event.id,
            # X names a one-to-one DM conversation "<lower id>-<higher id>".
            provider_thread_id=f"{low}-{high}",
            sender=Sender(
                kind=SenderKind.X_USER_ID, value=customer, display_name=user.name if user else None
            ),
            received_at=received_at,
            sent_at=from_unix_ms(event.created_timestamp),
            subject=None,
            text=text,
            attachments=attachments,
            account=account,
            tenant=directory.tenant(Channel.X, account),
            kind=kind.value,
            postback_payload=payload,
        ),
    )
