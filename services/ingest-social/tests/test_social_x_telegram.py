"""X direct messages and Telegram updates: normalisation field by field, and drops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from switchboard_common.contract import Channel, SenderKind
from switchboard_devtools.testing.social import BOT, OTHER_BOT, RECEIVED_AT, X_ACCOUNT
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise import Dropped, normalise_telegram, normalise_x

pytestmark = pytest.mark.unit

Payload = Callable[[str], dict[str, Any]]


def test_x_direct_message(payload: Payload, directory: AccountDirectory) -> None:
    result = normalise_x(payload("x_dm"), directory, RECEIVED_AT)
    assert result.accounts == {(Channel.X, X_ACCOUNT)}
    assert result.dropped == {("x", Dropped.ECHO): 1}  # the second event is our own reply
    (inbound,) = result.messages
    assert inbound.key == "x:3001969357"
    m = inbound.message
    assert m.message_id == "x:954491830116155396"
    assert m.channel is Channel.X
    assert m.provider_message_id == "954491830116155396"
    assert m.provider_thread_id == f"3001969357-{X_ACCOUNT}"
    assert (m.sender.kind, m.sender.value) == (SenderKind.X_USER_ID, "3001969357")
    assert m.sender.display_name == "Jordan Brinks"
    assert m.sent_at is not None
    assert round(m.sent_at.timestamp() * 1000) == 1516403560557
    # Short links expanded; the media's own short link removed from the text.
    assert m.text == "My refund still has not arrived, see https://shop.example.com/orders/1042"
    (attachment,) = m.attachments
    assert attachment.kind == "image"
    assert attachment.provider_media_id is not None
    assert attachment.provider_media_id.startswith("https://ton.twitter.com/")
    assert (m.account, m.tenant, m.kind) == (X_ACCOUNT, "acme", "message")


def test_x_quick_replies_statuses_and_other_activity(directory: AccountDirectory) -> None:
    payload = {
        "for_user_id": X_ACCOUNT,
        "direct_message_events": [
            {
                "type": "message_create",
                "id": "1",
                "created_timestamp": "1516403560557",
                "message_create": {
                    "target": {"recipient_id": X_ACCOUNT},
                    "sender_id": "42",
                    "message_data": {
                        "text": "Billing",
                        "quick_reply_response": {"type": "options", "metadata": "billing"},
                    },
                },
            },
            {"type": "message_delete", "id": "2"},
        ],
        "direct_message_indicate_typing_events": [{"sender_id": "42"}],
        "direct_message_mark_read_events": [{"sender_id": "42"}, {"sender_id": "43"}],
        "favorite_events": [{}, {}, {}],
        "user_event": {"revoke": {}},
    }
    result = normalise_x(payload, directory, RECEIVED_AT)
    (inbound,) = result.messages
    assert (inbound.message.kind, inbound.message.postback_payload) == ("interactive", "billing")
    assert inbound.message.provider_thread_id == f"42-{X_ACCOUNT}"
    assert result.dropped == {("x", Dropped.STATUS): 3, ("x", Dropped.UNKNOWN_KIND): 5}


def test_x_payload_without_account_is_invalid(directory: AccountDirectory) -> None:
    with pytest.raises(ValidationError, match="for_user_id"):
        normalise_x({"direct_message_events": []}, directory, RECEIVED_AT)


def test_telegram_photo_reply(payload: Payload, directory: AccountDirectory) -> None:
    result = normalise_telegram(payload("telegram_message"), BOT, directory, RECEIVED_AT)
    assert result.accounts == {(Channel.TELEGRAM, BOT)}
    (inbound,) = result.messages
    assert inbound.key == f"telegram:{BOT}:1111111"
    m = inbound.message
    assert m.message_id == f"telegram:{BOT}:1111111:1365"
    assert m.channel is Channel.TELEGRAM
    assert (m.provider_message_id, m.provider_thread_id) == ("1365", "1111111")
    assert (m.sender.kind, m.sender.value) == (SenderKind.TELEGRAM_USER_ID, "1111111")
    assert m.sender.display_name == "Ana Pérez"
    assert m.sent_at is not None
    assert m.sent_at.timestamp() == 1749416700
    assert m.text == "The screen shows error E42"
    assert m.reply_to_provider_message_id == "1360"
    (photo,) = m.attachments  # the largest of the sizes
    assert (photo.kind, photo.content_type, photo.size) == ("image", "image/jpeg", 88614)
    assert photo.provider_media_id == "AgACAgIAAxkBAAIBQmZ1cWxhcmdl"
    assert (m.account, m.tenant, m.kind) == (BOT, "acme", "message")


def test_telegram_edit_has_its_own_id(payload: Payload, directory: AccountDirectory) -> None:
    result = normalise_telegram(
        payload("telegram_edited_message"), OTHER_BOT, directory, RECEIVED_AT
    )
    (inbound,) = result.messages
    m = inbound.message
    assert m.kind == "edit"
    assert m.message_id == f"telegram:{OTHER_BOT}:1111111:1366:edit:1749416745"
    assert m.provider_message_id == "1366"
    assert m.reply_to_provider_message_id == "1366"
    assert m.text == "Order number is 1042, not 1024"
    assert m.sent_at is not None
    assert m.sent_at.timestamp() == 1749416745
    assert m.tenant == "globex"


def test_the_same_message_in_two_chats_gets_two_ids(
    payload: Payload, directory: AccountDirectory
) -> None:
    first = payload("telegram_message")
    second = payload("telegram_message")
    second["message"]["chat"]["id"] = 2222222
    a = normalise_telegram(first, BOT, directory, RECEIVED_AT).messages[0].message
    b = normalise_telegram(second, BOT, directory, RECEIVED_AT).messages[0].message
    assert a.message_id != b.message_id


def _message(**fields: Any) -> dict[str, Any]:
    return {
        "update_id": 1,
        "message": {
            "message_id": 7,
            "from": {"id": 99, "is_bot": False, "first_name": "Bo"},
            "chat": {"id": 99, "type": "private"},
            "date": 1749416700,
            **fields,
        },
    }


@pytest.mark.parametrize(
    ("fields", "text", "kinds"),
    [
        (
            {
                "document": {
                    "file_id": "d1",
                    "file_name": "log.txt",
                    "mime_type": "text/plain",
                    "file_size": 12,
                }
            },
            "",
            ["document"],
        ),
        ({"voice": {"file_id": "v1", "mime_type": "audio/ogg", "duration": 3}}, "", ["audio"]),
        ({"sticker": {"file_id": "s1", "is_animated": True, "is_video": False}}, "", ["sticker"]),
        ({"location": {"latitude": 1.0, "longitude": 2.0}}, "geo:1.000000,2.000000", ["location"]),
        (
            {
                "venue": {
                    "location": {"latitude": 1.0, "longitude": 2.0},
                    "title": "Shop",
                    "address": "Main St",
                }
            },
            "Shop Main St geo:1.000000,2.000000",
            ["location"],
        ),
        ({"contact": {"phone_number": "+34600000000", "first_name": "Luis"}}, "Luis", ["contacts"]),
    ],
)
def test_telegram_content_types(
    directory: AccountDirectory, fields: dict[str, Any], text: str, kinds: list[str]
) -> None:
    (inbound,) = normalise_telegram(_message(**fields), BOT, directory, RECEIVED_AT).messages
    assert inbound.message.text == text
    assert [a.kind for a in inbound.message.attachments] == kinds
    if "document" in fields:
        assert inbound.message.attachments[0].filename == "log.txt"
        assert inbound.message.attachments[0].size == 12
    if "sticker" in fields:
        assert inbound.message.attachments[0].content_type == "application/x-tgsticker"


def test_telegram_callbacks_and_reactions(directory: AccountDirectory) -> None:
    user = {"id": 99, "is_bot": False, "first_name": "Bo"}
    callback = {
        "update_id": 2,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": user,
            "message": {"message_id": 7, "chat": {"id": 99, "type": "private"}, "date": 1},
            "chat_instance": "-1",
            "data": "refund:1042",
        },
    }
    (tap,) = normalise_telegram(callback, BOT, directory, RECEIVED_AT).messages
    assert (tap.message.kind, tap.message.text, tap.message.postback_payload) == (
        "postback",
        "refund:1042",
        "refund:1042",
    )
    assert tap.message.message_id == f"telegram:{BOT}:callback:4382bfdwdsb323b2d9"
    assert tap.message.reply_to_provider_message_id == "7"
    reaction: dict[str, Any] = {
        "update_id": 3,
        "message_reaction": {
            "chat": {"id": 99, "type": "private"},
            "message_id": 7,
            "user": user,
            "date": 1749416800,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}],
        },
    }
    (liked,) = normalise_telegram(reaction, BOT, directory, RECEIVED_AT).messages
    assert (liked.message.kind, liked.message.text) == ("reaction", "👍")
    reaction["message_reaction"]["new_reaction"] = []
    removed = normalise_telegram(reaction, BOT, directory, RECEIVED_AT)
    assert removed.messages == []
    assert removed.dropped == {("telegram", Dropped.UNREACTION): 1}


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (
            {"update_id": 4, "channel_post": {"message_id": 1, "chat": {"id": -100}, "date": 1}},
            Dropped.UNKNOWN_KIND,
        ),
        (
            _message(
                **{"from": {"id": 5, "is_bot": True, "first_name": "Other bot"}, "text": "hi"}
            ),
            Dropped.BOT,
        ),
        (
            _message(new_chat_members=[{"id": 6, "is_bot": False, "first_name": "Cy"}]),
            Dropped.SYSTEM,
        ),
    ],
)
def test_telegram_dropped_updates(
    directory: AccountDirectory, update: dict[str, Any], reason: Dropped
) -> None:
    result = normalise_telegram(update, BOT, directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {("telegram", reason): 1}


def test_telegram_unknown_content_is_still_a_message(directory: AccountDirectory) -> None:
    (inbound,) = normalise_telegram(
        _message(dice={"emoji": "🎲", "value": 4}), BOT, directory, RECEIVED_AT
    ).messages
    assert inbound.message.text == ""
    assert inbound.message.parse_errors == ["telegram message content not normalised: dice"]


def test_telegram_update_without_id_is_invalid(directory: AccountDirectory) -> None:
    with pytest.raises(ValidationError, match="update_id"):
        normalise_telegram({"message": {}}, BOT, directory, RECEIVED_AT)
