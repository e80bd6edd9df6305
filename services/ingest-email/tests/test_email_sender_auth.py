"""Who really sent it, through the real SMTP entry point and the real Kafka (and, for the
Message-ID scoping, the router's timeline on the real MongoDB-wire server).

- DKIM mode: the service fetches keys from a DNS server on 127.0.0.1 (``Any``), set
  by ``INGEST_EMAIL_DNS_RESOLVER`` as in production, and puts its verdict on the event.
- Authentication-Results mode: only the configured authserv-id is believed.
- A Message-ID reused by another sender is another message; a redelivery is not.
- With the router: only signed mail joins the CRM customer its address names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from switchboard_common.contract import INBOUND, Channel, MessageReceived, SenderAuthentication
from switchboard_devkit.running.inprocess import running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import eventually, inbound, running_router
from switchboard_ingest_email.app import build

pytestmark = pytest.mark.integration

HELP = "help@support.example.com"


def mail(sender: str, message_id: str, text: str, *headers: str) -> bytes:
    return (
        "".join(h + "\r\n" for h in headers) + f"From: {sender}\r\n"
        f"To: {HELP}\r\n"
        "Subject: My order\r\n"
        "Date: Mon, 02 Mar 2026 09:30:00 +0100\r\n"
        f"Message-ID: {message_id}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{text}\r\n"
    ).encode()


async def published(probe: TopicProbe, count: int) -> dict[str, MessageReceived]:
    """The inbound events by text (each test mail has its own), after a settle that would
    show any extra copy."""
    events = await probe.read_events(INBOUND, count=count, timeout=30, settle=2.0)
    found = {e.text: e for _, e in events if isinstance(e, MessageReceived)}
    assert len(events) == len(found) == count
    return found


async def deliver(smtp_send: Callable[..., Any], port: int, *mails: bytes) -> None:
    for data in mails:
        reply = await asyncio.to_thread(smtp_send, port, data)
        assert reply.code == 250, reply.message


async def test_dkim_verified_by_the_service_through_its_configured_resolver(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    dkim_key: Any,
    dns_stub: Any,
) -> None:
    dns_stub.records["sel._domainkey.example.com"] = dkim_key.txt
    dns_stub.records["sel._domainkey.evil.example"] = dkim_key.txt
    settings = make_settings(
        INGEST_EMAIL_SENDER_AUTH="dkim",
        INGEST_EMAIL_DNS_RESOLVER=dns_stub.address,
        INGEST_EMAIL_DNS_TIMEOUT_SECONDS="3",
    )
    genuine = dkim_key.sign(mail("ana@example.com", "<g-1@example.com>", "genuine"), "example.com")
    # Signed, validly, by the forger's own domain, with Ana's address in From.
    forged = dkim_key.sign(mail("ana@example.com", "<f-1@evil.example>", "forged"), "evil.example")
    signed = dkim_key.sign(mail("ana@example.com", "<t-1@example.com>", "signed"), "example.com")
    tampered = signed.replace(b"signed\r\n", b"altered\r\n")
    unsigned = mail("ana@example.com", "<u-1@example.com>", "unsigned")
    async with running(build(settings).runtime):
        await deliver(smtp_send, settings.smtp_port, genuine, forged, tampered, unsigned)
    events = await published(probe, 4)

    assert events["genuine"].sender_authenticated is True
    assert events["genuine"].authentication == SenderAuthentication(
        method="dkim", dkim="pass", aligned=True
    )
    assert events["forged"].sender_authenticated is False
    assert events["forged"].authentication == SenderAuthentication(
        method="dkim", dkim="pass", aligned=False
    )
    assert events["altered"].sender_authenticated is False
    assert events["altered"].authentication == SenderAuthentication(method="dkim", dkim="fail")
    assert events["unsigned"].sender_authenticated is False
    assert events["unsigned"].authentication == SenderAuthentication(method="dkim", dkim="none")
    # The keys came from the configured resolver; unsigned mail asked nothing.
    assert set(dns_stub.questions) == {"sel._domainkey.example.com", "sel._domainkey.evil.example"}


async def test_a_resolver_that_does_not_answer_loses_no_mail(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    dkim_key: Any,
    dns_stub: Any,
) -> None:
    dns_stub.silent = True
    settings = make_settings(
        INGEST_EMAIL_DNS_RESOLVER=dns_stub.address, INGEST_EMAIL_DNS_TIMEOUT_SECONDS="1"
    )
    signed = dkim_key.sign(mail("ana@example.com", "<d-1@example.com>", "dns down"), "example.com")
    async with running(build(settings).runtime):
        await deliver(smtp_send, settings.smtp_port, signed)
    event = (await published(probe, 1))["dns down"]
    assert set(dns_stub.questions) == {"sel._domainkey.example.com"}  # asked, no answer
    assert event.sender_authenticated is False
    assert event.authentication == SenderAuthentication(method="dkim", dkim="temperror")


async def test_authentication_results_of_the_configured_mta_only(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
) -> None:
    settings = make_settings(
        INGEST_EMAIL_SENDER_AUTH="authentication-results",
        INGEST_EMAIL_AUTHSERV_IDS="mx.support.example.com",
    )
    ours = "Authentication-Results: mx.support.example.com;"
    passed = mail(
        "ana@example.com", "<p-1@example.com>", "pass",
        f"{ours} dkim=pass header.d=example.com; spf=pass smtp.mailfrom=example.com;"
        " dmarc=pass header.from=example.com",
    )  # fmt: skip
    failed = mail(
        "ana@example.com", "<f-1@example.com>", "fail",
        f"{ours} dkim=none; spf=fail smtp.mailfrom=evil.example; dmarc=fail"
        " header.from=example.com",
        # Written by the sender, below the MTA's header: never believed.
        f"{ours} dmarc=pass header.from=example.com",
    )  # fmt: skip
    unvouched = mail(
        "ana@example.com", "<n-1@example.com>", "none",
        "Authentication-Results: elsewhere.example; dmarc=pass header.from=example.com",
    )  # fmt: skip
    async with running(build(settings).runtime):
        await deliver(smtp_send, settings.smtp_port, passed, failed, unvouched)
    events = await published(probe, 3)

    assert events["pass"].sender_authenticated is True
    assert events["pass"].authentication == SenderAuthentication(
        method="authentication-results", dkim="pass", spf="pass", dmarc="pass", aligned=True
    )
    assert events["fail"].sender_authenticated is False
    assert events["fail"].authentication == SenderAuthentication(
        method="authentication-results", dkim="none", spf="fail", dmarc="fail"
    )
    assert events["none"].sender_authenticated is False
    assert events["none"].authentication == SenderAuthentication(
        method="authentication-results", dkim="none"
    )


async def test_a_reused_message_id_from_another_sender_is_not_swallowed(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    service_env: dict[str, str],
) -> None:
    settings = make_settings(INGEST_EMAIL_SENDER_AUTH="off")
    ana = mail("Ana <ana@example.com>", "<order-1234@mail.example.com>", "ana's order")
    # Another sender copies Ana's Message-ID (a buggy client, or to suppress her mail).
    mallory = mail("mallory@example.net", "<order-1234@mail.example.com>", "mallory's")
    # Ana's server retries with a new trace header: the same message.
    retried = b"Received: from mx.example.com by relay; Mon, 2 Mar 2026 09:31:00 +0000\r\n" + ana
    async with running_router(service_env) as router:
        async with running(build(settings).runtime):
            await deliver(smtp_send, settings.smtp_port, mallory, ana, retried)
        events = await published(probe, 2)
        assert events["ana's order"].message_id != events["mallory's"].message_id

        async def timeline_of(identity: str) -> list[dict[str, Any]] | None:
            found = await router.customer_of(identity)
            items = await router.timeline(found["customer_id"]) if found else []
            return items or None

        # Both land, each in its sender's timeline; the retry added nothing (two events).
        ana_items = await eventually(lambda: timeline_of("email:ana@example.com"))
        mallory_items = await eventually(lambda: timeline_of("email:mallory@example.net"))
        assert [i["text"] for i in ana_items] == ["ana's order"]
        assert [i["text"] for i in mallory_items] == ["mallory's"]


async def test_only_the_signed_mail_of_a_crm_customer_joins_her_customer(
    *,
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    service_env: dict[str, str],
    dkim_key: Any,
    dns_stub: Any,
) -> None:
    dns_stub.records["sel._domainkey.example.com"] = dkim_key.txt
    settings = make_settings(INGEST_EMAIL_DNS_RESOLVER=dns_stub.address)
    async with running_router(service_env) as router:
        await probe.send(
            INBOUND, inbound("w-1", channel=Channel.WHATSAPP, sender="+34600111222"),
            key="whatsapp:+34600111222",
        )  # fmt: skip
        owner = await eventually(lambda: router.customer_of("whatsapp:+34600111222"))
        linked = await router.http.post(
            f"/admin/customers/{owner['customer_id']}/profile",
            json={
                "verified_emails": ["ana@example.com", "ana@mail.example.com"],
            },
            headers=router.admin,
        )
        assert linked.status_code == 200, linked.text
        forged = mail("ana@example.com", "<f-1@evil.example>", "send the refund elsewhere")
        genuine = dkim_key.sign(
            mail("ana@mail.example.com", "<g-1@mail.example.com>", "where is my order?"),
            "example.com",
        )
        async with running(build(settings).runtime):
            await deliver(smtp_send, settings.smtp_port, forged, genuine)

        signed = await eventually(lambda: router.customer_of("email:ana@mail.example.com"))
        assert signed["customer_id"] == owner["customer_id"]
        other = await eventually(lambda: router.customer_of("email:ana@example.com"))
        assert other["customer_id"] != owner["customer_id"]

        async def texts(customer_id: str, count: int) -> list[str] | None:
            items = await router.timeline(customer_id)
            return [i["text"] for i in items] if len(items) >= count else None

        assert await eventually(lambda: texts(other["customer_id"], 1)) == [
            "send the refund elsewhere"
        ]
        owned = await eventually(lambda: texts(owner["customer_id"], 2))
        assert sorted(owned) == ["hello", "where is my order?"]
