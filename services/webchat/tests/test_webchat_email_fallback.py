"""The optional email fallback: a vouched visitor's reply no widget has shown in time
also goes by email, once; a reply shown, an acknowledgement or a reply to an anonymous
visitor never does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from switchboard_common.contract import REPLY_DELIVERIES, Channel, ReplyDelivery
from switchboard_devkit.testing.kafka_probe import TopicProbe

from .conftest import RunningChat, hello, receive_until, say, sync, user_hash, widget
from .test_webchat_replies import is_message, order, reply, statuses

pytestmark = pytest.mark.integration

FALLBACK = {
    "WEBCHAT_EMAIL_FALLBACK_SECONDS": "60",
    "WEBCHAT_EMAIL_FALLBACK_FROM": "support@shop.example",
}


async def orders(probe: TopicProbe, count: int, settle: float = 0.0) -> list[ReplyDelivery]:
    events = await probe.read_events(REPLY_DELIVERIES, count=count, settle=settle)
    return [e for _, e in events if isinstance(e, ReplyDelivery)]


@pytest.mark.parametrize("chat_env", [FALLBACK], indirect=True)
async def test_only_a_vouched_visitors_unseen_agent_reply_goes_by_email_once(
    chat: RunningChat, probe: TopicProbe
) -> None:
    assert chat.parts.fallback is not None
    identity = {"email": "ana@example.com", "hash": user_hash("ana@example.com")}
    async with widget(chat) as socket:
        welcome = await hello(socket, identity=identity)
        await reply(probe, order("ana@example.com", "r-shown", "Seen in the chat"))
        shown, _ = await receive_until(socket, is_message)
        await say(socket, {"type": "seen", "seq": shown["seq"]})
        await sync(socket)
        await reply(probe, order("ana@example.com", "r-unseen", "Not seen", automatic=False))
        await reply(probe, order("ana@example.com", "r-ack", "We got it", automatic=True))
        # The vouched socket reads the email's mailbox: this one waits in the other.
        await reply(probe, order(welcome["visitor"], "r-anonymous", "To the visitor id"))
        for _ in range(2):
            await receive_until(socket, is_message)
        # Every reply stored (four sent) and the first reported delivered.
        await statuses(probe, 5)
    # As if the fallback's minute had passed (and later still: once is once).
    # Two ticks at once (as two replicas would): one of them sends the copy.
    later = datetime.now(UTC) + timedelta(minutes=2)
    ticks = await asyncio.gather(
        chat.parts.fallback.tick(now=later), chat.parts.fallback.tick(now=later)
    )
    assert sorted(ticks) == [0, 1]
    assert await chat.parts.fallback.tick(now=later + timedelta(hours=1)) == 0
    found = await orders(probe, 5, settle=1.0)
    copies = [o for o in found if o.channel is Channel.EMAIL]
    assert len(found) == 5
    assert len(copies) == 1
    (copy,) = copies
    assert copy.reply_id == "r-unseen"
    assert copy.recipient == "ana@example.com"
    assert copy.account == "support@shop.example"
    assert copy.text == "Not seen"
    assert copy.automatic is True
    assert copy.conversation_id == "conv-1"


@pytest.mark.parametrize(
    "chat_env", [{**FALLBACK, "WEBCHAT_EMAIL_FALLBACK_SECONDS": "0.5"}], indirect=True
)
async def test_the_replicas_loop_sends_the_copy_by_itself(
    chat: RunningChat, probe: TopicProbe
) -> None:
    await reply(probe, order("ana@example.com", "r-1", "Nobody is connected"))
    found = await orders(probe, 2)
    assert [o.channel for o in found] == [Channel.WEBCHAT, Channel.EMAIL]
