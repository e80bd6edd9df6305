"""The pure core: MIME parsing, readable text, reply splitting, ids, auto-submitted."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest

from switchboard_common.cloudevents import encode
from switchboard_common.contract import MessageReceived
from switchboard_ingest_email.headers import message_id_for, msg_ids, normalise_msg_id
from switchboard_ingest_email.normalise import (
    FULL_TEXT_LIMIT,
    MAX_EVENT_BYTES,
    NULL_SENDER,
    TEXT_LIMIT,
    UNKNOWN_SENDER,
    Delivery,
    to_inbound,
)
from switchboard_ingest_email.parsing import attachment_kind, parse_email
from switchboard_ingest_email.text import html_to_text, split_reply, tidy

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SMTP = Delivery(account="help@support.example.com", tenant="acme", mail_from="ana@example.com",
                transport="smtp")  # fmt: skip


def mail(body: str = "Hello\n", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    defaults = {
        "From": "Ana <ana@example.com>",
        "To": "help@support.example.com",
        "Subject": "Hi",
        "Message-ID": "<m1@example.com>",
    }
    for name, value in {**defaults, **headers}.items():
        if value:
            msg[name] = value
    msg.set_content(body)
    return msg


def event_of(raw: bytes, delivery: Delivery = SMTP) -> MessageReceived:
    return to_inbound(raw, delivery, received_at=T0).event


# --------------------------------------------------------------------------- ids


def test_message_ids_are_normalised_domain_lowercased_local_part_kept() -> None:
    assert normalise_msg_id("  <AbC.123@Mail.Example.COM> ") == "<AbC.123@mail.example.com>"
    assert normalise_msg_id("<abc\r\n @example.com>") == "<abc@example.com>"
    assert normalise_msg_id("no-brackets@Example.com") == "<no-brackets@example.com>"
    assert normalise_msg_id("") is None
    assert normalise_msg_id(None) is None


def test_references_keep_order_drop_duplicates_and_keep_the_root_when_long() -> None:
    assert msg_ids("<a@x> <b@x>\r\n\t<a@x> <c@X>") == ["<a@x>", "<b@x>", "<c@x>"]
    many = " ".join(f"<r{i}@x>" for i in range(200))
    kept = msg_ids(many, limit=50)
    assert len(kept) == 50
    assert kept[0] == "<r0@x>"  # the thread root
    assert kept[-1] == "<r199@x>"  # the most recent


def test_message_id_comes_from_sender_and_header_else_from_sender_and_raw_bytes() -> None:
    with_id = mail().as_bytes()
    expected = message_id_for("ana@example.com", "<m1@example.com>", with_id)
    assert event_of(with_id).message_id == expected
    assert expected == "email:" + hashlib.sha256(b"ana@example.com\n<m1@example.com>").hexdigest()
    # The same Message-ID written differently, different bytes: the same message_id.
    other = mail("other body\n", **{"Message-ID": "< m1@EXAMPLE.com >"}).as_bytes()
    assert event_of(other).message_id == event_of(with_id).message_id
    without = mail(**{"Message-ID": ""}).as_bytes()
    expected = "email:raw:" + hashlib.sha256(b"ana@example.com\n" + without).hexdigest()
    assert event_of(without).message_id == expected
    assert event_of(without).message_id != event_of(without + b"x").message_id


def test_another_sender_reusing_a_message_id_gets_an_id_of_its_own() -> None:
    ana = mail().as_bytes()
    mallory = mail("I am Ana too\n", From="Mallory <mallory@example.net>").as_bytes()
    assert event_of(mallory).provider_message_id == event_of(ana).provider_message_id
    assert event_of(mallory).message_id != event_of(ana).message_id
    # The address decides, not its spelling or the display name.
    ana_again = mail("re-sent\n", From="A. Pérez <ANA@Example.com>").as_bytes()
    assert event_of(ana_again).message_id == event_of(ana).message_id


# --------------------------------------------------------------------------- text


def test_html_to_text_drops_scripts_styles_and_head() -> None:
    html = (
        "<html><head><title>T</title><style>.a{}</style></head><body>"
        "<script>var x = 1;</script><h1>Hello</h1><p>Line one<br>line&nbsp;two</p>"
        "<table><tr><td>a</td><td>b</td></tr></table><noscript>no</noscript></body></html>"
    )
    assert html_to_text(html) == "Hello\n\nLine one\nline two\n\na b"


def test_html_blockquotes_become_quoted_lines_so_history_is_recognised() -> None:
    html = (
        "<div>Thanks, that worked.</div><div class=gmail_quote>On Mon, 2 Mar 2026, "
        "Support wrote:<blockquote><div>Try again</div></blockquote></div>"
    )
    text = html_to_text(html)
    assert "> Try again" in text
    assert split_reply(text) == "Thanks, that worked."


@pytest.mark.parametrize(
    ("text", "new"),
    [
        ("Yes please.\n\nOn Mon, 2 Mar 2026 at 09:30, Ana <a@b.c> wrote:\n> old", "Yes please."),
        ("Yes.\n\nOn Mon, 2 Mar 2026 at 09:30, Support Team\n<a@b.c> wrote:\n> old", "Yes."),
        ("Ja.\n\nAm 02.03.2026 um 09:30 schrieb Ana <a@b.c>:\n> alt", "Ja."),
        ("Oui.\n\nLe lun. 2 mars 2026 à 09:30, Ana <a@b.c> a écrit :\n> vieux", "Oui."),
        ("Fine.\n\n-----Original Message-----\nFrom: x\nSent: y\n\nold", "Fine."),
        ("Fine.\n\n________________________________\nFrom: x\nSent: y\nold", "Fine."),
        ("Fine.\n\nFrom: Support <a@b.c>\nSent: Monday\nTo: me\n\nold", "Fine."),
        ("Hello\n\n-- \nAna Pérez\nACME", "Hello"),
        ("Top\n> quoted one\n> quoted two", "Top"),
        (
            "No quote here.\nOn second thought it is fine.",
            "No quote here.\nOn second thought it is fine.",
        ),
        ("> only a quote", "> only a quote"),
    ],
)
def test_split_reply_finds_the_new_part(text: str, new: str) -> None:
    assert split_reply(text) == new


def test_tidy_normalises_line_ends_and_removes_control_characters() -> None:
    assert tidy("a\r\nb\rc\x00\x07d  \n\n\n\ne") == "a\nb\ncd\n\ne"


# --------------------------------------------------------------------------- structure


def test_plain_text_is_preferred_over_html_and_the_html_rendering_is_no_attachment() -> None:
    msg = mail("plain body\n")
    msg.add_alternative("<p>html body</p>", subtype="html")
    event = event_of(msg.as_bytes())
    assert event.text == "plain body"
    assert event.attachments == []


def test_html_only_mail_is_converted_to_text() -> None:
    msg = mail()
    msg.set_content("<p>Only <b>HTML</b></p><style>x{}</style>", subtype="html")
    assert event_of(msg.as_bytes()).text == "Only HTML"


def test_attachments_carry_filename_type_size_digest_and_kind() -> None:
    msg = mail("see attached\n")
    data = b"col1,col2\n1,2\n"
    msg.add_attachment(data, maintype="text", subtype="csv", filename="=?utf-8?q?d=C3=A9tail?=.csv")
    msg.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream")
    event = event_of(msg.as_bytes())
    csv, blob = event.attachments
    assert csv.filename is not None
    assert csv.content_type == "text/csv"
    assert csv.size == len(data)
    assert csv.sha256 == hashlib.sha256(data).hexdigest()
    assert csv.kind == "document"
    assert blob.filename is None  # nullable: no name given
    assert blob.kind == "file"


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [("image/jpeg", "image"), ("audio/ogg", "audio"), ("video/mp4", "video"),
     ("application/pdf", "document"), ("application/vnd.openxmlformats-officedocument."
      "wordprocessingml.document", "document"), ("message/rfc822", "message"),
     ("application/zip", "file")],
)  # fmt: skip
def test_attachment_kinds(content_type: str, kind: str) -> None:
    assert attachment_kind(content_type) == kind


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("iso-8859-1", "Ça coûte très cher"),
        ("windows-1252", "“quoted” — dash"),
        ("iso-8859-2", "Zażółć gęślą jaźń"),
        ("koi8-r", "Привет"),
        ("shift_jis", "こんにちは"),
        ("euc-kr", "안녕하세요"),
        ("gb2312", "你好"),
        ("big5", "您好"),
    ],
)
def test_bodies_in_any_charset_are_decoded(charset: str, text: str) -> None:
    msg = mail()
    msg.set_content(text + "\n", charset=charset, cte="base64")
    event = event_of(msg.as_bytes())
    assert event.text == text
    assert event.parse_errors == []


def test_rfc2047_headers_in_several_charsets_are_decoded() -> None:
    raw = (
        b"From: =?iso-8859-1?q?Fran=E7ois?= <F@Example.com>\r\n"
        b"Subject: =?utf-8?b?w4lsw6h2ZQ==?= =?koi8-r?b?8NLJ18XU?=\r\n"
        b"\r\nbody\r\n"
    )
    event = event_of(raw)
    assert event.subject == "Élève" + "\u041f\u0440\u0438\u0432\u0435\u0442"  # Cyrillic
    assert event.sender.display_name == "François"
    assert event.sender.value == "f@example.com"


def test_unknown_charset_and_invalid_bytes_are_reported_not_fatal() -> None:
    raw = (
        b"From: ana@example.com\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\n"
        b"caf\xc3\xa9\r\n"
    )
    event = event_of(raw)
    assert event.text == "café"
    assert any("x-klingon" in e for e in event.parse_errors)
    bad_utf8 = b"From: a@b.c\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad \xff\xfe\r\n"
    event = event_of(bad_utf8)
    assert event.text.startswith("bad ")
    assert any("invalid utf-8" in e for e in event.parse_errors)


def test_undeclared_8bit_headers_are_decoded_as_utf8_or_windows_1252() -> None:
    raw = b"From: Jos\xc3\xa9 <j@example.com>\r\nSubject: Caf\xe9\r\n\r\nx\r\n"
    event = event_of(raw)
    assert event.subject == "Café"
    assert event.sender.display_name == "José"


def test_nested_message_is_one_attachment() -> None:
    inner = mail("inner\n", Subject="Fwd")
    outer = mail("see below\n")
    outer.add_attachment(inner)
    event = event_of(outer.as_bytes())
    assert [a.content_type for a in event.attachments] == ["message/rfc822"]
    assert event.text == "see below"


# --------------------------------------------------------------------------- auto-submitted


@pytest.mark.parametrize(
    ("header", "value", "auto"),
    [
        ("Auto-Submitted", "auto-replied", True),
        ("Auto-Submitted", "auto-generated; owner-email=x@y.z", True),
        ("Auto-Submitted", "no", False),
        ("Precedence", "bulk", True),
        ("Precedence", "junk", True),
        ("Precedence", "list", True),
        ("Precedence", "first-class", False),
        ("X-Auto-Response-Suppress", "All", True),
        ("List-Id", "<news.example.com>", True),
        ("List-Unsubscribe", "<mailto:u@example.com>", True),
        ("X-Mailer", "Thunderbird", False),
    ],
)
def test_auto_submitted_headers(header: str, value: str, auto: bool) -> None:
    assert event_of(mail(**{header: value}).as_bytes()).auto_submitted is auto


def test_bounces_are_auto_submitted_by_content_type_and_by_sender() -> None:
    report = mail()
    report.make_mixed()
    report.replace_header(
        "Content-Type", 'multipart/report; report-type=delivery-status; boundary="b"'
    )
    assert event_of(report.as_bytes(policy=SMTP_POLICY)).auto_submitted is True
    daemon = mail(From="MAILER-DAEMON@mx.example.net")
    assert event_of(daemon.as_bytes()).auto_submitted is True
    null_sender = Delivery(account="help@support.example.com", tenant=None, mail_from="",
                           transport="smtp")  # fmt: skip
    assert event_of(mail().as_bytes(), null_sender).auto_submitted is True
    assert event_of(mail().as_bytes()).auto_submitted is False


# --------------------------------------------------------------------------- the event


def test_the_event_carries_delivery_fields_and_the_raw_reference() -> None:
    raw = mail().as_bytes()
    inbound = to_inbound(raw, SMTP, received_at=T0)
    event = inbound.event
    assert inbound.key == "email:ana@example.com"
    assert event.account == "help@support.example.com"
    assert event.tenant == "acme"
    assert event.received_at == T0
    assert event.raw_ref == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert event.kind == "message"
    assert event.recipients == ["help@support.example.com"]


def test_a_message_without_from_falls_back_to_the_envelope_sender() -> None:
    raw = b"Subject: no from\r\n\r\nbody\r\n"
    assert event_of(raw).sender.value == "ana@example.com"
    assert "no From address" in event_of(raw).parse_errors
    null = Delivery(account="a@b.c", tenant=None, mail_from="", transport="smtp")
    assert event_of(raw, null).sender.value == NULL_SENDER
    imap = Delivery(account="a@b.c", tenant=None, mail_from=None, transport="imap")
    assert event_of(raw, imap).sender.value == UNKNOWN_SENDER


def test_huge_text_is_cut_to_fit_kafka_and_says_so() -> None:
    body = ("ж" * 199 + "\n") * 5000  # ~2 MB of two-byte characters
    event = event_of(mail(body).as_bytes())
    assert len(event.text.encode()) <= TEXT_LIMIT
    assert len((event.full_text or "").encode()) <= FULL_TEXT_LIMIT
    assert len(encode(event)) <= MAX_EVENT_BYTES
    assert any("truncated" in e for e in event.parse_errors)


def test_parse_email_reads_dates_and_reports_bad_ones() -> None:
    good = parse_email(mail(Date="Mon, 02 Mar 2026 09:30:00 -0500").as_bytes())
    assert good.sent_at == datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    naive = parse_email(mail(Date="Mon, 02 Mar 2026 09:30:00 -0000").as_bytes())
    assert naive.sent_at == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    bad = parse_email(b"Date: yesterday-ish\r\nFrom: a@b.c\r\n\r\nx")
    assert bad.sent_at is None
    assert "unreadable Date header" in bad.errors
