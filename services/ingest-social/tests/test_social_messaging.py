"""Messenger and Instagram normalisation, field by field, and their drop decisions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from switchboard_common.contract import Channel, SenderKind
from switchboard_devtools.testing.social import IG_ACCOUNT, PAGE, RECEIVED_AT
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise import Dropped, normalise_meta
from switchboard_ingest_social.normalise.common import ProviderStatus, Watermark, from_unix_ms

pytestmark = pytest.mark.unit

Payload = Callable[[str], dict[str, Any]]
PSID = "6712345678901234"
IGSID = "1254459154682919"
MID = "m_1457764197618:41d102a3e1ae206a38"  # the page's message in messenger_echo


def test_messenger_text_reply(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("messenger_text")
    result = normalise_meta(sample, directory, RECEIVED_AT)
    assert result.accounts == {(Channel.MESSENGER, PAGE)}
    (inbound,) = result.messages
    event = sample["entry"][0]["messaging"][0]
    mid = event["message"]["mid"]
    assert inbound.key == f"messenger:{PAGE}:{PSID}"
    m = inbound.message
    assert m.message_id == f"messenger:{mid}"
    assert m.channel is Channel.MESSENGER
    assert m.provider_message_id == mid
    assert m.provider_thread_id == f"{PAGE}:{PSID}"
    assert (m.sender.kind, m.sender.value, m.sender.display_name) == (SenderKind.PSID, PSID, None)
    assert m.sent_at is not None
    assert round(m.sent_at.timestamp() * 1000) == event["timestamp"]
    assert m.received_at == RECEIVED_AT
    assert m.text == "Hi, my order never arrived"
    assert m.reply_to_provider_message_id == event["message"]["reply_to"]["mid"]
    assert (m.account, m.tenant, m.kind) == (PAGE, "acme", "message")


def test_messenger_postback(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("messenger_postback")
    (inbound,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    postback = sample["entry"][0]["messaging"][0]["postback"]
    m = inbound.message
    assert (m.kind, m.text, m.postback_payload) == ("postback", "Track my order", "TRACK_ORDER")
    assert m.message_id == f"messenger:{postback['mid']}"
    # Without a mid (older API versions) the id is still deterministic.
    del sample["entry"][0]["messaging"][0]["postback"]["mid"]
    first = normalise_meta(sample, directory, RECEIVED_AT).messages[0].message
    again = normalise_meta(sample, directory, RECEIVED_AT).messages[0].message
    assert first.message_id == again.message_id
    assert first.message_id.startswith(f"messenger:postback:{PAGE}:{PSID}:")


def test_messenger_echoes_are_dropped_and_receipts_become_statuses(
    payload: Payload, directory: AccountDirectory
) -> None:
    result = normalise_meta(payload("messenger_echo"), directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {("messenger", Dropped.ECHO): 1}
    assert result.accounts == {(Channel.MESSENGER, PAGE)}
    # The delivery names its message; the read is by watermark: every message the page
    # sent the person at or before it.
    assert result.statuses == [
        ProviderStatus(Channel.MESSENGER, MID, "delivered", from_unix_ms(1749416521000)),
        ProviderStatus(
            Channel.MESSENGER,
            None,
            "read",
            from_unix_ms(1749416522000),
            watermark=Watermark(PAGE, PSID, at_ms(1749416520611)),
        ),
    ]


def at_ms(millis: int) -> datetime:
    at = from_unix_ms(millis)
    assert at is not None
    return at


def _receipt(channel: str, account: str, person: str, **fields: Any) -> dict[str, Any]:
    event = {"sender": {"id": person}, "recipient": {"id": account}, **fields}
    return {"object": channel, "entry": [{"id": account, "time": 1, "messaging": [event]}]}


def test_a_delivery_without_message_ids_is_by_watermark(directory: AccountDirectory) -> None:
    delivery = {"watermark": 1749416520611}
    result = normalise_meta(_receipt("page", PAGE, PSID, delivery=delivery), directory, RECEIVED_AT)
    [status] = result.statuses
    assert (status.provider_message_id, status.status, status.at) == (None, "delivered", None)
    assert status.watermark == Watermark(PAGE, PSID, at_ms(1749416520611))
    assert result.dropped == {}


def test_a_delivery_of_several_messages_is_one_status_each(directory: AccountDirectory) -> None:
    delivery = {"mids": ["m_1", "m_2"], "watermark": 1749416520611}
    body = _receipt("page", PAGE, PSID, timestamp=1749416521000, delivery=delivery)
    statuses = normalise_meta(body, directory, RECEIVED_AT).statuses
    assert [(s.provider_message_id, s.status, s.watermark) for s in statuses] == [
        ("m_1", "delivered", None),
        ("m_2", "delivered", None),
    ]


def test_an_instagram_read_names_the_message_seen(directory: AccountDirectory) -> None:
    body = _receipt("instagram", IG_ACCOUNT, IGSID, timestamp=1749416522000, read={"mid": MID})
    result = normalise_meta(body, directory, RECEIVED_AT)
    assert result.statuses == [
        ProviderStatus(Channel.INSTAGRAM, MID, "read", from_unix_ms(1749416522000))
    ]
    assert result.accounts == {(Channel.INSTAGRAM, IG_ACCOUNT)}


@pytest.mark.parametrize("receipt", [{"delivery": {}}, {"read": {}}, {"delivery": {"mids": []}}])
def test_a_receipt_naming_nothing_is_dropped_as_a_status(
    directory: AccountDirectory, receipt: dict[str, Any]
) -> None:
    result = normalise_meta(_receipt("page", PAGE, PSID, **receipt), directory, RECEIVED_AT)
    assert (result.statuses, result.messages) == ([], [])
    assert result.dropped == {("messenger", Dropped.STATUS): 1}


def _event(payload: Payload, **fields: Any) -> dict[str, Any]:
    sample = payload("messenger_text")
    event = sample["entry"][0]["messaging"][0]
    del event["message"]
    event.update(fields)
    return sample


def test_quick_reply_attachments_and_location(
    payload: Payload, directory: AccountDirectory
) -> None:
    sample = _event(
        payload,
        message={
            "mid": "m_qr",
            "text": "Red",
            "quick_reply": {"payload": "COLOR_RED"},
            "attachments": [
                {"type": "image", "payload": {"url": "https://cdn.example/a.jpg"}},
                {
                    "type": "image",
                    "payload": {"url": "https://cdn.example/s.png", "sticker_id": 369239263222822},
                },
                {"type": "file", "payload": {"url": "https://cdn.example/invoice.pdf"}},
                {"type": "location", "payload": {"coordinates": {"lat": 1.5, "long": 2.25}}},
                {
                    "type": "fallback",
                    "payload": {"url": "https://shop.example/p/1", "title": "A shoe"},
                },
            ],
        },
    )  # fmt: skip
    (inbound,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    m = inbound.message
    assert (m.kind, m.postback_payload) == ("interactive", "COLOR_RED")
    assert [a.kind for a in m.attachments] == ["image", "sticker", "document", "location"]
    assert m.attachments[0].provider_media_id == "https://cdn.example/a.jpg"
    assert m.attachments[0].content_type == "image/*"
    assert m.text == "Red\ngeo:1.500000,2.250000\nA shoe\nhttps://shop.example/p/1"


@pytest.mark.parametrize(
    ("fields", "kind", "text", "reply_to"),
    [
        (
            {"reaction": {"mid": "m_ours", "action": "react", "reaction": "love", "emoji": "❤"}},
            "reaction",
            "❤",
            "m_ours",
        ),
        (
            {"message_edit": {"mid": "m_1", "text": "fixed typo", "num_edit": 2}},
            "edit",
            "fixed typo",
            "m_1",
        ),
    ],
)
def test_reactions_and_edits_are_their_own_kinds(
    payload: Payload,
    directory: AccountDirectory,
    *,
    fields: dict[str, Any],
    kind: str,
    text: str,
    reply_to: str,
) -> None:
    (inbound,) = normalise_meta(_event(payload, **fields), directory, RECEIVED_AT).messages
    m = inbound.message
    assert (m.kind, m.text, m.reply_to_provider_message_id) == (kind, text, reply_to)
    if kind == "edit":
        assert m.message_id == "messenger:m_1:edit:2"
        assert m.provider_message_id == "m_1"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"reaction": {"mid": "m_ours", "action": "unreact"}}, Dropped.UNREACTION),
        ({"message": {"mid": "m_gone", "is_deleted": True}}, Dropped.DELETED),
        ({"optin": {"ref": "landing"}}, Dropped.UNKNOWN_KIND),
        ({"referral": {"ref": "ad", "source": "ADS"}}, Dropped.UNKNOWN_KIND),
    ],
)
def test_dropped_events(
    payload: Payload, directory: AccountDirectory, fields: dict[str, Any], reason: Dropped
) -> None:
    result = normalise_meta(_event(payload, **fields), directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {("messenger", reason): 1}


def test_standby_and_feed_changes_are_dropped(
    payload: Payload, directory: AccountDirectory
) -> None:
    sample = payload("messenger_text")
    entry = sample["entry"][0]
    entry["standby"] = [entry.pop("messaging")[0]]
    entry["changes"] = [{"field": "feed", "value": {"item": "post"}}]
    result = normalise_meta(sample, directory, RECEIVED_AT)
    assert result.messages == []
    assert result.dropped == {
        ("messenger", Dropped.STANDBY): 1,
        ("messenger", Dropped.UNKNOWN_KIND): 1,
    }


def test_instagram_text_with_image(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("instagram_text")
    result = normalise_meta(sample, directory, RECEIVED_AT)
    assert result.accounts == {(Channel.INSTAGRAM, IG_ACCOUNT)}
    (inbound,) = result.messages
    mid = sample["entry"][0]["messaging"][0]["message"]["mid"]
    assert inbound.key == f"instagram:{IG_ACCOUNT}:{IGSID}"
    m = inbound.message
    assert m.message_id == f"instagram:{mid}"
    assert m.channel is Channel.INSTAGRAM
    assert (m.sender.kind, m.sender.value) == (SenderKind.IGSID, IGSID)
    assert m.text == "Is the blue jacket back in stock?"
    assert [a.kind for a in m.attachments] == ["image"]
    assert (m.account, m.tenant, m.kind) == (IG_ACCOUNT, "acme", "message")


def test_instagram_story_reply_and_mention(payload: Payload, directory: AccountDirectory) -> None:
    sample = payload("instagram_story_reply")
    (inbound,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    m = inbound.message
    assert (m.kind, m.text) == ("story_reply", "Where can I buy this?")
    assert m.reply_to_provider_message_id == "18023420446038277"
    message = sample["entry"][0]["messaging"][0]["message"]
    del message["reply_to"]
    message["text"] = None
    message["attachments"] = [
        {"type": "story_mention", "payload": {"url": "https://cdn.example/story"}}
    ]
    (mention,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    assert mention.message.kind == "story_mention"
    assert mention.message.attachments[0].provider_media_id == "https://cdn.example/story"


def test_instagram_unsupported_messages_say_so(
    payload: Payload, directory: AccountDirectory
) -> None:
    sample = payload("instagram_text")
    message = sample["entry"][0]["messaging"][0]["message"]
    message.update({"is_unsupported": True, "text": None, "attachments": []})
    (inbound,) = normalise_meta(sample, directory, RECEIVED_AT).messages
    assert inbound.message.text == ""
    assert inbound.message.parse_errors == ["instagram reports an unsupported message type"]
