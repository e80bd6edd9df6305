"""WhatsApp Cloud API webhooks (``object: whatsapp_business_account``).

Payload shape (Meta's "messages" webhook field)::

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA id>", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "<id>"},
        "contacts": [{"profile": {"name": "..."}, "wa_id": "16505551234"}],
        "messages": [{"from": "16505551234", "id": "wamid...", "timestamp": "1749416383",
                      "type": "text", "text": {"body": "..."}}],
        "statuses": [{"id": "wamid...", "status": "delivered", ...}]}}]}]}

Decisions: text, media, location, contacts, interactive and button replies are
published; reactions are published as ``kind=reaction`` (a removed reaction is
dropped); ``statuses`` are kept for the shell, which turns those of Switchboard's own
replies into ``support.delivery.updated`` and counts the rest as dropped; ``system``
messages are dropped;
message types this module does not know are published with empty text and a
``parse_errors`` entry (the customer did write something); other webhook fields
(account, template, echo) are counted and dropped.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from switchboard_common.contract import Attachment, Channel, MessageReceived, Sender, SenderKind
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise.common import (
    Dropped,
    Inbound,
    MessageKind,
    Normalised,
    ProviderStatus,
    from_unix,
    join_text,
    location_text,
    media,
)

OBJECT = "whatsapp_business_account"
_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class WaMedia(_Model):
    id: str = Field(min_length=1)
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None


class WaText(_Model):
    body: str


class WaContext(_Model):
    id: str | None = None
    from_: str | None = Field(None, alias="from")
    forwarded: bool | None = None


class WaReply(_Model):
    id: str
    title: str | None = None
    description: str | None = None


class WaFlowReply(_Model):
    name: str | None = None
    body: str | None = None
    response_json: str | None = None


class WaInteractive(_Model):
    type: str
    button_reply: WaReply | None = None
    list_reply: WaReply | None = None
    nfm_reply: WaFlowReply | None = None


class WaButton(_Model):
    text: str | None = None
    payload: str | None = None


class WaReaction(_Model):
    message_id: str
    emoji: str | None = None


class WaLocation(_Model):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class WaContactName(_Model):
    formatted_name: str | None = None


class WaContactCard(_Model):
    name: WaContactName | None = None


class WaMessage(_Model):
    from_: str = Field(alias="from", pattern=r"^\+?[0-9]{4,20}$")
    id: str = Field(min_length=1, max_length=512)
    timestamp: str | int | None = None
    type: str = Field(min_length=1)
    text: WaText | None = None
    image: WaMedia | None = None
    audio: WaMedia | None = None
    video: WaMedia | None = None
    document: WaMedia | None = None
    sticker: WaMedia | None = None
    location: WaLocation | None = None
    contacts: list[WaContactCard] | None = None
    interactive: WaInteractive | None = None
    button: WaButton | None = None
    reaction: WaReaction | None = None
    context: WaContext | None = None


class WaProfile(_Model):
    name: str | None = None


class WaContact(_Model):
    wa_id: str | None = None
    profile: WaProfile | None = None


class WaMetadata(_Model):
    phone_number_id: str = Field(min_length=1, max_length=128)
    display_phone_number: str | None = None


class WaStatusError(_Model):
    code: int | str | None = None
    title: str | None = None
    message: str | None = None
    error_data: dict[str, Any] | None = None


class WaStatus(_Model):
    id: str
    status: str
    timestamp: str | int | None = None
    recipient_id: str | None = None
    errors: list[WaStatusError] = Field(default_factory=list)


class WaValue(_Model):
    """The ``value`` of a ``messages`` change."""

    messaging_product: str | None = None
    metadata: WaMetadata
    contacts: list[WaContact] = Field(default_factory=list)
    messages: list[WaMessage] = Field(default_factory=list)
    statuses: list[WaStatus] = Field(default_factory=list)


class WaMessagesChange(_Model):
    """A change of the ``messages`` field: customer messages and statuses."""

    field: Literal["messages"]
    value: WaValue


class WaOtherChange(_Model):
    """Any other webhook field (account, templates, echoes, ...): not routed."""

    field: str
    value: dict[str, Any] | list[Any] | str | int | float | bool | None = None


def _change_kind(value: Any) -> str:
    field = value.get("field") if isinstance(value, dict) else getattr(value, "field", None)
    return "messages" if field == "messages" else "other"


WaChange = Annotated[
    Annotated[WaMessagesChange, Tag("messages")] | Annotated[WaOtherChange, Tag("other")],
    Discriminator(_change_kind),
]


class WaEntry(_Model):
    id: str
    changes: list[WaChange] = Field(default_factory=list)


class WhatsAppWebhook(_Model):
    """A WhatsApp Cloud API webhook POST."""

    object: str = Field(pattern=f"^{OBJECT}$")
    entry: list[WaEntry]


def normalise_whatsapp(
    payload: dict[str, Any], directory: AccountDirectory, received_at: datetime
) -> Normalised:
    """Normalise a WhatsApp webhook; raises ``pydantic.ValidationError`` if malformed."""
    webhook = WhatsAppWebhook.model_validate(payload)
    out = Normalised()
    for entry in webhook.entry:
        for change in entry.changes:
            if isinstance(change, WaMessagesChange):
                _normalise_value(change.value, directory, received_at, out)
            elif change.field == "smb_message_echoes":
                out.drop(Channel.WHATSAPP, Dropped.ECHO, max(1, _count(change.value)))
            else:
                out.drop(Channel.WHATSAPP, Dropped.UNKNOWN_KIND)
    return out


def _count(value: object) -> int:
    echoes = value.get("message_echoes") if isinstance(value, dict) else None
    return len(echoes) if isinstance(echoes, list) else 0


def _normalise_value(
    value: WaValue, directory: AccountDirectory, received_at: datetime, out: Normalised
) -> None:
    account = value.metadata.phone_number_id
    out.accounts.add((Channel.WHATSAPP, account))
    for status in value.statuses:
        out.statuses.append(_status(status))
    if not value.messages and not value.statuses:
        out.drop(Channel.WHATSAPP, Dropped.UNKNOWN_KIND)  # e.g. an errors-only notice
    names = {c.wa_id.lstrip("+"): c.profile.name for c in value.contacts if c.wa_id and c.profile}
    for message in value.messages:
        if not directory.admits(Channel.WHATSAPP, account):
            out.drop(Channel.WHATSAPP, Dropped.UNKNOWN_ACCOUNT)
            continue
        inbound = _message(message, account, names, directory, received_at)
        if isinstance(inbound, Dropped):
            out.drop(Channel.WHATSAPP, inbound)
        else:
            out.messages.append(inbound)


@dataclass
class _Content:
    """What a message says, before it is wrapped in the contract event."""

    text: str = ""
    kind: MessageKind = MessageKind.MESSAGE
    attachments: list[Attachment] = field(default_factory=list)
    payload: str | None = None
    reply_to: str | None = None
    parse_errors: list[str] = field(default_factory=list)


def _message(
    message: WaMessage,
    account: str,
    names: dict[str, str | None],
    directory: AccountDirectory,
    received_at: datetime,
) -> Inbound | Dropped:
    content = _content(message)
    if isinstance(content, Dropped):
        return content
    digits = message.from_.lstrip("+")
    return Inbound(
        key=f"whatsapp:+{digits}",
        message=MessageReceived(
            message_id=f"whatsapp:{message.id}",
            channel=Channel.WHATSAPP,
            provider_message_id=message.id,
            provider_thread_id=f"{account}:{digits}",
            sender=Sender(
                kind=SenderKind.PHONE, value=f"+{digits}", display_name=names.get(digits)
            ),
            received_at=received_at,
            sent_at=from_unix(message.timestamp),
            subject=None,
            text=content.text,
            attachments=content.attachments,
            account=account,
            tenant=directory.tenant(Channel.WHATSAPP, account),
            parse_errors=content.parse_errors,
            reply_to_provider_message_id=content.reply_to,
            kind=content.kind.value,
            postback_payload=content.payload,
        ),
    )


def _content(message: WaMessage) -> _Content | Dropped:
    reply_to = message.context.id if message.context else None
    match message.type:
        case "text":
            return _Content(message.text.body if message.text else "", reply_to=reply_to)
        case "image" | "audio" | "video" | "document" | "sticker":
            return _media(message, reply_to)
        case "location" if message.location:
            loc = message.location
            return _Content(
                location_text(loc.latitude, loc.longitude, loc.name, loc.address),
                attachments=[media("location", content_type=None, provider_media_id=None)],
                reply_to=reply_to,
            )
        case "contacts" if message.contacts:
            names = (c.name.formatted_name for c in message.contacts if c.name is not None)
            return _Content(
                join_text(*names),
                attachments=[media("contacts", content_type=None, provider_media_id=None)],
                reply_to=reply_to,
            )
        case "interactive" if message.interactive:
            text, payload = _interactive(message.interactive)
            return _Content(text, MessageKind.INTERACTIVE, payload=payload, reply_to=reply_to)
        case "button" if message.button:
            return _Content(
                message.button.text or "",
                MessageKind.INTERACTIVE,
                payload=message.button.payload,
                reply_to=reply_to,
            )
        case "reaction" if message.reaction:
            if not message.reaction.emoji:
                return Dropped.UNREACTION
            return _Content(
                message.reaction.emoji,
                MessageKind.REACTION,
                reply_to=message.reaction.message_id,
            )
        case "system":
            return Dropped.SYSTEM
        case "request_welcome":
            return Dropped.UNKNOWN_KIND
        case other:
            return _Content(
                reply_to=reply_to,
                parse_errors=[f"whatsapp message type {other!r} is not normalised"],
            )


def _media(message: WaMessage, reply_to: str | None) -> _Content:
    item: WaMedia | None = getattr(message, message.type)
    if item is None:
        return _Content(
            reply_to=reply_to,
            parse_errors=[f"{message.type} message without its {message.type} object"],
        )
    attachment = media(
        message.type,
        content_type=item.mime_type,
        provider_media_id=item.id,
        filename=item.filename,
        sha256=_hex_sha256(item.sha256),
    )
    return _Content(item.caption or "", attachments=[attachment], reply_to=reply_to)


def _interactive(interactive: WaInteractive) -> tuple[str, str | None]:
    reply = interactive.button_reply or interactive.list_reply
    if reply is not None:
        return join_text(reply.title, reply.description), reply.id
    if interactive.nfm_reply is not None:
        flow = interactive.nfm_reply
        return flow.body or flow.name or "", flow.response_json
    return "", None


def _hex_sha256(value: str | None) -> str | None:
    """WhatsApp sends the media's SHA-256 base64-encoded; the contract wants hex."""
    if not value:
        return None
    if _HEX64.match(value):
        return value.lower()
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 32 else None


def _status(status: WaStatus) -> ProviderStatus:
    """A WhatsApp status; a failure keeps the provider's first error (code, title, and
    the details that say why, e.g. the closed 24-hour window)."""
    code = text = None
    if status.errors:
        error = status.errors[0]
        code = f"whatsapp_{error.code}"
        details = (error.error_data or {}).get("details")
        title = error.title or error.message or "failed"
        text = f"{title}: {details}" if details else title
    return ProviderStatus(
        Channel.WHATSAPP, status.id, status.status, from_unix(status.timestamp), code, text
    )
