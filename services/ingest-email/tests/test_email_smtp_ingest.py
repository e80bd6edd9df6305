"""SMTP ingest end to end in one process: smtplib sends as a mail server would, the real
Kafka and MongoDB-wire servers receive. Every accepted message must be on
``support.inbound.v1`` and its exact bytes in the raw store."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from switchboard_common.cloudevents import header_map
from switchboard_common.contract import INBOUND, MessageReceived
from switchboard_common.mongo import Document
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_ingest_email.app import build
from switchboard_ingest_email.raw_store import MongoRawStore

pytestmark = pytest.mark.integration

HELP = "help@support.example.com"


def email(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    defaults = {
        "From": "Ana Pérez <Ana@Example.com>",
        "To": HELP,
        "Subject": "Order 1234 has not arrived",
        "Date": "Mon, 02 Mar 2026 09:30:00 +0100",
        "Message-ID": "<order-1234@mail.example.com>",
    }
    for name, value in {**defaults, **headers}.items():
        if value:
            msg[name] = value
    return msg


def wire(msg: EmailMessage) -> bytes:
    """The bytes a mail server sends: CRLF line ends."""
    return msg.as_bytes(policy=SMTP_POLICY)


async def inbound(probe: TopicProbe, count: int, settle: float = 0.0) -> list[MessageReceived]:
    events = await probe.read_events(INBOUND, count=count, timeout=30, settle=settle)
    out = []
    for record, event in events:
        assert isinstance(event, MessageReceived)
        headers = header_map(record.headers)
        assert headers["ce_id"] == event.message_id  # a retried send is the same event
        assert headers["ce_source"] == "/switchboard/ingest-email"
        assert record.key == f"email:{event.sender.value}".encode()
        out.append(event)
    return out


async def stored(
    client: AsyncMongoClient[Document], database: str, event: MessageReceived
) -> bytes:
    assert event.raw_ref is not None
    raw = await MongoRawStore(client[database]).get(event.raw_ref.removeprefix("sha256:"))
    assert raw is not None
    return raw


async def test_plain_html_only_and_charset_mail_is_published_and_stored_raw(
    ingest_email: Any,
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    database_name: str,
) -> None:
    plain = email()
    plain.set_content("Hello,\nmy order 1234 has not arrived.\n\nThanks, Ana\n")
    html = email(**{"Message-ID": "<html-1@mail.example.com>", "Subject": "HTML only"})
    html.set_content(
        "<html><head><style>p {color: red}</style><script>alert('x')</script></head>"
        "<body><p>Where is <b>my refund</b>?</p><ul><li>order 1</li><li>order 2</li></ul>"
        "</body></html>",
        subtype="html",
    )
    latin = email(**{"Message-ID": "<latin-1@mail.example.com>", "Subject": "Réclamation"})
    latin.set_content("Le colis est arrivé cassé, merci de répondre à ma réclamation.\n",
                      charset="iso-8859-1", cte="quoted-printable")  # fmt: skip
    koi8 = email(**{"Message-ID": "<koi8@mail.example.com>", "Subject": ""})
    koi8.set_content("Здравствуйте, где мой заказ?\n", charset="koi8-r", cte="8bit")
    sjis = email(**{"Message-ID": "<sjis@mail.example.com>"})
    sjis.set_content("注文が届きません。\n", charset="shift_jis", cte="base64")
    sent = [plain, html, latin, koi8, sjis]
    for msg in sent:
        reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, wire(msg))
        assert (reply.code, reply.message.split()[0]) == (250, "2.0.0")

    events = {e.provider_message_id: e for e in await inbound(probe, len(sent))}
    assert len(events) == len(sent)
    first = events["<order-1234@mail.example.com>"]
    assert first.sender.value == "ana@example.com"
    assert first.sender.display_name == "Ana Pérez"
    assert first.channel == "email"
    assert first.account == HELP
    assert first.tenant == "acme"
    assert first.recipients == [HELP]
    assert first.text == "Hello,\nmy order 1234 has not arrived.\n\nThanks, Ana"
    assert first.sent_at is not None
    assert first.sent_at.isoformat() == "2026-03-02T09:30:00+01:00"
    assert first.parse_errors == []
    assert first.auto_submitted is False

    html_event = events["<html-1@mail.example.com>"]
    assert "Where is my refund?" in html_event.text
    assert "- order 1\n- order 2" in html_event.text
    assert "alert" not in html_event.text
    assert "color" not in html_event.text

    assert "arrivé cassé" in events["<latin-1@mail.example.com>"].text
    assert events["<latin-1@mail.example.com>"].subject == "Réclamation"
    assert events["<koi8@mail.example.com>"].text == "Здравствуйте, где мой заказ?"
    assert events["<sjis@mail.example.com>"].text == "注文が届きません。"

    for msg in sent:
        event = events[str(msg["Message-ID"])]
        raw = await stored(mongo_client, database_name, event)
        assert raw == wire(msg)  # the exact bytes, before the 250
        assert event.raw_ref == "sha256:" + hashlib.sha256(raw).hexdigest()


async def test_alternative_with_attachments_inline_image_and_forwarded_message(
    ingest_email: Any, smtp_send: Callable[..., Any], probe: TopicProbe
) -> None:
    forwarded = email(**{"Message-ID": "<inner@example.org>", "Subject": "Original"})
    forwarded.set_content("the forwarded text\n")
    msg = email(Subject="Invoice and photo")
    msg.set_content("Please see the invoice.\n")
    msg.add_alternative(
        '<p>Please see the <i>invoice</i>.</p><img src="cid:photo1" alt="photo">', subtype="html"
    )
    html_part = msg.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(b"\x89PNG fake image", "image", "png", cid="<photo1>", filename="p.png")
    pdf = b"%PDF-1.4 invoice bytes"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="factura ñ.pdf")
    msg.add_attachment(forwarded)
    data = wire(msg)
    reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, data)
    assert reply.code == 250

    (event,) = await inbound(probe, 1)
    assert event.text == "Please see the invoice."
    by_type = {a.content_type: a for a in event.attachments}
    assert set(by_type) == {"image/png", "application/pdf", "message/rfc822"}
    assert by_type["application/pdf"].filename == "factura ñ.pdf"
    assert by_type["application/pdf"].size == len(pdf)
    assert by_type["application/pdf"].sha256 == hashlib.sha256(pdf).hexdigest()
    assert by_type["application/pdf"].inline is False
    assert by_type["image/png"].inline is True
    assert by_type["image/png"].kind == "image"
    assert by_type["message/rfc822"].kind == "message"
    assert (by_type["message/rfc822"].size or 0) > len("the forwarded text")


async def test_rfc2047_subject_and_a_reply_with_thread_headers(
    ingest_email: Any, smtp_send: Callable[..., Any], probe: TopicProbe
) -> None:
    raw = (
        b"From: =?utf-8?q?Jos=C3=A9_Garc=C3=ADa?= <jose@example.com>\r\n"
        b"To: Support <HELP@Support.Example.com>\r\n"
        b"Cc: boss@example.com\r\n"
        b"Subject: =?iso-8859-1?q?Re=3A_Caf=E9?= =?utf-8?b?IOKAlCDwn5iK?=\r\n"
        b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
        b"Message-ID: <Reply-2@Mail.Example.COM>\r\n"
        b"In-Reply-To: <agent-1@support.example.com>\r\n"
        b"References: <root-0@mail.example.com>\r\n <agent-1@SUPPORT.example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Yes, please send a new one.\r\n"
        b"\r\n"
        b"On Mon, 2 Mar 2026 at 12:00, Support <help@support.example.com> wrote:\r\n"
        b"> We are sorry, shall we send a replacement?\r\n"
    )
    reply = await asyncio.to_thread(
        smtp_send, ingest_email.smtp_port, raw, mail_from="jose@example.com"
    )
    assert reply.code == 250
    (event,) = await inbound(probe, 1)
    assert event.subject == "Re: Café — 😊"
    assert event.sender.display_name == "José García"
    assert event.provider_message_id == "<Reply-2@mail.example.com>"
    assert event.in_reply_to == "<agent-1@support.example.com>"
    assert event.references == ["<root-0@mail.example.com>", "<agent-1@support.example.com>"]
    assert event.provider_thread_id == "<root-0@mail.example.com>"
    assert event.text == "Yes, please send a new one."
    assert "We are sorry" in (event.full_text or "")
    assert event.recipients == ["help@support.example.com", "boss@example.com"]


async def test_smtputf8_addresses_and_utf8_headers(
    ingest_email: Any, smtp_send: Callable[..., Any], probe: TopicProbe
) -> None:
    raw = (
        "From: José <José@Exámple.com>\r\n"
        "To: help@support.example.com\r\n"
        "Subject: Ñandú sin codificar\r\n"
        "Message-ID: <utf8-1@exámple.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "¿Dónde está mi pedido?\r\n"
    ).encode()
    reply = await asyncio.to_thread(
        smtp_send, ingest_email.smtp_port, raw, mail_from="josé@exámple.com", smtputf8=True
    )
    assert reply.code == 250
    (event,) = await inbound(probe, 1)
    assert event.sender.value == "josé@exámple.com"
    assert event.subject == "Ñandú sin codificar"
    assert event.text == "¿Dónde está mi pedido?"


async def test_auto_reply_and_bounce_are_published_as_auto_submitted(
    ingest_email: Any, smtp_send: Callable[..., Any], probe: TopicProbe
) -> None:
    ooo = email(**{"Subject": "Out of office", "Message-ID": "<ooo@example.com>",
                   "Auto-Submitted": "auto-replied"})  # fmt: skip
    ooo.set_content("I am away until Monday.\n")
    bounce = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        b"To: help@support.example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-1@mx.example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nDelivery to ana@example.com failed.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; ana@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: our reply\r\n"
        b"--B--\r\n"
    )
    assert (await asyncio.to_thread(smtp_send, ingest_email.smtp_port, wire(ooo))).code == 250
    reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, bounce, mail_from="")
    assert reply.code == 250  # the null reverse-path is accepted

    events = {e.provider_message_id: e for e in await inbound(probe, 2)}
    assert events["<ooo@example.com>"].auto_submitted is True
    dsn = events["<bounce-1@mx.example.net>"]
    assert dsn.auto_submitted is True
    assert dsn.sender.value == "mailer-daemon@mx.example.net"
    assert dsn.text == "Delivery to ana@example.com failed."
    assert {a.content_type for a in dsn.attachments} == {
        "message/delivery-status",
        "text/rfc822-headers",
    }


async def test_unknown_recipients_get_550_and_oversize_gets_552(
    ingest_email: Any,
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    metric: Callable[..., float],
) -> None:
    msg = email()
    msg.set_content("hello\n")
    port = ingest_email.smtp_port
    refused = await asyncio.to_thread(smtp_send, port, wire(msg), rcpt_to=("ana@elsewhere.org",))
    assert (refused.code, refused.message.split()[0]) == (550, "5.1.1")
    # A subdomain is not the domain: never an open relay.
    refused = await asyncio.to_thread(
        smtp_send, port, wire(msg), rcpt_to=("help@evil.support.example.com",)
    )
    assert refused.code == 550

    big = email(**{"Message-ID": "<big@example.com>"})
    big.set_content("x" * 80 + "\n" * 1, cte="7bit")
    big.add_attachment(b"\0" * (300 * 1024), maintype="application", subtype="octet-stream")
    declared = await asyncio.to_thread(smtp_send, port, wire(big))
    assert (declared.code, declared.message.split()[0]) == (552, "5.3.4")  # at MAIL FROM
    undeclared = await asyncio.to_thread(smtp_send, port, wire(big), declare_size=False)
    assert (undeclared.code, undeclared.message.split()[0]) == (552, "5.3.4")  # after DATA

    # One good and one bad recipient: the good one gets the message, the bad one a 550.
    mixed = await asyncio.to_thread(
        smtp_send, port, wire(msg), rcpt_to=("nobody@elsewhere.org", "billing@support.example.com")
    )
    assert mixed.code == 250
    assert mixed.refused["nobody@elsewhere.org"][0] == 550
    events = await inbound(probe, 1, settle=2.0)
    assert [e.account for e in events] == ["billing@support.example.com"]

    async with httpx.AsyncClient(base_url=ingest_email.base_url) as http:
        metrics = (await http.get("/metrics")).text
    assert (
        'switchboard_email_messages_rejected_total{reason="unknown_recipient",transport="smtp"} 3.0'
        in metrics
    )
    assert (
        'switchboard_email_messages_rejected_total{reason="too_large",transport="smtp"} 2.0'
        in metrics
    )
    assert (
        'switchboard_email_messages_received_total{tenant="acme",transport="smtp"} 1.0' in metrics
    )


async def test_broken_mime_is_accepted_stored_and_published_with_parse_errors(
    ingest_email: Any,
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    database_name: str,
) -> None:
    broken = (
        b"From: ana@example.com\r\n"
        b"To: help@support.example.com\r\n"
        b"Subject: broken \xff\xfe bytes\r\n"
        b'Content-Type: multipart/mixed; boundary="never-used"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"this is not base64 and there is no boundary \xc3\x28 invalid utf-8\r\n"
    )
    reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, broken)
    assert reply.code == 250
    (event,) = await inbound(probe, 1)
    assert event.parse_errors  # what could not be read is said
    assert any("Boundary" in e or "boundary" in e for e in event.parse_errors)
    assert event.message_id == "email:raw:" + hashlib.sha256(broken).hexdigest()
    assert await stored(mongo_client, database_name, event) == broken


async def test_a_redelivered_message_keeps_its_message_id_and_is_published_once(
    ingest_email: Any,
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    database_name: str,
) -> None:
    msg = email()
    msg.set_content("Is anyone there?\n")
    # The sending server's retry may differ in trace headers: same Message-ID, same id.
    retried = b"Received: from mx.example.net by relay; Mon, 2 Mar 2026 09:31:00 +0000\r\n"
    no_id = email(**{"Message-ID": ""})
    no_id.set_content("no message id here\n")
    port = ingest_email.smtp_port
    for data in (wire(msg), retried + wire(msg), wire(no_id), wire(no_id)):
        assert (await asyncio.to_thread(smtp_send, port, data)).code == 250
    events = await inbound(probe, 2, settle=2.0)
    assert sorted(e.provider_message_id or "" for e in events) == [
        "",
        "<order-1234@mail.example.com>",
    ]
    # Every distinct byte sequence received is kept, each once.
    assert await mongo_client[database_name]["email_raw"].count_documents({}) == 3


async def test_starttls_with_a_configured_certificate(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
    tls_files: tuple[Path, Path],
) -> None:
    cert, key = tls_files
    settings = make_settings(
        INGEST_EMAIL_TLS_CERTFILE=str(cert),
        INGEST_EMAIL_TLS_KEYFILE=str(key),
        INGEST_EMAIL_REQUIRE_STARTTLS="true",
    )
    service = build(settings)
    from switchboard_devkit.running.inprocess import running

    msg = email()
    msg.set_content("sent over TLS\n")
    async with running(service.runtime):
        plain = await asyncio.to_thread(smtp_send, settings.smtp_port, wire(msg))
        assert plain.code == 530  # STARTTLS required first
        secured = await asyncio.to_thread(
            smtp_send, settings.smtp_port, wire(msg), starttls_cafile=cert
        )
        assert secured.code == 250
    (event,) = await inbound(probe, 1)
    assert event.text == "sent over TLS"
