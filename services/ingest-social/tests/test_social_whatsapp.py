"""WhatsApp Cloud API normalisation, field by field, and its drop decisions."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from switchboard_common.contract import Channel, SenderKind
from switchboard_devtools.testing.social import RECEIVED_AT, WHATSAPP_NUMBER
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise import Dropped, normalise_meta

pytestmark = pytest.mark.unit

Payload = Callable[[str], dict[str, Any]]


def _message(payload: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    return message


def test_text(payload: Payload, directory: AccountDirectory) -> None:
    result = normalise_meta(payload("whatsapp_text"), directory, RECEIVED_AT)
    assert result.dropped == {}
    assert result.accounts == {(Channel.WHATSAPP, WHATSAPP_NUMBER)}
    (inbound,) = result.messages
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert inbound.key == "whatsapp:+16505551234"
    m = inbound.message
    assert m.message_id == f"whatsapp:{wamid}"
    assert m.channel is Channel.WHATSAPP
    assert m.provider_message_id == wamid
    assert m.provider_thread_id == f"{WHATSAPP_NUMBER}:16505551234"
    assert (m.sender.kind, m.sender.value) == (SenderKind.PHONE, "+16505551234")
    assert m.sender.display_name == "Sheena Nelson"
    assert m.received_at == RECEIVED_AT
    assert m.sent_at is not None
    assert m.sent_at.timestamp() == 1749416383
    assert m.subject is None
    assert m.text == "Does it come in another color?"
    assert m.attachments == []
    assert (m.account, m.tenant, m.kind) == (WHATSAPP_NUMBER, "acme", "message")
    assert m.reply_to_provider_message_id is None
    assert m.parse_errors == []


def test_image_reply_with_caption_and_hash(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("whatsapp_image")
    (inbound,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    m = inbound.message
    assert m.text == "This one, but the box arrived damaged"
    assert m.reply_to_provider_message_id == _message(sample)["context"]["id"]
    (attachment,) = m.attachments
    assert attachment.kind == "image"
    assert attachment.content_type == "image/jpeg"
    assert attachment.provider_media_id == "1003383421387256"
    # WhatsApp sends the media hash base64-encoded; the contract carries hex.
    raw = base64.b64decode(_message(sample)["image"]["sha256"])
    assert attachment.sha256 == raw.hex()
    assert (attachment.filename, attachment.size) == (None, None)


def test_interactive_replies_keep_title_and_payload(
    payload: Payload, directory: AccountDirectory
) -> None:
    button, listed = normalise_meta(
        payload("whatsapp_interactive"), directory, RECEIVED_AT
    ).messages
    assert (button.message.kind, button.message.text) == ("interactive", "Billing question")
    assert button.message.postback_payload == "talk-to-billing"
    assert button.message.reply_to_provider_message_id is not None
    assert listed.message.text == "Order #1042\nShipped 3 June"
    assert listed.message.postback_payload == "order-1042"
    assert button.message.message_id != listed.message.message_id


def test_statuses_are_kept_for_the_reply_records_not_published_as_messages(
    payload: Payload, directory: AccountDirectory
) -> None:
    result = normalise_meta(payload("whatsapp_status"), directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {}
    assert [(s.channel, s.status, s.error_code) for s in result.statuses] == [
        (Channel.WHATSAPP, "delivered", None),
        (Channel.WHATSAPP, "read", None),
    ]
    assert all((s.provider_message_id or "").startswith("wamid.") for s in result.statuses)
    assert result.accounts == {(Channel.WHATSAPP, WHATSAPP_NUMBER)}


def _with_message(payload: Payload, message: dict[str, Any]) -> dict[str, Any]:
    sample = payload("whatsapp_text")
    base = _message(sample)
    sample["entry"][0]["changes"][0]["value"]["messages"] = [
        {"from": base["from"], "id": "wamid.X", "timestamp": base["timestamp"], **message}
    ]
    return sample


@pytest.mark.parametrize(
    ("message", "kind", "text", "attachment_kind"),
    [
        (
            {
                "type": "document",
                "document": {
                    "id": "77",
                    "filename": "invoice.pdf",
                    "mime_type": "application/pdf",
                    "sha256": "zz",
                },
            },
            "message",
            "",
            "document",
        ),
        (
            {
                "type": "audio",
                "audio": {"id": "78", "mime_type": "audio/ogg; codecs=opus", "voice": True},
            },
            "message",
            "",
            "audio",
        ),
        (
            {"type": "sticker", "sticker": {"id": "79", "mime_type": "image/webp"}},
            "message",
            "",
            "sticker",
        ),
        (
            {"type": "video", "video": {"id": "80", "mime_type": "video/mp4", "caption": "look"}},
            "message",
            "look",
            "video",
        ),
        (
            {
                "type": "location",
                "location": {
                    "latitude": 40.4168,
                    "longitude": -3.7038,
                    "name": "Shop",
                    "address": "Gran Via 1",
                },
            },
            "message",
            "Shop Gran Via 1 geo:40.416800,-3.703800",
            "location",
        ),
        (
            {
                "type": "contacts",
                "contacts": [
                    {
                        "name": {"formatted_name": "Luis Gómez"},
                        "phones": [{"phone": "+34 600 000 000"}],
                    }
                ],
            },
            "message",
            "Luis Gómez",
            "contacts",
        ),
        (
            {"type": "button", "button": {"text": "Yes", "payload": "CONFIRM"}},
            "interactive",
            "Yes",
            None,
        ),
        (
            {"type": "reaction", "reaction": {"message_id": "wamid.OURS", "emoji": "👍"}},
            "reaction",
            "👍",
            None,
        ),
        ({"type": "order", "order": {"catalog_id": "1", "product_items": []}}, "message", "", None),
    ],
)
def test_every_message_type(
    payload: Payload,
    directory: AccountDirectory,
    *,
    message: dict[str, Any],
    kind: str,
    text: str,
    attachment_kind: str | None,
) -> None:
    (inbound,) = normalise_meta(_with_message(payload, message), directory, RECEIVED_AT).messages
    m = inbound.message
    assert (m.kind, m.text) == (kind, text)
    assert [a.kind for a in m.attachments] == ([attachment_kind] if attachment_kind else [])
    if message["type"] == "document":
        assert m.attachments[0].filename == "invoice.pdf"
        assert m.attachments[0].sha256 is None  # not a SHA-256: dropped, not invented
    if message["type"] == "reaction":
        assert m.reply_to_provider_message_id == "wamid.OURS"
    if message["type"] == "order":
        assert m.parse_errors == ["whatsapp message type 'order' is not normalised"]


def test_hex_media_hashes_pass_through(payload: Payload, directory: AccountDirectory) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    sample = _with_message(
        payload, {"type": "image", "image": {"id": "1", "sha256": digest.upper()}}
    )
    (inbound,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    assert inbound.message.attachments[0].sha256 == digest


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            {"type": "reaction", "reaction": {"message_id": "wamid.OURS", "emoji": ""}},
            Dropped.UNREACTION,
        ),
        (
            {"type": "system", "system": {"body": "changed number", "type": "user_changed_number"}},
            Dropped.SYSTEM,
        ),
        ({"type": "request_welcome"}, Dropped.UNKNOWN_KIND),
    ],
)
def test_dropped_message_types(
    payload: Payload, directory: AccountDirectory, message: dict[str, Any], reason: Dropped
) -> None:
    result = normalise_meta(_with_message(payload, message), directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {("whatsapp", reason): 1}


def test_other_fields_and_echoes_are_counted(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("whatsapp_text")
    sample["entry"][0]["changes"] += [
        {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
        {"field": "smb_message_echoes", "value": {"message_echoes": [{}, {}]}},
    ]
    result = normalise_meta(sample, directory, RECEIVED_AT)
    assert len(result.messages) == 1
    assert result.dropped == {("whatsapp", Dropped.UNKNOWN_KIND): 1, ("whatsapp", Dropped.ECHO): 2}


def test_unknown_numbers_follow_the_policy(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("whatsapp_text")
    sample["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "555"
    accepted = normalise_meta(sample, directory, RECEIVED_AT)
    assert accepted.messages[0].message.tenant is None
    assert accepted.messages[0].message.account == "555"
    strict = AccountDirectory(directory.accounts, directory.default_secrets, "ignore")
    ignored = normalise_meta(sample, strict, RECEIVED_AT)
    assert ignored.messages == []
    assert ignored.dropped == {("whatsapp", Dropped.UNKNOWN_ACCOUNT): 1}


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (lambda m: m.pop("from"), "from"),
        (lambda m: m.update({"from": "not-a-number"}), "from"),
        (lambda m: m.pop("id"), "id"),
        (lambda m: m.update({"text": "plain string"}), "text"),
    ],
)
def test_malformed_messages_fail_validation_with_their_location(
    payload: Payload,
    directory: AccountDirectory,
    mutate: Callable[[dict[str, Any]], object],
    location: str,
) -> None:
    sample = payload("whatsapp_text")
    mutate(_message(sample))
    with pytest.raises(ValidationError) as caught:
        normalise_meta(sample, directory, RECEIVED_AT)
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith("entry.0.changes.0") and loc.endswith(location) for loc in locations)


def test_unknown_meta_objects_are_ignored_and_missing_object_is_invalid(
    directory: AccountDirectory,
) -> None:
    result = normalise_meta({"object": "user", "entry": [{"id": "1"}]}, directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {("meta", Dropped.UNKNOWN_KIND): 1}
    with pytest.raises(ValidationError, match="object"):
        normalise_meta({"entry": []}, directory, RECEIVED_AT)
