"""Telegram Bot API updates (one ``Update`` object per webhook POST).

Payload shape::

    {"update_id": 10000,
     "message": {"message_id": 1365, "date": 1441645532,
                 "from": {"id": 1111111, "is_bot": false, "first_name": "Ana"},
                 "chat": {"id": 1111111, "type": "private"}, "text": "hello"}}

Telegram message ids are unique only within a chat, so ids carry the chat:
``telegram:<bot id>:<chat id>:<message_id>``. The update does not name the bot: the
shell tells the normaliser which bot the webhook was for.

Decisions: ``message`` is published (text, captions, photos, documents, audio, voice,
video, stickers, locations, venues, contacts); ``edited_message`` as ``kind=edit``
(its own message id, with ``reply_to_provider_message_id`` the edited one);
``callback_query`` (an inline button) as ``kind=postback``; ``message_reaction`` as
``kind=reaction`` (removed reactions dropped); messages from bots and service messages
(members joined, title changed, pins) are dropped; every other update kind
(channel posts, inline queries, polls, member updates) is counted as unknown.
Telegram sends no delivery receipts and no echoes of the bot's own messages.
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
    from_unix,
    join_text,
    location_text,
    media,
)

_HANDLED = ("message", "edited_message", "callback_query", "message_reaction")
#: Message fields that only service messages carry (nothing a customer wrote).
_SERVICE_FIELDS = frozenset(
    {
        "new_chat_members", "left_chat_member", "new_chat_title", "new_chat_photo",
        "delete_chat_photo", "group_chat_created", "supergroup_chat_created",
        "channel_chat_created", "message_auto_delete_timer_changed", "migrate_to_chat_id",
        "migrate_from_chat_id", "pinned_message", "forum_topic_created", "forum_topic_edited",
        "forum_topic_closed", "forum_topic_reopened", "video_chat_started", "video_chat_ended",
        "video_chat_scheduled", "video_chat_participants_invited", "write_access_allowed",
        "users_shared", "chat_shared", "boost_added", "chat_background_set",
    }
)  # fmt: skip
_STICKER_TYPES = {"animated": "application/x-tgsticker", "video": "video/webm"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class TgUser(_Model):
    id: int
    is_bot: bool = False
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None


class TgChat(_Model):
    id: int
    type: str | None = None


class TgPhotoSize(_Model):
    file_id: str = Field(min_length=1)
    file_size: int | None = None
    width: int = 0
    height: int = 0


class TgFile(_Model):
    file_id: str = Field(min_length=1)
    file_name: str | None = None
    mime_type: str | None = None
    file_size: int | None = None
    is_animated: bool = False
    is_video: bool = False


class TgLocation(_Model):
    latitude: float
    longitude: float


class TgVenue(_Model):
    location: TgLocation
    title: str | None = None
    address: str | None = None


class TgContact(_Model):
    phone_number: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class TgMessageRef(_Model):
    message_id: int
    chat: TgChat | None = None


class TgMessage(_Model):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    message_id: int
    from_: TgUser | None = Field(None, alias="from")
    chat: TgChat
    date: int
    edit_date: int | None = None
    message_thread_id: int | None = None
    text: str | None = None
    caption: str | None = None
    photo: list[TgPhotoSize] | None = None
    document: TgFile | None = None
    audio: TgFile | None = None
    voice: TgFile | None = None
    video: TgFile | None = None
    video_note: TgFile | None = None
    animation: TgFile | None = None
    sticker: TgFile | None = None
    location: TgLocation | None = None
    venue: TgVenue | None = None
    contact: TgContact | None = None
    reply_to_message: TgMessageRef | None = None


class TgCallbackQuery(_Model):
    id: str = Field(min_length=1, max_length=128)
    from_: TgUser = Field(alias="from")
    message: TgMessageRef | None = None
    data: str | None = None


class TgReaction(_Model):
    type: str
    emoji: str | None = None


class TgMessageReaction(_Model):
    chat: TgChat
    message_id: int
    user: TgUser | None = None
    date: int
    new_reaction: list[TgReaction] = Field(default_factory=list)


class TelegramUpdate(_Model):
    """A Bot API ``Update``."""

    update_id: int
    message: TgMessage | None = None
    edited_message: TgMessage | None = None
    callback_query: TgCallbackQuery | None = None
    message_reaction: TgMessageReaction | None = None


def normalise_telegram(
    payload: dict[str, Any], bot_id: str, directory: AccountDirectory, received_at: datetime
) -> Normalised:
    """Normalise one update for ``bot_id``; raises ``ValidationError`` if malformed."""
    update = TelegramUpdate.model_validate(payload)
    out = Normalised()
    out.accounts.add((Channel.TELEGRAM, bot_id))
    build = _Builder(bot_id, directory, received_at)
    result: Inbound | Dropped
    if update.message is not None:
        result = build.message(update.message, edited=False)
    elif update.edited_message is not None:
        result = build.message(update.edited_message, edited=True)
    elif update.callback_query is not None:
        result = build.callback(update.callback_query)
    elif update.message_reaction is not None:
        result = build.reaction(update.message_reaction)
    else:
        result = Dropped.UNKNOWN_KIND
    if isinstance(result, Inbound) and not directory.admits(Channel.TELEGRAM, bot_id):
        result = Dropped.UNKNOWN_ACCOUNT
    if isinstance(result, Dropped):
        out.drop(Channel.TELEGRAM, result)
    else:
        out.messages.append(result)
    return out


class _Builder:
    def __init__(self, bot_id: str, directory: AccountDirectory, received_at: datetime) -> None:
        self.bot_id = bot_id
        self.tenant = directory.tenant(Channel.TELEGRAM, bot_id)
        self.received_at = received_at

    def _inbound(
        self,
        user: TgUser,
        *,
        message_id: str,
        provider_message_id: str | None,
        thread: str | None,
        sent_at: datetime | None,
        text: str,
        kind: MessageKind,
        attachments: list[Attachment] | None = None,
        reply_to: str | None = None,
        payload: str | None = None,
        parse_errors: list[str] | None = None,
    ) -> Inbound:
        name = join_text(user.first_name, user.last_name).replace("\n", " ") or user.username
        return Inbound(
            key=f"telegram:{self.bot_id}:{user.id}",
            message=MessageReceived(
                message_id=f"telegram:{self.bot_id}:{message_id}",
                channel=Channel.TELEGRAM,
                provider_message_id=provider_message_id,
                provider_thread_id=thread,
                sender=Sender(
                    kind=SenderKind.TELEGRAM_USER_ID, value=str(user.id), display_name=name
                ),
                received_at=self.received_at,
                sent_at=sent_at,
                subject=None,
                text=text,
                attachments=attachments or [],
                account=self.bot_id,
                tenant=self.tenant,
                parse_errors=parse_errors or [],
                reply_to_provider_message_id=reply_to,
                kind=kind.value,
                postback_payload=payload,
            ),
        )

    def message(self, message: TgMessage, *, edited: bool) -> Inbound | Dropped:
        user = message.from_
        if user is None:
            return Dropped.UNKNOWN_KIND  # channel posts and anonymous admins: no customer
        if user.is_bot:
            return Dropped.BOT
        text, attachments = _content(message)
        parse_errors: list[str] = []
        if not text and not attachments:
            extra = set(message.model_extra or {})
            if extra & _SERVICE_FIELDS:
                return Dropped.SYSTEM
            unknown = sorted(extra - {"forward_origin", "entities", "caption_entities"})
            parse_errors.append(
                "telegram message content not normalised"
                + (f": {', '.join(unknown[:5])}" if unknown else "")
            )
        thread = str(message.chat.id)
        if message.message_thread_id is not None:
            thread = f"{thread}:{message.message_thread_id}"
        local_id = f"{message.chat.id}:{message.message_id}"
        reply_to = str(message.reply_to_message.message_id) if message.reply_to_message else None
        if edited:
            return self._inbound(
                user,
                message_id=f"{local_id}:edit:{message.edit_date or message.date}",
                provider_message_id=str(message.message_id),
                thread=thread,
                sent_at=from_unix(message.edit_date or message.date),
                text=text,
                kind=MessageKind.EDIT,
                attachments=attachments,
                reply_to=str(message.message_id),
                parse_errors=parse_errors,
            )
        return self._inbound(
            user,
            message_id=local_id,
            provider_message_id=str(message.message_id),
            thread=thread,
            sent_at=from_unix(message.date),
            text=text,
            kind=MessageKind.MESSAGE,
            attachments=attachments,
            reply_to=reply_to,
            parse_errors=parse_errors,
        )

    def callback(self, query: TgCallbackQuery) -> Inbound | Dropped:
        if query.from_.is_bot:
            return Dropped.BOT
        chat = query.message.chat if query.message and query.message.chat else None
        return self._inbound(
            query.from_,
            message_id=f"callback:{query.id}",
            provider_message_id=query.id,
            thread=str(chat.id) if chat else None,
            sent_at=None,
            text=query.data or "",
            kind=MessageKind.POSTBACK,
            reply_to=str(query.message.message_id) if query.message else None,
            payload=query.data,
        )

    def reaction(self, reaction: TgMessageReaction) -> Inbound | Dropped:
        if reaction.user is None:
            return Dropped.UNKNOWN_KIND  # anonymous (chat-level) reactions: no customer
        if not reaction.new_reaction:
            return Dropped.UNREACTION
        emoji = "".join(r.emoji or f"[{r.type}]" for r in reaction.new_reaction)
        return self._inbound(
            reaction.user,
            message_id=(
                f"{reaction.chat.id}:{reaction.message_id}:reaction:"
                f"{reaction.user.id}:{reaction.date}"
            ),
            provider_message_id=None,
            thread=str(reaction.chat.id),
            sent_at=from_unix(reaction.date),
            text=emoji,
            kind=MessageKind.REACTION,
            reply_to=str(reaction.message_id),
        )


def _content(message: TgMessage) -> tuple[str, list[Attachment]]:
    text = message.text or message.caption or ""
    attachments: list[Attachment] = []
    if message.photo:
        # Telegram sends every resolution of one photo; keep the largest.
        best = max(message.photo, key=lambda p: (p.file_size or 0, p.width * p.height))
        attachments.append(
            media(
                "image",
                content_type="image/jpeg",
                provider_media_id=best.file_id,
                size=best.file_size,
            )
        )
    for kind, item in (
        ("document", message.document),
        ("audio", message.audio),
        ("audio", message.voice),
        ("video", message.video),
        ("video", message.video_note),
        ("video", message.animation),
    ):
        if item is not None:
            attachments.append(
                media(
                    kind,
                    content_type=item.mime_type,
                    provider_media_id=item.file_id,
                    filename=item.file_name,
                    size=item.file_size,
                )
            )
    if message.sticker is not None:
        sticker = message.sticker
        style = "animated" if sticker.is_animated else "video" if sticker.is_video else ""
        attachments.append(
            media(
                "sticker",
                content_type=_STICKER_TYPES.get(style),
                provider_media_id=sticker.file_id,
                size=sticker.file_size,
            )
        )
    if message.venue is not None:
        venue = message.venue
        where = location_text(
            venue.location.latitude, venue.location.longitude, venue.title, venue.address
        )
        text = join_text(text, where)
        attachments.append(media("location", content_type=None, provider_media_id=None))
    elif message.location is not None:
        text = join_text(text, location_text(message.location.latitude, message.location.longitude))
        attachments.append(media("location", content_type=None, provider_media_id=None))
    if message.contact is not None:
        contact = message.contact
        text = join_text(text, join_text(contact.first_name, contact.last_name).replace("\n", " "))
        attachments.append(media("contacts", content_type=None, provider_media_id=None))
    return text, attachments
