"""Reply records as receipts by watermark find them (``ReplyRecords.sent_before``), on the
real MongoDB-wire server: by recipient on an account, up to each one's own watermark
(compared with when each reply's own request left), in one query for all, and without
what was already reported; nothing said of a reply after "read"; only the watermarked
channels keep who a reply went to."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import Channel, DeliveryStatus, DeliveryUpdated, ReplyDelivery
from switchboard_common.kafka import Outgoing
from switchboard_common.mongo import Document
from switchboard_common.outbound_records import ReplyRecord, ReplyRecords, recipient_key
from switchboard_devkit.testing.builders import T0
from switchboard_ingest_social.normalise.common import ProviderStatus, Watermark
from switchboard_ingest_social.replies import REPLIES, StatusReporter

pytestmark = pytest.mark.integration

PAGE = "108457628476532"
ANA, BOB = "6712345678901234", "6798765432109876"


def order(reply_id: str, recipient: str, account: str = PAGE) -> ReplyDelivery:
    return ReplyDelivery(
        reply_id=reply_id,
        conversation_id=f"c-{recipient}",
        customer_id=f"cu-{recipient}",
        agent_id="agent-7",
        channel=Channel.MESSENGER,
        recipient=recipient,
        account=account,
        text="Hello",
        requested_at=T0,
        ordered_at=T0,
    )


async def sent(records: ReplyRecords, reply: ReplyDelivery, handed_at: int) -> None:
    """``reply`` handed over ``handed_at`` seconds after T0 and taken a second later."""
    record = ReplyRecord(
        reply.reply_id,
        "sent",
        T0 + timedelta(seconds=handed_at + 1),
        f"m_{reply.reply_id}",
        handed_at=T0 + timedelta(seconds=handed_at),
    )
    await records.start([(ReplyRecord(reply.reply_id, "sending", T0), reply)])
    await records.finish([(record, reply)])


async def test_a_watermark_finds_the_replies_to_that_person_up_to_it(
    mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    records = ReplyRecords(mongo_client[database_name], REPLIES)
    await records.create_indexes()
    await sent(records, order("a1", ANA), 0)
    await sent(records, order("a2", ANA), 10)
    await sent(records, order("b1", BOB), 0)
    await sent(records, order("other-page", ANA, account="999"), 0)
    ana = recipient_key(Channel.MESSENGER, PAGE, ANA)
    bob = recipient_key(Channel.MESSENGER, PAGE, BOB)

    # Ana read up to her first reply (a watermark equal to its time finds it); Bob to now.
    found = await records.sent_before({ana: T0, bob: T0 + timedelta(hours=1)}, unless="read")
    assert {to: [r.reply_id for r in replies] for to, replies in found.items()} == {
        ana: ["a1"],
        bob: ["b1"],
    }
    [a1] = found[ana]
    assert (a1.provider_message_id, a1.conversation_id, a1.handed_at) == ("m_a1", f"c-{ANA}", T0)
    assert a1.reported == frozenset()

    # Once reported read, a later receipt does not find it again; others it still does.
    await records.mark_reported(Channel.MESSENGER, "read", ["m_a1"])
    later = await records.sent_before({ana: T0 + timedelta(hours=1)}, unless="read")
    assert [r.reply_id for r in later[ana]] == ["a2"]
    delivered = await records.sent_before({ana: T0 + timedelta(hours=1)}, unless="delivered")
    assert {r.reply_id: r.reported for r in delivered[ana]} == {
        "a1": frozenset({"read"}),
        "a2": frozenset(),
    }
    assert await records.sent_before({}, unless="read") == {}


async def test_a_reply_is_found_by_when_its_own_request_left_and_only_messenger_keeps_who(
    mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    records = ReplyRecords(mongo_client[database_name], REPLIES)
    late = order("late", ANA)
    # Recorded at T0 + 31 s; its request left at T0 + 30 s (others queued before it).
    record = ReplyRecord(
        "late", "sent", T0 + timedelta(seconds=31), "m_late", handed_at=T0 + timedelta(seconds=30)
    )
    await records.start([(ReplyRecord("late", "sending", T0), late)])
    await records.finish([(record, late)])
    ana = recipient_key(Channel.MESSENGER, PAGE, ANA)
    # Ana read up to 10 s after T0: before this reply left, so it is not read.
    assert await records.sent_before({ana: T0 + timedelta(seconds=10)}, unless="read") == {}
    [found] = (await records.sent_before({ana: T0 + timedelta(minutes=1)}, unless="read"))[ana]
    assert found.handed_at == T0 + timedelta(seconds=30)

    whatsapp = order("wa", "+34600111222").model_copy(update={"channel": Channel.WHATSAPP})
    await records.start([(ReplyRecord("wa", "sending", T0), whatsapp)])
    await records.finish([(ReplyRecord("wa", "sent", T0, "wamid.1"), whatsapp)])
    lookups = mongo_client[database_name][f"{REPLIES}_by_provider_id"]
    assert "to" in (await lookups.find_one({"_id": "messenger:m_late"}) or {})
    assert "to" not in (await lookups.find_one({"_id": "whatsapp:wamid.1"}) or {"to": 1})


async def test_a_delivery_named_after_a_read_watermark_says_nothing_more(
    mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    records = ReplyRecords(mongo_client[database_name], REPLIES)
    published: list[Outgoing] = []

    async def publish(items: Sequence[Outgoing]) -> None:
        published.extend(items)

    reporter = StatusReporter(records, publish, clock=lambda: T0)
    await sent(records, order("r1", ANA), 0)
    read = ProviderStatus(
        channel=Channel.MESSENGER,
        provider_message_id=None,
        status="read",
        at=T0 + timedelta(minutes=1),
        watermark=Watermark(PAGE, ANA, T0 + timedelta(minutes=1)),
    )
    assert await reporter.report([read]) == 1
    late_delivery = ProviderStatus(
        channel=Channel.MESSENGER, provider_message_id="m_r1", status="delivered", at=T0
    )
    await reporter.report([late_delivery])
    statuses = [i.event.status for i in published if isinstance(i.event, DeliveryUpdated)]
    assert statuses == [DeliveryStatus.READ]
