"""Signed sample webhooks posted over real HTTP to the running service on real Kafka;
the published events are consumed back and checked field by field."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard_common.cloudevents import header_map
from switchboard_common.contract import INBOUND, Channel, MessageReceived, SenderKind
from switchboard_common.deadletter import RawRecord
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.social import (
    BOT,
    GLOBEX_META_SECRET,
    GLOBEX_PAGE,
    IG_ACCOUNT,
    OTHER_BOT,
    PAGE,
    RECEIVED_AT,
    TELEGRAM_OTHER_TOKEN,
    WHATSAPP_NUMBER,
    X_ACCOUNT,
    RunningSocial,
    encode,
    load_sample,
)
from switchboard_ingest_social.accounts import LONE_TELEGRAM_BOT
from switchboard_ingest_social.normalise import normalise_meta, normalise_telegram, normalise_x

pytestmark = pytest.mark.integration

META_SAMPLES = [
    "whatsapp_text",
    "whatsapp_image",
    "whatsapp_interactive",
    "whatsapp_status",
    "messenger_text",
    "messenger_postback",
    "messenger_echo",
    "instagram_text",
    "instagram_story_reply",
]


def _by_id(records: list[tuple[RawRecord, Any]]) -> dict[str, tuple[RawRecord, MessageReceived]]:
    out: dict[str, tuple[RawRecord, MessageReceived]] = {}
    for record, event in records:
        assert isinstance(event, MessageReceived)
        out[event.message_id] = (record, event)
    return out


async def test_every_sample_is_published_as_the_provider_sent_it(
    social: RunningSocial, probe: TopicProbe
) -> None:
    directory = social.parts.directory
    expected = []
    for name in META_SAMPLES:
        sample = load_sample(name)
        response = await social.post("meta", encode(sample))
        assert response.status_code == 200, response.text
        normalised = normalise_meta(sample, directory, RECEIVED_AT)
        assert response.json()["published"] == len(normalised.messages)
        assert response.json()["status"] == ("accepted" if normalised.messages else "ignored")
        expected += normalised.messages
    sample = load_sample("x_dm")
    assert (await social.post("x", encode(sample))).status_code == 200
    expected += normalise_x(sample, directory, RECEIVED_AT).messages
    for name in ("telegram_message", "telegram_edited_message"):
        sample = load_sample(name)
        assert (await social.post("telegram", encode(sample))).status_code == 200
        expected += normalise_telegram(sample, BOT, directory, RECEIVED_AT).messages
    assert len(expected) == 11

    published = _by_id(await probe.read_events(INBOUND, count=len(expected), settle=1.0))
    assert sorted(published) == sorted(m.message.message_id for m in expected)
    for inbound in expected:
        record, event = published[inbound.message.message_id]
        assert record.key == inbound.key.encode()
        assert event == inbound.message  # every field survived the trip
        headers = header_map(record.headers)
        assert headers["ce_id"] == event.message_id  # redelivery: same event id
        assert headers["ce_type"] == "support.message.received"
        assert headers["ce_source"] == "/switchboard/ingest-social"
        assert headers["content-type"] == "application/json"

    # And field by field for one message of each provider, independent of the core.
    _, wa = published["whatsapp:wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="]
    assert (wa.channel, wa.sender.kind, wa.sender.value) == (
        Channel.WHATSAPP,
        SenderKind.PHONE,
        "+16505551234",
    )
    assert (wa.text, wa.account, wa.tenant, wa.kind) == (
        "Does it come in another color?",
        WHATSAPP_NUMBER,
        "acme",
        "message",
    )
    assert wa.received_at == RECEIVED_AT
    postback = next(e for _, e in published.values() if e.kind == "postback")
    assert (postback.channel, postback.sender.value, postback.account) == (
        Channel.MESSENGER,
        "6712345678901234",
        PAGE,
    )
    assert (postback.text, postback.postback_payload) == ("Track my order", "TRACK_ORDER")
    story = next(e for _, e in published.values() if e.kind == "story_reply")
    assert (story.channel, story.sender.kind, story.account) == (
        Channel.INSTAGRAM,
        SenderKind.IGSID,
        IG_ACCOUNT,
    )
    record, dm = published["x:954491830116155396"]
    assert record.key == b"x:3001969357"
    assert (dm.sender.display_name, dm.account, len(dm.attachments)) == (
        "Jordan Brinks",
        X_ACCOUNT,
        1,
    )
    record, photo = published[f"telegram:{BOT}:1111111:1365"]
    assert record.key == f"telegram:{BOT}:1111111".encode()
    assert (photo.text, photo.attachments[0].size, photo.reply_to_provider_message_id) == (
        "The screen shows error E42",
        88614,
        "1360",
    )
    edit = next(e for _, e in published.values() if e.kind == "edit")
    assert edit.message_id == f"telegram:{BOT}:1111111:1366:edit:1749416745"

    metrics = await social.metrics()
    assert (
        'switchboard_ingest_social_requests_total{outcome="accepted",provider="whatsapp"} 3.0'
        in metrics
    )
    assert (
        'switchboard_ingest_social_requests_total{outcome="ignored",provider="messenger"} 1.0'
        in metrics
    )
    assert (
        'switchboard_ingest_social_items_dropped_total{provider="whatsapp",reason="status"} 2.0'
        in metrics
    )
    assert (
        'switchboard_ingest_social_items_dropped_total{provider="x",reason="echo"} 1.0' in metrics
    )
    assert (
        'switchboard_ingest_social_messages_published_total{channel="telegram",kind="edit"} 1.0'
        in metrics
    )
    assert 'switchboard_events_published_total{topic="support.inbound.v1"} 11.0' in metrics
    assert 'switchboard_publish_seconds_count{topic="support.inbound.v1"} 10.0' in metrics


async def test_one_post_with_many_entries_is_acknowledged_only_when_all_are_stored(
    social: RunningSocial, probe: TopicProbe
) -> None:
    sample = load_sample("messenger_text")
    template = sample["entry"][0]
    entries = []
    for i in range(40):
        entry = {**template, "messaging": [dict(template["messaging"][0])]}
        event = entry["messaging"][0]
        event["sender"] = {"id": f"67123456789{i:05d}"}
        event["message"] = {"mid": f"m_batch_{i}", "text": f"message {i}"}
        entries.append(entry)
    sample["entry"] = entries
    response = await social.post("meta", encode(sample))
    assert response.status_code == 200
    assert response.json()["published"] == 40
    # Acknowledged means stored: every message is readable right after the 200.
    records = _by_id(await probe.read_events(INBOUND, count=40, settle=0.5))
    assert sorted(records) == sorted(f"messenger:m_batch_{i}" for i in range(40))
    keys = {r.key for r, _ in records.values()}
    assert len(keys) == 40  # one identity per sender, each its own key


async def test_a_redelivered_webhook_is_acknowledged_and_published_once(
    social: RunningSocial, probe: TopicProbe
) -> None:
    body = encode(load_sample("whatsapp_text"))
    assert (await social.post("meta", body)).status_code == 200
    # Meta redelivers (it did not see our 200): acknowledged again, not published again.
    assert (await social.post("meta", body)).status_code == 200
    records = await probe.read_events(INBOUND, count=1, settle=1.0)
    assert len(records) == 1
    ((record, event),) = records
    assert header_map(record.headers)["ce_id"] == event.message_id  # type: ignore[attr-defined]


async def test_accounts_map_to_tenants_and_their_own_secrets(
    social: RunningSocial, probe: TopicProbe
) -> None:
    sample = load_sample("messenger_text")
    sample["entry"][0]["id"] = GLOBEX_PAGE
    sample["entry"][0]["messaging"][0]["recipient"]["id"] = GLOBEX_PAGE
    body = encode(sample)
    # Globex's page belongs to another Meta app: the deployment's secret is not enough.
    refused = await social.post("meta", body)
    assert refused.status_code == 403
    assert "messenger account" in refused.json()["detail"]
    assert (await social.post("meta", body, secret=GLOBEX_META_SECRET)).status_code == 200
    # Telegram: the secret token says which bot; ?bot= names it explicitly.
    update = load_sample("telegram_message")
    assert (
        await social.post("telegram", encode(update), secret=TELEGRAM_OTHER_TOKEN)
    ).status_code == 200
    update["message"]["message_id"] = 1400
    answered = await social.post(
        "telegram", encode(update), secret=TELEGRAM_OTHER_TOKEN, query=f"?bot={OTHER_BOT}"
    )
    assert answered.status_code == 200
    records = await probe.read_events(INBOUND, count=3, settle=0.5)
    events = _by_id(records)
    assert len(events) == 3
    (record, globex) = next(v for k, v in events.items() if k.startswith("messenger:"))
    assert (globex.tenant, globex.account) == ("globex", GLOBEX_PAGE)
    assert record.key == f"messenger:{GLOBEX_PAGE}:6712345678901234".encode()
    bots = sorted(
        (e.message_id, e.tenant) for _, e in events.values() if e.channel is Channel.TELEGRAM
    )
    assert bots == [
        (f"telegram:{OTHER_BOT}:1111111:1365", "globex"),
        (f"telegram:{OTHER_BOT}:1111111:1400", "globex"),
    ]


@pytest.mark.parametrize("social_env", [{"INGEST_SOCIAL_ACCOUNTS_FILE": None}], indirect=True)
async def test_telegram_secret_token_alone_is_enough_for_one_bot(
    social: RunningSocial, probe: TopicProbe
) -> None:
    # The simplest setup: TELEGRAM_SECRET_TOKEN and no accounts file. The update does
    # not name the bot, so its messages are filed under the lone bot "default".
    update = load_sample("telegram_message")
    answered = await social.post("telegram", encode(update))
    assert answered.status_code == 200, answered.text
    assert answered.json()["published"] == 1
    # Named in the URL, the bot's own id is used (and the same token proves it).
    update["message"]["message_id"] = 1401
    named = await social.post("telegram", encode(update), query=f"?bot={BOT}")
    assert named.status_code == 200, named.text
    refused = await social.post("telegram", encode(update), secret=TELEGRAM_OTHER_TOKEN)
    assert refused.status_code == 403
    events = _by_id(await probe.read_events(INBOUND, count=2, settle=0.5))
    assert sorted(events) == [
        f"telegram:{BOT}:1111111:1401",
        f"telegram:{LONE_TELEGRAM_BOT}:1111111:1365",
    ]
    record, event = events[f"telegram:{LONE_TELEGRAM_BOT}:1111111:1365"]
    assert record.key == f"telegram:{LONE_TELEGRAM_BOT}:1111111".encode()
    assert (event.account, event.tenant) == (LONE_TELEGRAM_BOT, None)
