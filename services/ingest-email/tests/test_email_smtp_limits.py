"""The SMTP limits through real connections (smtplib), against the real Kafka and store:
sessions (421), message rate (451 4.7.1), recipients (452 4.5.3) and the memory budget
(451 4.3.1 at DATA or after the data). Whatever is refused is temporary and loses nothing:
the same message is accepted and published once there is room."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from switchboard_common.contract import INBOUND, MessageReceived
from switchboard_devkit.running.inprocess import running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_ingest_email.admission import MIB, message_cost
from switchboard_ingest_email.app import build

pytestmark = pytest.mark.integration

HELP = "help@support.example.com"


def mail(number: int, body: bytes = b"Where is my order?\r\n") -> bytes:
    return (
        f"From: ana@example.com\r\nTo: {HELP}\r\nSubject: order {number}\r\n"
        f"Message-ID: <limits-{number}@example.com>\r\n\r\n"
    ).encode() + body


def connect(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
    client.ehlo("mx.example.net")
    return client


@contextlib.contextmanager
def sessions(port: int, *sources: str) -> Iterator[list[smtplib.SMTP]]:
    clients = [connect(port, source) for source in sources]
    try:
        yield clients
    finally:
        for client in clients:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()


def reply_of(error: smtplib.SMTPResponseException) -> tuple[int, str]:
    text = error.smtp_error
    return error.smtp_code, text.decode() if isinstance(text, bytes) else text


async def published(probe: TopicProbe, count: int) -> list[MessageReceived]:
    records = await probe.read_events(INBOUND, count=count, timeout=30, settle=1.0)
    return [e for _, e in records if isinstance(e, MessageReceived)]


async def test_sessions_over_the_limits_are_refused_with_421(
    make_settings: Callable[..., Any], probe: TopicProbe
) -> None:
    settings = make_settings(INGEST_EMAIL_MAX_SESSIONS="3", INGEST_EMAIL_MAX_SESSIONS_PER_IP="2")
    port = settings.smtp_port

    def scenario() -> list[tuple[int, str]]:
        refusals = []
        with sessions(port, "127.0.0.1", "127.0.0.1") as (first, _):
            with pytest.raises(smtplib.SMTPConnectError) as per_ip:
                connect(port, "127.0.0.1")
            refusals.append(reply_of(per_ip.value))
            with sessions(port, "127.0.0.2"):
                with pytest.raises(smtplib.SMTPConnectError) as total:
                    connect(port, "127.0.0.3")
                refusals.append(reply_of(total.value))
            # The refused ones took nothing: an admitted session still delivers.
            first.sendmail("ana@example.com", [HELP], mail(1))
        with sessions(port, "127.0.0.1", "127.0.0.1", "127.0.0.3") as clients:
            clients[2].sendmail("ana@example.com", [HELP], mail(2))  # places are freed
        return refusals

    async with running(build(settings).runtime) as base_url:
        refusals = await asyncio.to_thread(scenario)
        async with httpx.AsyncClient(base_url=base_url) as http:
            metrics = (await http.get("/metrics")).text
    assert [(code, text.split()[0]) for code, text in refusals] == [
        (421, "4.7.0"),
        (421, "4.3.2"),
    ]
    assert 'reason="too_many_sessions_per_ip",transport="smtp"} 1.0' in metrics
    assert 'reason="too_many_sessions",transport="smtp"} 1.0' in metrics
    events = await published(probe, 2)
    assert sorted(e.subject or "" for e in events) == ["order 1", "order 2"]


async def test_recipients_beyond_the_limit_get_452_and_the_message_rate_451(
    make_settings: Callable[..., Any],
    smtp_send: Callable[..., Any],
    probe: TopicProbe,
) -> None:
    settings = make_settings(
        INGEST_EMAIL_MAX_RECIPIENTS="2", INGEST_EMAIL_MESSAGES_PER_IP_PER_MINUTE="2"
    )
    port = settings.smtp_port
    three = (HELP, "billing@support.example.com", "sales@support.example.com")
    async with running(build(settings).runtime):
        first = await asyncio.to_thread(smtp_send, port, mail(1), rcpt_to=three)
        second = await asyncio.to_thread(smtp_send, port, mail(2))
        third = await asyncio.to_thread(smtp_send, port, mail(3))
    assert first.code == 250
    assert first.refused == {"sales@support.example.com": (452, b"4.5.3 Too many recipients")}
    assert second.code == 250
    assert (third.code, third.message.split()[0]) == (451, "4.7.1")  # at MAIL FROM
    events = await published(probe, 2)
    assert sorted(e.subject or "" for e in events) == ["order 1", "order 2"]


async def test_a_message_the_memory_budget_cannot_hold_now_gets_451_and_later_250(
    make_settings: Callable[..., Any], probe: TopicProbe
) -> None:
    # Room for one declared 1 MiB message and one undeclared message of 1 MiB, no more.
    budget = message_cost(1 * MIB) * 2 + 64 * 1024
    settings = make_settings(
        INGEST_EMAIL_MAX_MESSAGE_BYTES=str(2 * MIB),
        INGEST_EMAIL_MEMORY_BUDGET_BYTES=str(budget),
    )
    port = settings.smtp_port
    held = mail(1, b"x" * 1000 + b"\r\n")
    undeclared_big = mail(2, (b"y" * 998 + b"\r\n") * 1500)  # 1.5 MiB, no SIZE

    def scenario() -> list[tuple[int, str]]:
        replies: list[tuple[int, str]] = []
        with sessions(port, "127.0.0.1", "127.0.0.1", "127.0.0.1") as (holder, second, third):
            # The first sender declares 1 MiB and is inside DATA: that memory is reserved.
            holder.mail("ana@example.com", [f"SIZE={1 * MIB}"])
            holder.rcpt(HELP)
            holder.putcmd("data")
            assert holder.getreply()[0] == 354
            # Undeclared: 1 MiB reserved at DATA, the data needs more: 451 after it.
            second.mail("ana@example.com")
            second.rcpt(HELP)
            code, text = second.data(undeclared_big)
            replies.append((code, text.decode()))
            # Declared 1.5 MiB: does not fit at all now: 451 at DATA, before any data.
            third.mail("ana@example.com", [f"SIZE={MIB + MIB // 2}"])
            third.rcpt(HELP)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                third.data(mail(3))
            replies.append(reply_of(refused.value))
            # The first message completes; then the refused ones are accepted on retry
            # (sendmail raises unless the message is accepted).
            holder.send(held + b".\r\n")
            code, text = holder.getreply()
            replies.append((code, text.decode()))
            assert second.sendmail("ana@example.com", [HELP], undeclared_big) == {}
            assert third.sendmail("ana@example.com", [HELP], mail(3)) == {}
        return replies

    async with running(build(settings).runtime):
        replies = await asyncio.to_thread(scenario)
    assert [(code, text.split()[0]) for code, text in replies] == [
        (451, "4.3.1"),
        (451, "4.3.1"),
        (250, "2.0.0"),
    ]
    events = await published(probe, 3)
    assert sorted(e.subject or "" for e in events) == ["order 1", "order 2", "order 3"]


async def test_a_line_over_the_line_limit_gets_500_and_the_session_goes_on(
    ingest_email: Any, smtp_send: Callable[..., Any], probe: TopicProbe
) -> None:
    long_line = mail(1, b"z" * (70 * 1024) + b"\r\n")
    reply = await asyncio.to_thread(smtp_send, ingest_email.smtp_port, long_line)
    assert (reply.code, reply.message.split()[0]) == (500, "5.5.2")
    dotted = mail(2, b".leading dot\r\n..two\r\n")
    assert (await asyncio.to_thread(smtp_send, ingest_email.smtp_port, dotted)).code == 250
    (event,) = await published(probe, 1)
    assert event.text == ".leading dot\n..two"  # dot-stuffing undone exactly once
