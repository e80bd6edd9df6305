"""The IMAP poller against a real Dovecot (IMAPS): publish unseen mail, then mark it seen;
a crash between the two publishes the message again under the same message_id."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import INBOUND, MessageReceived
from switchboard_common.mongo import Document
from switchboard_devkit.running.inprocess import running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_ingest_email.app import build
from switchboard_ingest_email.imap import ImapPoller
from switchboard_ingest_email.raw_store import MongoRawStore

pytestmark = pytest.mark.integration


def letter(message_id: str, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ana <ana@example.com>"
    msg["To"] = "support@support.example.com"
    msg["Subject"] = "via IMAP"
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(text)
    return msg.as_bytes(policy=SMTP_POLICY)


def mailbox_env(dovecot: Any, monkeypatch: pytest.MonkeyPatch, **options: Any) -> dict[str, str]:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", dovecot.password)
    box = {
        "name": "dovecot",
        "host": "127.0.0.1",
        "port": dovecot.port,
        "username": dovecot.username,
        "password_env": "IMAP_TEST_PASSWORD",
        "ca_file": str(dovecot.cafile),
        "poll_interval_seconds": 1,
        **options,
    }
    return {"INGEST_EMAIL_IMAP_MAILBOXES": json.dumps([box])}


def append(dovecot: Any, *messages: bytes) -> None:
    client = dovecot.client()
    try:
        for data in messages:
            status, _ = client.append("INBOX", None, None, data)
            assert status == "OK"
    finally:
        client.logout()


def unseen(dovecot: Any, folder: str = "INBOX") -> list[bytes]:
    client = dovecot.client()
    try:
        client.select(folder)
        status, data = client.uid("search", None, "UNSEEN")
        assert status == "OK"
        return data[0].split() if data and data[0] else []
    finally:
        client.logout()


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


# With IDLE the poll interval is far longer than the test may take: new mail can only
# arrive through the server's IDLE push. Without IDLE it is polled every second.
@pytest.mark.parametrize(
    "mode", [{"idle": True, "poll_interval_seconds": 600}, {"idle": False}], ids=["idle", "poll"]
)
async def test_unseen_mail_is_published_then_marked_seen_and_new_mail_follows(
    *,
    mode: dict[str, Any],
    dovecot: Any,
    make_settings: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    database_name: str,
) -> None:
    first, second = letter("<imap-1@example.com>", "first\n"), letter("", "no id\n")
    append(dovecot, first, second)
    assert len(unseen(dovecot)) == 2
    settings = make_settings(**mailbox_env(dovecot, monkeypatch, **mode))
    service = build(settings)
    async with running(service.runtime):
        events = await probe.read_events(INBOUND, count=2, timeout=60)
        await wait_until(lambda: not unseen(dovecot))
        # New mail while the poller waits: published too.
        append(dovecot, letter("<imap-3@example.com>", "third\n"))
        events = await probe.read_events(INBOUND, count=3, timeout=60)
        (poller,) = service.pollers
        await wait_until(lambda: poller.published == 3)
        assert not unseen(dovecot)

    by_id = {}
    for _, event in events:
        assert isinstance(event, MessageReceived)
        by_id[event.provider_message_id] = event
    assert set(by_id) == {"<imap-1@example.com>", None, "<imap-3@example.com>"}
    event = by_id["<imap-1@example.com>"]
    assert event.account == "support@support.example.com"
    assert event.tenant == "acme"
    assert event.sender.value == "ana@example.com"
    assert event.text == "first"
    assert event.raw_ref is not None
    raw = await MongoRawStore(mongo_client[database_name]).get(event.raw_ref[len("sha256:") :])
    assert raw is not None
    assert raw.endswith(first.split(b"\r\n\r\n", 1)[1])  # Dovecot's copy, body intact


async def test_a_crash_between_publish_and_mark_republishes_under_the_same_id(
    dovecot: Any,
    make_settings: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    probe: TopicProbe,
) -> None:
    append(dovecot, letter("<crash@example.com>", "published, never marked\n"))
    settings = make_settings(**mailbox_env(dovecot, monkeypatch))

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("process died before \\Seen")

    crashing = build(settings)
    with monkeypatch.context() as patch:
        patch.setattr(ImapPoller, "_mark", crash)
        async with running(crashing.runtime):
            await probe.read_events(INBOUND, count=1, timeout=60)
    assert len(unseen(dovecot)) == 1  # still unseen: nothing was marked

    restarted = build(settings)  # a new process: no memory of the first publish
    async with running(restarted.runtime):
        await wait_until(lambda: not unseen(dovecot), timeout=60)
    events = await probe.read_events(INBOUND, count=2, timeout=30, settle=1.0)
    ids = {e.message_id for _, e in events if isinstance(e, MessageReceived)}
    assert len(events) >= 2  # a duplicate ...
    assert len(ids) == 1  # ... with one message_id, which consumers deduplicate


async def test_published_mail_is_moved_when_configured(
    dovecot: Any,
    make_settings: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    probe: TopicProbe,
) -> None:
    append(dovecot, letter("<move-1@example.com>", "to be moved\n"))
    settings = make_settings(**mailbox_env(dovecot, monkeypatch, move_to="Processed"))
    service = build(settings)
    async with running(service.runtime):
        await probe.read_events(INBOUND, count=1, timeout=60)
        (poller,) = service.pollers
        await wait_until(lambda: poller.published == 1)
    client = dovecot.client()
    try:
        assert client.select("INBOX")[1] == [b"0"]  # nothing left in the inbox
        status, count = client.select("Processed")
        assert (status, count) == ("OK", [b"1"])
    finally:
        client.logout()
