"""Every rejection path over real HTTP: nothing is published for any of them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from switchboard_common.contract import INBOUND
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.social import (
    META_SECRET,
    TELEGRAM_OTHER_TOKEN,
    VERIFY_TOKEN,
    X_SECRET,
    RunningSocial,
    encode,
    load_sample,
    signed_headers,
)
from switchboard_ingest_social import signatures

pytestmark = pytest.mark.integration


async def _nothing_published(probe: TopicProbe) -> None:
    assert await probe.read(INBOUND, count=1, timeout=1.5) == []


async def test_missing_and_wrong_signatures(social: RunningSocial, probe: TopicProbe) -> None:
    body = encode(load_sample("whatsapp_text"))
    cases = [
        ("meta", {}, 401, "missing X-Hub-Signature-256"),
        ("meta", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403, "does not match"),
        ("meta", signed_headers("meta", body, "another-app-secret"), 403, "does not match"),
        # Signed as X signs (base64) with the right key is still not a Meta signature.
        (
            "meta",
            {"X-Hub-Signature-256": signatures.x_signature(body, META_SECRET.encode())},
            403,
            "",
        ),
        ("x", {}, 401, "missing x-twitter-webhooks-signature"),
        ("x", signed_headers("x", body, "wrong"), 403, "does not match"),
        ("telegram", {}, 401, "missing X-Telegram-Bot-Api-Secret-Token"),
        ("telegram", signed_headers("telegram", body, "wrong-token"), 403, "matches neither"),
    ]
    for provider, headers, status, detail in cases:
        response = await social.http.post(f"/webhooks/{provider}", content=body, headers=headers)
        assert response.status_code == status, (provider, headers, response.text)
        assert response.json()["status"] == "bad_signature"
        assert detail in response.json()["detail"]
    # A body changed after signing (one byte) no longer verifies.
    headers = signed_headers("meta", body)
    tampered = body.replace(b"another color", b"another colour")
    assert (
        await social.http.post("/webhooks/meta", content=tampered, headers=headers)
    ).status_code == 403
    # A bot named in the URL must present its own token, not another bot's.
    update = encode(load_sample("telegram_message"))
    named = await social.post(
        "telegram", update, secret=TELEGRAM_OTHER_TOKEN, query="?bot=7012345678"
    )
    assert named.status_code == 403
    await _nothing_published(probe)
    metrics = await social.metrics()
    assert (
        'switchboard_ingest_social_requests_total{outcome="bad_signature",provider="meta"} 5.0'
        in metrics
    )
    assert (
        'switchboard_ingest_social_requests_total{outcome="bad_signature",provider="telegram"} 3.0'
        in metrics
    )


async def test_meta_handshake_and_x_crc(social: RunningSocial) -> None:
    ok = await social.http.get(
        "/webhooks/meta",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert (ok.status_code, ok.text) == (200, "1158201444")
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1158201444"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1158201444"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "<script>"},
    ):
        refused = await social.http.get("/webhooks/meta", params=params)
        assert refused.status_code == 403
        assert "1158201444" not in refused.text
    crc = await social.http.get("/webhooks/x", params={"crc_token": "Zm9vYmFy"})
    assert crc.status_code == 200
    assert crc.json() == {
        "response_token": signatures.x_crc_response("Zm9vYmFy", X_SECRET.encode())
    }
    assert (await social.http.get("/webhooks/x")).status_code == 400  # no crc_token
    metrics = await social.metrics()
    assert (
        'switchboard_ingest_social_handshakes_total{outcome="rejected",provider="meta"} 4.0'
        in metrics
    )


async def test_oversize_bodies_are_refused_without_reading_them(
    social: RunningSocial, probe: TopicProbe
) -> None:
    limit = social.parts.settings.max_body_bytes
    sample = load_sample("whatsapp_text")
    sample["padding"] = "x" * limit
    body = encode(sample)
    declared = await social.http.post(
        "/webhooks/meta", content=body, headers=signed_headers("meta", body)
    )
    assert declared.status_code == 413
    assert declared.json()["status"] == "too_large"

    async def chunked() -> AsyncIterator[bytes]:
        # No Content-Length: the service must count while streaming and stop early.
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    streamed = await social.http.post(
        "/webhooks/meta", content=chunked(), headers=signed_headers("meta", body)
    )
    assert streamed.status_code == 413
    await _nothing_published(probe)


async def test_invalid_json_and_payloads_get_400_with_a_reason(
    social: RunningSocial, probe: TopicProbe
) -> None:
    broken_message = load_sample("whatsapp_text")
    del broken_message["entry"][0]["changes"][0]["value"]["messages"][0]["from"]
    cases = [
        ("meta", b'{"object": "page", "entry": [', "body is not valid JSON"),
        ("meta", b"\xff\xfe not utf-8", "body is not valid JSON"),
        ("meta", b"[1, 2, 3]", "body must be a JSON object"),
        ("telegram", b'{"update_id": ' + b"7" * 5000 + b"}", "beyond the parser's limits"),
        ("x", b"[" * 8000 + b"]" * 8000, "beyond the parser's limits"),
        ("meta", encode(broken_message), "entry.0.changes.0.messages.value.messages.0.from"),
        ("meta", b'{"object": "page", "entry": [{"messaging": []}]}', "entry.0.id"),
        ("x", b'{"direct_message_events": []}', "for_user_id"),
        ("telegram", b'{"message": {"text": "hi"}}', "update_id"),
    ]
    for provider, body, reason in cases:
        response = await social.post(provider, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["status"] == "invalid"
        assert reason in response.json()["detail"], response.json()["detail"]
        # The reason names what is wrong, never echoes the (personal) content.
        assert "16505551234" not in response.json()["detail"]
    await _nothing_published(probe)


async def test_unknown_event_kinds_are_acknowledged_and_counted(
    social: RunningSocial, probe: TopicProbe
) -> None:
    for provider, payload in (
        ("meta", {"object": "permissions", "entry": [{"id": "1", "time": 1, "changes": []}]}),
        ("x", {"for_user_id": "4337869213", "follow_events": [{"type": "follow"}]}),
        ("telegram", {"update_id": 9, "poll": {"id": "1", "question": "?", "options": []}}),
    ):
        response = await social.post(provider, json.dumps(payload).encode())
        assert response.status_code == 200
        assert response.json() == {
            "status": "ignored",
            "detail": "nothing to publish",
            "published": 0,
            "dropped": 1,
        }
    await _nothing_published(probe)
    metrics = await social.metrics()
    for provider in ("meta", "x", "telegram"):
        labels = f'provider="{provider}",reason="unknown_kind"'
        assert f"switchboard_ingest_social_items_dropped_total{{{labels}}} 1.0" in metrics
