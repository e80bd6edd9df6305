"""Bad input campaign: hostile mail, webhooks and records through the real entry points.

Every hostile input gets a clear answer (an SMTP code, an HTTP 4xx, or a dead letter with
the reason), no process dies, and valid traffic sent in between is routed in full. The
webhooks are Meta's, X's and Telegram's: bad signatures and tokens, malformed and
oversize bodies, kinds nobody knows, a body signed through X's CRC check and a CRC
flood; nothing of them reaches the router under the attacker's identities.
"""

from __future__ import annotations

import asyncio
import functools
import json
import smtplib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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
    telegram_headers,
    telegram_text_update,
    whatsapp_text_webhook,
    x_dm_webhook,
    x_signed,
)
from switchboard_ingest_social.accounts import LONE_TELEGRAM_BOT

pytestmark = pytest.mark.e2e
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


MALLORY_WA_ID = "34600999000"
MALLORY_X_ID = "66600666"
MALLORY_TELEGRAM_ID = 66600666
#: A CRC token as X sends it (base64 of a UUID).
X_CRC_TOKEN = "M2RkODJkZmMtYjlkYi00NmQ4LTk0MGUtM2JjYzkwM2Q4MjQ0"  # noqa: S105 - a challenge

Signer = Callable[[bytes], dict[str, str]]


@dataclass(frozen=True)
class HostileWebhook:
    """A webhook POST to ``/webhooks/<provider><query>`` and the answers it may get."""

    provider: str
    body: bytes
    headers: dict[str, str]
    answers: set[int]
    query: str = ""


def whatsapp_body(text: str, wa_id: str = MALLORY_WA_ID) -> bytes:
    return whatsapp_text_webhook(
        text, wa_id=wa_id, wamid=f"wamid.{uuid.uuid4().hex}", timestamp=1749416383
    )


def x_body(text: str) -> bytes:
    return x_dm_webhook(text, sender_id=MALLORY_X_ID, event_id=str(uuid.uuid4().int >> 65))


def telegram_body(text: str) -> bytes:
    serial = uuid.uuid4().int >> 98
    return telegram_text_update(
        text, user_id=MALLORY_TELEGRAM_ID, update_id=serial, message_id=serial
    )


def malformed(
    provider: str, valid: bytes, wrong_types: bytes, huge: bytes, sign: Signer
) -> dict[str, HostileWebhook]:
    """What every provider's endpoint must refuse even when correctly signed."""
    deep = b"[" * 10_000 + b"]" * 10_000
    bodies = {
        "truncated JSON": (valid[:-40], 400),
        "JSON with wrong types": (wrong_types, 400),
        "not JSON at all": (b"\x00\xff<xml/>", 400),
        "a 2 MB body": (huge, 413),
        "a 10,000-deep JSON array": (deep, 400),
    }
    return {
        f"{provider}: {name}, signed": HostileWebhook(provider, body, sign(body), {status})
        for name, (body, status) in bodies.items()
    }


def _retyped(body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    payload = json.loads(body)
    change(payload)
    return json.dumps(payload).encode()


def hostile_webhooks(secrets: dict[str, str]) -> dict[str, HostileWebhook]:
    """Hostile webhooks for Meta, X and Telegram. Kinds nobody knows are acknowledged
    (200, nothing published), as providers add kinds; everything else is a 4xx."""
    meta: Signer = functools.partial(meta_signed, secret=secrets["META_APP_SECRET"])
    x: Signer = functools.partial(x_signed, secret=secrets["X_CONSUMER_SECRET"])
    token = secrets["TELEGRAM_SECRET_TOKEN"]
    plain = {"content-type": "application/json"}

    valid = whatsapp_body("hello")
    forged = {**meta(valid), "X-Hub-Signature-256": "sha256=" + "0" * 64}
    wrong = _retyped(
        valid,
        lambda p: p["entry"][0]["changes"][0]["value"]["messages"][0].update(timestamp={"x": [1]}),
    )
    unknown = json.dumps({"object": "future_product", "entry": [{"id": "1", "time": 1}]}).encode()
    cases = {
        "meta: forged signature": HostileWebhook("meta", valid, forged, {403}),
        "meta: no signature": HostileWebhook("meta", valid, plain, {401}),
        "meta: another app's secret": HostileWebhook(
            "meta", valid, meta_signed(valid, "not-our-app-secret"), {403}
        ),
        **malformed("meta", valid, wrong, whatsapp_body("x" * 2_000_000), meta),
        "meta: an unknown product, signed": HostileWebhook("meta", unknown, meta(unknown), {200}),
    }

    valid = x_body("hello")
    forged = {**x(valid), "x-twitter-webhooks-signature": "sha256=" + "A" * 43 + "="}
    as_meta = meta_signed(valid, secrets["X_CONSUMER_SECRET"])["X-Hub-Signature-256"]
    wrong = _retyped(valid, lambda p: p.update(for_user_id={"x": [1]}))
    unknown = json.dumps({"for_user_id": "4337869213", "future_events": [{"a": 1}]}).encode()
    cases |= {
        "x: forged signature": HostileWebhook("x", valid, forged, {403}),
        "x: no signature": HostileWebhook("x", valid, plain, {401}),
        "x: another app's consumer secret": HostileWebhook(
            "x", valid, x_signed(valid, "not-our-consumer-secret"), {403}
        ),
        "x: signed as Meta signs": HostileWebhook(
            "x", valid, {**plain, "x-twitter-webhooks-signature": as_meta}, {403}
        ),
        **malformed("x", valid, wrong, x_body("x" * 2_000_000), x),
        "x: only unknown event kinds, signed": HostileWebhook("x", unknown, x(unknown), {200}),
    }

    valid = telegram_body("hello")
    wrong = _retyped(valid, lambda p: p["message"].update(chat="not a chat"))
    unknown = json.dumps({"update_id": 5, "future_update": {"a": 1}}).encode()
    other = telegram_headers("not-our-secret-token")
    cases |= {
        "telegram: wrong secret token": HostileWebhook("telegram", valid, other, {403}),
        "telegram: no secret token": HostileWebhook("telegram", valid, plain, {401}),
        "telegram: a bot in the URL, another token": HostileWebhook(
            "telegram", valid, other, {403}, query="?bot=7012345678"
        ),
        "telegram: a bot id that is not one": HostileWebhook(
            "telegram", valid, telegram_headers(token), {403}, query="?bot=../../admin"
        ),
        **malformed(
            "telegram",
            valid,
            wrong,
            telegram_body("x" * 2_000_000),
            lambda _: telegram_headers(token),
        ),
        "telegram: an unknown update kind": HostileWebhook(
            "telegram", unknown, telegram_headers(token), {200}
        ),
    }
    return cases


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
            capacity={Channel.EMAIL: 50, Channel.WHATSAPP: 50, Channel.X: 50, Channel.TELEGRAM: 50},
            skills={"billing": 6, "orders": 6, "technical": 6},
        )
        honest = Customer(
            email=f"honest.{uuid.uuid4().hex[:8]}@example.org",
            phone="+34600999111",
            smtp_port=stack.smtp_port,
            social_url=stack.url("ingest-social"),
            meta_secret=TEST_SECRETS["META_APP_SECRET"],
            x_user_id=str(uuid.uuid4().int >> 80),
            x_secret=TEST_SECRETS["X_CONSUMER_SECRET"],
            telegram_user_id=uuid.uuid4().int >> 98,
            telegram_token=TEST_SECRETS["TELEGRAM_SECRET_TOKEN"],
        )
        social = stack.url("ingest-social")
        valid_sent = 0

        async def valid_traffic(provider: str = "meta") -> None:
            """A mail, and a message through the provider just attacked."""
            nonlocal valid_sent
            await honest.mail(f"Order {valid_sent}", "Where is my order, please?")
            text = f"Any news? {valid_sent}"
            if provider == "x":
                answer = await honest.x_dm(text)
            elif provider == "telegram":
                answer = await honest.telegram(text)
            else:
                answer = await honest.whatsapp(text)
            assert answer.status_code == 200, answer.text
            assert answer.json()["published"] == 1, answer.text
            valid_sent += 2

        for name, (raw, expected) in HOSTILE_MAIL.items():
            code = await asyncio.to_thread(smtp_send, stack.smtp_port, raw)
            outcomes.append(("SMTP", name, code))
            assert code in expected, f"{name}: SMTP {code}, expected one of {expected}"
            await valid_traffic()

        async with httpx.AsyncClient(base_url=social, timeout=60) as http:
            for name, hook in hostile_webhooks(TEST_SECRETS).items():
                response = await http.post(
                    f"/webhooks/{hook.provider}{hook.query}",
                    content=hook.body,
                    headers=hook.headers,
                )
                outcomes.append(("webhook", name, str(response.status_code)))
                assert response.status_code in hook.answers, f"{name}: {response.status_code}"
                assert response.json().get("detail") or response.json().get("error"), name
                if response.status_code == 200:
                    assert response.json()["status"] == "ignored", (name, response.text)
                await valid_traffic(hook.provider)

            # X's CRC check asked to sign a webhook body, then that body posted with the
            # answer as its signature (the CRC and the webhooks share key and function).
            forged = x_body("Refund me to account 666")
            crc = await http.get("/webhooks/x", params={"crc_token": forged.decode()})
            outcomes.append(
                ("webhook", "x: CRC asked to sign a webhook body", str(crc.status_code))
            )
            assert crc.status_code == 400, crc.text
            replayed = await http.post(
                "/webhooks/x",
                content=forged,
                headers={
                    "content-type": "application/json",
                    "x-twitter-webhooks-signature": crc.json().get("response_token", ""),
                },
            )
            outcomes.append(
                ("webhook", "x: that body posted with the answer", str(replayed.status_code))
            )
            assert replayed.status_code in {401, 403}, replayed.text
            await valid_traffic("x")

            # A flood of CRC checks from one client: answered until its allowance is
            # spent, then 429 with Retry-After (bounded: 30 requests).
            flood = [
                await http.get("/webhooks/x", params={"crc_token": X_CRC_TOKEN}) for _ in range(30)
            ]
            statuses = [answer.status_code for answer in flood]
            outcomes.append(
                (
                    "webhook",
                    "x: 30 CRC checks from one client",
                    f"{statuses.count(200)} x 200, {statuses.count(429)} x 429",
                )
            )
            assert set(statuses) <= {200, 429}, statuses
            assert 429 in statuses, statuses
            assert all(int(a.headers["retry-after"]) >= 1 for a in flood if a.status_code == 429), (
                statuses
            )
            await valid_traffic("x")

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
        x_id = await eventually(
            lambda: _customer(stack, f"x:{honest.x_user_id}"), what="the X identity"
        )
        # No accounts file in this stack: TELEGRAM_SECRET_TOKEN alone serves the lone bot.
        telegram_identity = f"telegram:{LONE_TELEGRAM_BOT}:{honest.telegram_user_id}"
        telegram_id = await eventually(
            lambda: _customer(stack, telegram_identity), what="the Telegram identity"
        )
        customers = {honest_id, phone_id, x_id, telegram_id}

        async def all_routed() -> int | None:
            items = [item for c in customers for item in await _timeline(stack, c)]
            conversations = {item["conversation_id"] for item in items}
            decided = {e.conversation_id for e in await helpdesk.decisions()}
            if len(items) == valid_sent and conversations <= decided:
                return len(items)
            return None

        stored = await eventually(all_routed, timeout=120, what="valid traffic stored and routed")
        assert stored == valid_sent
        # Nothing of the hostile webhooks reached the router under the attacker's names.
        for identity in (
            f"whatsapp:+{MALLORY_WA_ID}",
            f"x:{MALLORY_X_ID}",
            f"telegram:{LONE_TELEGRAM_BOT}:{MALLORY_TELEGRAM_ID}",
        ):
            assert await _customer(stack, identity) is None, identity

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
    async with httpx.AsyncClient(timeout=10, headers=stack.router_auth()) as http:
        items = (
            await http.get(f"{stack.url('router')}/customers", params={"identity": identity})
        ).json()["items"]
    return str(items[0]["customer_id"]) if items else None


async def _timeline(stack: Stack, customer_id: str) -> list[dict[str, str]]:
    async with httpx.AsyncClient(timeout=10, headers=stack.router_auth()) as http:
        page = (
            await http.get(
                f"{stack.url('router')}/customers/{customer_id}/timeline", params={"limit": 200}
            )
        ).json()
    # The customers' messages: the timeline's activity items (acknowledgements,
    # assignments) are not what this counts.
    items: list[dict[str, str]] = [i for i in page["items"] if i["type"] == "message"]
    return items
