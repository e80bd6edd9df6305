"""Replies to visitors: from the reply-deliveries topic to the visitor's mailbox and
their open sockets, on this replica or another; once per reply_id; waiting in the
mailbox while nobody is connected; reported delivered once the widget has shown them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    OUTBOUND,
    REPLY_DELIVERIES,
    Channel,
    DeliveryStatus,
    DeliveryUpdated,
    ReplyDelivery,
)
from switchboard_common.mongo import Document
from switchboard_devkit.testing.kafka_probe import TopicProbe, unique
from switchboard_webchat.app import MAILBOX
from switchboard_webchat.mailbox import Mailboxes, NewEntry, mailbox_key

from .conftest import (
    SITE,
    RunningChat,
    hello,
    receive,
    receive_until,
    say,
    start_chat,
    sync,
    user_hash,
    widget,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def order(recipient: str, reply_id: str, text: str, **fields: Any) -> ReplyDelivery:
    return ReplyDelivery(
        reply_id=reply_id,
        conversation_id="conv-1",
        customer_id="cust-1",
        agent_id="agent-1",
        channel=Channel.WEBCHAT,
        recipient=recipient,
        account=SITE,
        text=text,
        requested_at=T0,
        ordered_at=T0,
        **fields,
    )


async def reply(probe: TopicProbe, delivery: ReplyDelivery, event_id: str | None = None) -> None:
    await probe.send(REPLY_DELIVERIES, delivery, key=delivery.conversation_id, event_id=event_id)


async def statuses(probe: TopicProbe, count: int, settle: float = 0.0) -> list[DeliveryUpdated]:
    events = await probe.read_events(OUTBOUND, count=count, settle=settle)
    return [e for _, e in events if isinstance(e, DeliveryUpdated)]


def is_message(frame: dict[str, Any]) -> bool:
    return bool(frame["type"] == "message")


async def test_a_reply_reaches_the_open_socket_and_is_reported_sent(
    chat: RunningChat, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket)
        await reply(probe, order(welcome["visitor"], "r-1", "Your parcel left today."))
        frame, _ = await receive_until(socket, is_message)
        (sent,) = await statuses(probe, 1)
    assert frame["from"] == "agent"
    assert frame["text"] == "Your parcel left today."
    assert frame["seq"] == 1
    assert frame["id"] == "reply:r-1"
    assert sent.status is DeliveryStatus.SENT
    assert sent.reply_id == "r-1"
    assert sent.provider_message_id == "reply:r-1"
    assert sent.channel is Channel.WEBCHAT


async def test_an_acknowledgement_comes_from_switchboard(
    chat: RunningChat, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket)
        await reply(probe, order(welcome["visitor"], "r-1", "We got it.", automatic=True))
        frame, _ = await receive_until(socket, is_message)
    assert frame["from"] == "switchboard"


async def test_a_vouched_visitor_reads_the_replies_to_their_email(
    chat: RunningChat, probe: TopicProbe
) -> None:
    identity = {"email": "Ana@Example.com", "hash": user_hash("Ana@Example.com")}
    async with widget(chat) as socket:
        await hello(socket, identity=identity)
        await reply(probe, order("ana@example.com", "r-1", "Hello Ana"))
        frame, _ = await receive_until(socket, is_message)
    assert frame["text"] == "Hello Ana"


async def test_a_reply_delivered_twice_is_stored_once(chat: RunningChat, probe: TopicProbe) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket)
        visitor = welcome["visitor"]
        await reply(probe, order(visitor, "r-1", "Once"), event_id=unique("ce-"))
        await reply(probe, order(visitor, "r-1", "Once"), event_id=unique("ce-"))
        # The second is answered from the reply records: its status again.
        await statuses(probe, 2)
        frames = await sync(socket)
    async with widget(chat) as again:
        await hello(again, token=welcome["token"])
        history = await sync(again)
    assert [f["id"] for f in frames if is_message(f)] == ["reply:r-1"]
    assert [f["id"] for f in history] == ["reply:r-1"]


async def test_the_mailbox_writes_an_entry_once_whoever_writes_it_again(
    chat: RunningChat,
) -> None:
    entry = NewEntry("reply:r-1", mailbox_key(SITE, "v_x"), "agent", "Hi", T0, reply_id="r-1")
    other = NewEntry("reply:r-2", mailbox_key(SITE, "v_x"), "agent", "Hi again", T0)
    first = await chat.parts.mailboxes.append([entry])
    second = await chat.parts.mailboxes.append([entry, other, entry])
    assert [e.seq for e in first] == [1]
    assert [(e.entry_id, e.seq) for e in second] == [
        ("reply:r-1", 1),
        ("reply:r-2", 2),
        ("reply:r-1", 1),
    ]
    assert [e.entry_id for e in await chat.parts.mailboxes.after(mailbox_key(SITE, "v_x"), 0)] == [
        "reply:r-1",
        "reply:r-2",
    ]


async def test_writers_at_once_never_share_a_seq(
    chat: RunningChat, mongo_client: AsyncMongoClient[Document]
) -> None:
    # As several replicas (their own clients) and tabs writing to one mailbox at once.
    other = Mailboxes(mongo_client[chat.parts.settings.mongodb_database], MAILBOX)
    mailbox = mailbox_key(SITE, "v_busy")

    async def write(n: int) -> list[int]:
        writer = (chat.parts.mailboxes, other)[n % 2]
        new = [NewEntry(f"e-{n}-{i}", mailbox, "agent", "hi", T0) for i in range(n % 3 + 1)]
        return [e.seq for e in await writer.append(new)]

    batches = await asyncio.gather(*(write(n) for n in range(30)))
    seqs = [seq for batch in batches for seq in batch]
    assert len(seqs) == len(set(seqs)) == 60
    assert all(batch == sorted(batch) for batch in batches)  # a batch keeps its order
    stored = await chat.parts.mailboxes.after(mailbox, 0, limit=1000)
    assert sorted(e.seq for e in stored) == sorted(seqs)


async def test_replies_while_disconnected_come_on_the_next_hello_in_order(
    chat: RunningChat, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket)
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Anyone there?"})
        ack = await receive(socket)
    visitor = welcome["visitor"]
    for n in range(3):
        await reply(probe, order(visitor, f"r-{n}", f"reply {n}"))
    await statuses(probe, 3)
    async with widget(chat) as socket:
        await hello(socket, token=welcome["token"], after=ack["seq"])
        missed = await sync(socket)
    assert [(f["seq"], f["from"], f["text"]) for f in missed] == [
        (2, "agent", "reply 0"),
        (3, "agent", "reply 1"),
        (4, "agent", "reply 2"),
    ]


async def test_seen_reports_each_reply_delivered_once(chat: RunningChat, probe: TopicProbe) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket)
        await reply(probe, order(welcome["visitor"], "r-1", "First"))
        await reply(probe, order(welcome["visitor"], "r-2", "Second"))
        await receive_until(socket, is_message)
        second, _ = await receive_until(socket, is_message)
        await say(socket, {"type": "seen", "seq": second["seq"]})
        await sync(socket)
        await say(socket, {"type": "seen", "seq": second["seq"]})
        await sync(socket)
        found = await statuses(probe, 4, settle=2.0)
    delivered = [s for s in found if s.status is DeliveryStatus.DELIVERED]
    assert sorted(s.reply_id for s in delivered) == ["r-1", "r-2"]
    assert {s.provider_message_id for s in delivered} == {"reply:r-1", "reply:r-2"}


async def test_a_socket_on_another_replica_gets_the_reply_and_the_other_tab_s_message(
    chat: RunningChat,
    chat_env: dict[str, str],
    probe: TopicProbe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with start_chat(chat_env, monkeypatch) as other, widget(chat) as here:
        welcome = await hello(here)
        async with widget(other) as there:
            await hello(there, token=welcome["token"])
            await say(here, {"type": "send", "client_id": "c-1", "text": "From tab one"})
            ack = await receive(here)
            mine, _ = await receive_until(there, is_message)
            # Whichever replica's consumer stores it, both sockets show it.
            await reply(probe, order(welcome["visitor"], "r-1", "To both tabs"))
            on_here, _ = await receive_until(here, is_message)
            on_there, _ = await receive_until(there, is_message)
        # Stored by one replica, found by the other's poll.
        entry = NewEntry("reply:r-2", mailbox_key(SITE, welcome["visitor"]), "agent", "Poll me", T0)
        await other.parts.mailboxes.append([entry])
        polled, _ = await receive_until(here, is_message)
    assert (mine["from"], mine["client_id"], mine["seq"]) == ("visitor", "c-1", ack["seq"])
    assert on_here["text"] == on_there["text"] == "To both tabs"
    assert on_here["seq"] == on_there["seq"]
    assert polled["text"] == "Poll me"


async def test_two_tabs_on_two_replicas_saying_seen_together_report_each_reply_once(
    chat: RunningChat,
    chat_env: dict[str, str],
    probe: TopicProbe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two replicas: neither publisher knows what the other published, so only the
    # mailbox's claim keeps a reply from being reported twice.
    async with start_chat(chat_env, monkeypatch) as other, widget(chat) as first:
        welcome = await hello(first)
        async with widget(other) as second:
            await hello(second, token=welcome["token"])
            for n in range(3):
                await reply(probe, order(welcome["visitor"], f"r-{n}", f"reply {n}"))
            for socket in (first, second):
                for _ in range(3):
                    await receive_until(socket, is_message)
            await asyncio.gather(
                say(first, {"type": "seen", "seq": 3}), say(second, {"type": "seen", "seq": 3})
            )
            await asyncio.gather(sync(first), sync(second))
            found = await statuses(probe, 6, settle=2.0)
    delivered = [s.reply_id for s in found if s.status is DeliveryStatus.DELIVERED]
    assert sorted(delivered) == ["r-0", "r-1", "r-2"]


async def test_a_long_conversation_comes_whole_on_hello(chat: RunningChat) -> None:
    from switchboard_webchat.hub import QUEUE_FRAMES

    async with widget(chat) as socket:
        welcome = await hello(socket)
    mailbox = mailbox_key(SITE, welcome["visitor"])
    count = QUEUE_FRAMES * 2
    await chat.parts.mailboxes.append(
        [NewEntry(f"e-{n}", mailbox, "agent", f"line {n}", T0) for n in range(count)]
    )
    async with widget(chat) as socket:
        await hello(socket, token=welcome["token"])
        history = await sync(socket)
    assert [f["seq"] for f in history] == list(range(1, count + 1))


async def test_entries_stored_before_their_copies_by_seq_are_read_and_followed(
    chat: RunningChat, mongo_client: AsyncMongoClient[Document]
) -> None:
    # As the mailbox stored entries before it kept a copy of each under <mailbox>#<seq>
    # (nor a top hint): the first start after copies them once, and a write goes on
    # after their last seq.
    db = mongo_client[chat.parts.settings.mongodb_database]
    mailbox = mailbox_key(SITE, "v_older")
    for seq in (1, 2, 3):
        await db[MAILBOX].insert_one(
            {
                "_id": f"old-{seq}",
                "mailbox": mailbox,
                "seq": seq,
                "from": "agent",
                "text": f"old {seq}",
                "at": T0,
                "client_id": None,
                "reply_id": None,
                "conversation_id": None,
            }
        )
        await db[f"{MAILBOX}_seq"].insert_one(
            {"_id": f"{mailbox}#{seq}", "mailbox": mailbox, "seq": seq}
        )
    await db[f"{MAILBOX}_top"].delete_one({"_id": "#copied"})
    restarted = Mailboxes(db, MAILBOX)
    await restarted.create_indexes()
    (new,) = await restarted.append([NewEntry("new-1", mailbox, "agent", "new", T0)])
    assert new.seq == 4
    found = await restarted.after(mailbox, 0)
    assert [(e.entry_id, e.seq) for e in found] == [
        ("old-1", 1),
        ("old-2", 2),
        ("old-3", 3),
        ("new-1", 4),
    ]


async def test_the_poll_asks_for_a_bounded_number_of_ids_and_takes_mailboxes_in_turn(
    chat: RunningChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    from switchboard_webchat import mailbox as mailbox_module

    boxes = [mailbox_key(SITE, f"v_poll{n}") for n in range(5)]
    await chat.parts.mailboxes.append([NewEntry(f"p-{b}", b, "agent", "hi", T0) for b in boxes])
    monkeypatch.setattr(mailbox_module, "POLL_IDS", 2 * mailbox_module.POLL_WINDOW)
    seen: list[str] = []
    for _ in range(3):
        seen += [e.mailbox for e in await chat.parts.mailboxes.newer(dict.fromkeys(boxes, 0))]
    assert set(seen) == set(boxes)
    assert len(seen) == 6  # two mailboxes a call
    monkeypatch.undo()
    long = mailbox_key(SITE, "v_poll_long")
    count = mailbox_module.POLL_WINDOW * 2 + 3
    await chat.parts.mailboxes.append(
        [NewEntry(f"l-{n}", long, "agent", "hi", T0) for n in range(count)]
    )
    found = await chat.parts.mailboxes.newer({long: 0})
    assert [e.seq for e in found] == list(range(1, count + 1))  # a long run in one call
