"""Bad input campaign: hostile mail, webhooks and records through the real entry points.

Every hostile input gets a clear answer (an SMTP code, an HTTP 4xx, or a dead letter with
the reason), no process dies, and valid traffic sent in between is routed in full.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import uuid
from collections.abc import Iterator

import httpx
import pytest

from switchboard_common.contract import DEADLETTER, INBOUND, Channel, DeadLetter
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.builders import message as valid_message
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import (
    Customer,
    Helpdesk,
    eventually,
    meta_signed,
    whatsapp_text_webhook,
)

pytestmark = pytest.mark.e2e
SECRET = TEST_SECRETS["META_APP_SECRET"]
FROM = "mallory@example.net"
TO = "help@support.example.com"


@pytest.fixture(scope="module")
def stack(infra: Infra) -> Iterator[Stack]:
    with running_stack(infra.kafka_bootstrap, infra.mongodb_url) as running:
        yield running


def smtp_send(port: int, raw: bytes, *, mail_from: str = FROM) -> str:
    """Deliver raw bytes as a mail server would; return the final SMTP reply code."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            smtp.ehlo()
            code, _ = smtp.mail(mail_from, ["BODY=8BITMIME"])
            if code != 250:
                return str(code)
            code, _ = smtp.rcpt(TO)
            if code != 250:
                return str(code)
            code, _ = smtp.data(raw)
            return str(code)
    except smtplib.SMTPResponseException as error:
        return str(error.smtp_code)
    except smtplib.SMTPServerDisconnected:
        return "disconnected"


def nested_multipart(depth: int) -> bytes:
    """A MIME bomb: multiparts nested ``depth`` deep."""
    head = b"From: mallory@example.net\r\nTo: help@support.example.com\r\nSubject: bomb\r\n"
    body = b"innermost"
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary="
            + boundary
            + b"\r\n\r\n--"
            + boundary
            + b"\r\n"
            + body
            + b"\r\n--"
            + boundary
            + b"--\r\n"
        )
    return head + b"MIME-Version: 1.0\r\n" + body


HOSTILE_MAIL: dict[str, tuple[bytes, set[str]]] = {
    "broken MIME boundary": (
        b"From: mallory@example.net\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n--never-closed\r\n'
        b"Content-Type: text/plain\r\n\r\nhello",
        {"250"},
    ),
    "MIME bomb, 300 levels deep": (nested_multipart(300), {"250", "552", "554"}),
    "invalid UTF-8 in an 8-bit body": (
        b"From: mallory@example.net\r\nSubject: bytes\r\nContent-Type: text/plain; "
        b"charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xff\xfe\xc3\x28 bad",
        {"250"},
    ),
    "a 200 KB header line": (
        b"From: mallory@example.net\r\nSubject: " + b"A" * 200_000 + b"\r\n\r\nbody",
        {"250", "500", "552", "554"},
    ),
    "no headers at all": (b"\r\n\r\njust a body", {"250"}),
    "a 30 MB message (limit 25 MB)": (
        b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 400_000,
        {"552"},
    ),
    "a 30 MB single line": (b"Subject: big\r\n\r\n" + b"x" * 30_000_000, {"500", "552"}),
}


def signed(body: bytes) -> dict[str, str]:
    return meta_signed(body, SECRET)


def whatsapp_body(text: str, wa_id: str = "34600999000") -> bytes:
    return whatsapp_text_webhook(
        text, wa_id=wa_id, wamid=f"wamid.{uuid.uuid4().hex}", timestamp=1749416383
    )


def hostile_webhooks() -> dict[str, tuple[bytes, dict[str, str], set[int]]]:
    valid = whatsapp_body("hello")
    wrong_types = json.loads(valid)
    wrong_types["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = {"x": [1]}
    wrong = json.dumps(wrong_types).encode()
    huge = whatsapp_body("x" * 2_000_000)
    return {
        "forged signature": (
            valid,
            {**signed(valid), "X-Hub-Signature-256": "sha256=" + "0" * 64},
            {401, 403},
        ),
        "no signature": (valid, {"content-type": "application/json"}, {401, 403}),
        "truncated JSON, signed": (valid[:-40], signed(valid[:-40]), {400}),
        "JSON with wrong types, signed": (wrong, signed(wrong), {400}),
        "not JSON at all, signed": (b"\x00\xff<xml/>", signed(b"\x00\xff<xml/>"), {400}),
        "a 2 MB webhook": (huge, signed(huge), {413}),
        "a 10,000-deep JSON array, signed": (
            b"[" * 10_000 + b"]" * 10_000,
            signed(b"[" * 10_000 + b"]" * 10_000),
            {400},
        ),
    }


def hostile_records() -> dict[str, tuple[bytes | None, list[tuple[str, bytes]], str]]:
    good = valid_message(f"hostile-{uuid.uuid4().hex}")
    body = good.model_dump_json().encode()
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"x"),
        ("ce_type", b"support.message.received"),
        ("ce_source", b"/hostile"),
        ("ce_time", b"2026-03-02T09:30:00Z"),
        ("content-type", b"application/json"),
    ]
    wrong_type = [(k, b"support.agent.exploded" if k == "ce_type" else v) for k, v in headers]
    payload = json.loads(body)
    payload["received_at"] = 12345
    return {
        "record that is not JSON": (b"\x89PNG\r\n\x1a\n", headers, "not_json"),
        "unknown ce_type": (body, wrong_type, "unknown_type"),
        "JSON with wrong types": (json.dumps(payload).encode(), headers, "invalid_payload"),
        "no CloudEvents headers": (body, [], "bad_headers"),
        "empty value": (None, headers, "not_json"),
    }


async def test_hostile_inputs_get_clear_answers_and_valid_traffic_flows(stack: Stack) -> None:
    outcomes: list[tuple[str, str, str]] = []
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        await helpdesk.agent(
            "agent-steady",
            capacity={Channel.EMAIL: 50, Channel.WHATSAPP: 50},
            skills={"billing": 6, "orders": 6, "technical": 6},
        )
        honest = Customer(
            email=f"honest.{uuid.uuid4().hex[:8]}@example.org",
            phone="+34600999111",
            smtp_port=stack.smtp_port,
            social_url=stack.url("ingest-social"),
            meta_secret=TEST_SECRETS["META_APP_SECRET"],
        )
        valid_sent = 0

        async def valid_traffic() -> None:
            nonlocal valid_sent
            await honest.mail(f"Order {valid_sent}", "Where is my order, please?")
            answer = await honest.whatsapp(f"Any news? {valid_sent}")
            assert answer.status_code == 200
            valid_sent += 2

        for name, (raw, expected) in HOSTILE_MAIL.items():
            code = await asyncio.to_thread(smtp_send, stack.smtp_port, raw)
            outcomes.append(("SMTP", name, code))
            assert code in expected, f"{name}: SMTP {code}, expected one of {expected}"
            await valid_traffic()

        async with httpx.AsyncClient(timeout=60) as http:
            for name, (body, http_headers, codes) in hostile_webhooks().items():
                response = await http.post(
                    f"{stack.url('ingest-social')}/webhooks/meta",
                    content=body,
                    headers=http_headers,
                )
                outcomes.append(("webhook", name, str(response.status_code)))
                assert response.status_code in codes, f"{name}: {response.status_code}"
                assert response.json().get("detail") or response.json().get("error"), name
                await valid_traffic()

        records = hostile_records()
        for index, (value, record_headers, _) in enumerate(records.values()):
            await probe.send_raw(INBOUND, value, key=f"hostile-{index}", headers=record_headers)
            await valid_traffic()

        letters = await eventually(
            lambda: _letters(probe, len(records)), timeout=90, what="dead letters"
        )
        by_key = dict(letters)
        for index, (name, (_, _, reason)) in enumerate(records.items()):
            letter = by_key[f"hostile-{index}".encode()]
            outcomes.append(("record", name, f"dead letter: {letter.reason}"))
            assert letter.reason == reason, (name, letter.reason, letter.error)
            assert letter.error

        # Every valid message sent between the hostile ones was routed.
        honest_id = await eventually(
            lambda: _customer(stack, f"email:{honest.email}"), what="the honest customer"
        )
        phone_id = await eventually(
            lambda: _customer(stack, f"whatsapp:{honest.phone}"), what="the WhatsApp identity"
        )

        async def all_routed() -> int | None:
            items = await _timeline(stack, honest_id) + await _timeline(stack, phone_id)
            conversations = {item["conversation_id"] for item in items}
            decided = {e.conversation_id for e in await helpdesk.decisions()}
            if len(items) == valid_sent and conversations <= decided:
                return len(items)
            return None

        stored = await eventually(all_routed, timeout=120, what="valid traffic stored and routed")
        assert stored == valid_sent

    for name, process in stack.services.items():
        assert process.process is not None
        assert process.process.poll() is None, f"{name} died:\n{process.tail()}"
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{stack.url(name)}/readyz")).status_code == 200, name
    print("\n" + "\n".join(f"{kind:8} {name:36} -> {code}" for kind, name, code in outcomes))


async def _letters(probe: TopicProbe, expected: int) -> dict[bytes, DeadLetter] | None:
    found = {
        record.key or b"": event
        for record, event in await probe.read_events(DEADLETTER, timeout=1.0)
        if isinstance(event, DeadLetter)
    }
    return found if len(found) >= expected else None


async def _customer(stack: Stack, identity: str) -> str | None:
    async with httpx.AsyncClient(timeout=10) as http:
        items = (
            await http.get(f"{stack.url('router')}/customers", params={"identity": identity})
        ).json()["items"]
    return str(items[0]["customer_id"]) if items else None


async def _timeline(stack: Stack, customer_id: str) -> list[dict[str, str]]:
    async with httpx.AsyncClient(timeout=10) as http:
        page = (
            await http.get(
                f"{stack.url('router')}/customers/{customer_id}/timeline", params={"limit": 200}
            )
        ).json()
    items: list[dict[str, str]] = page["items"]
    return items
