"""Surveys on real Kafka and the database, through the router's own consumers and loop:
a resolved conversation gets its survey once its delay has passed — also when the
router restarts in between — the customer's "4" comes back as one rating and leaves the
conversation resolved, and a conversation opened by an auto-reply gets none."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    FEEDBACK,
    REPLY_DELIVERIES,
    Channel,
    ConversationResolved,
    FeedbackKind,
    FeedbackReceived,
    ReplyDelivery,
)
from switchboard_common.mongo import Document
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    customer_writes,
    eventually,
    running_router,
)

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
queues: [{name: general}]
surveys:
  kind: csat
  channels: [email, whatsapp]
  delay_seconds: 0.5
  answer_window_seconds: 3600
  text: "How did we do? Reply 1-5. Ref {reference}"
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


async def survey_document(
    client: AsyncMongoClient[Document], env: dict[str, str], conversation_id: str, state: str
) -> Document:
    surveys = client[env["MONGODB_DATABASE"]]["surveys"]

    async def find() -> Document | None:
        found = await surveys.find_one({"_id": f"survey:{conversation_id}"})
        return found if found is not None and found["state"] == state else None

    document: Document = await eventually(find)
    return document


async def deliveries_of(probe: TopicProbe, conversation_id: str) -> list[ReplyDelivery]:
    return [
        e
        for _, e in await probe.read_events(REPLY_DELIVERIES, timeout=3)
        if isinstance(e, ReplyDelivery) and e.conversation_id == conversation_id
    ]


async def resolve(probe: TopicProbe, conversation_id: str) -> None:
    event = ConversationResolved(conversation_id=conversation_id, at=datetime.now(UTC))
    await probe.send(CONVERSATION_EVENTS, event, key=conversation_id)


async def test_a_resolved_conversation_is_surveyed_once_across_a_restart_and_answered(
    service_env: dict[str, str],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    policy_file: Path,
) -> None:
    phone = "+34600999111"
    router_env: dict[str, Any] = {"routing_policy_file": policy_file}
    # The first router schedules the survey but never looks for due ones.
    async with running_router(service_env, **router_env, survey_tick_seconds=3600) as router:
        conversation_id = await customer_writes(
            probe, "sv-1", channel=Channel.WHATSAPP, sender=phone, text="My order is late"
        )
        await resolve(probe, conversation_id)
        await survey_document(mongo_client, service_env, conversation_id, "scheduled")
    assert await deliveries_of(probe, conversation_id) == []

    async with running_router(service_env, **router_env, survey_tick_seconds=0.1) as router:
        await survey_document(mongo_client, service_env, conversation_id, "sent")
        (survey,) = await deliveries_of(probe, conversation_id)
        assert survey.reply_id == f"survey:{conversation_id}"
        assert survey.automatic
        assert (survey.channel, survey.recipient) == (Channel.WHATSAPP, phone)
        assert survey.text == f"How did we do? Reply 1-5. Ref {conversation_id}"

        await customer_writes(
            probe, "sv-2", channel=Channel.WHATSAPP, sender=phone, text="4 quick and kind"
        )
        answered = await survey_document(mongo_client, service_env, conversation_id, "answered")
        assert answered["answer_message_id"] == "sv-2"
        ratings = [
            e
            for _, e in await probe.read_events(FEEDBACK, count=1, timeout=10)
            if isinstance(e, FeedbackReceived)
        ]
        assert [(r.conversation_id, r.kind, r.score, r.comment) for r in ratings] == [
            (conversation_id, FeedbackKind.CSAT, 4, "quick and kind")
        ]
        assert (ratings[0].feedback_id, ratings[0].source) == (
            f"survey:{conversation_id}",
            "survey_reply",
        )
        body = await router.conversation(conversation_id)
        assert body["conversation"]["status"] == "resolved"
    # Still one survey after the second router's rounds.
    assert len(await deliveries_of(probe, conversation_id)) == 1


async def test_a_conversation_opened_by_an_auto_reply_gets_no_survey(
    service_env: dict[str, str],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    policy_file: Path,
) -> None:
    async with running_router(
        service_env, routing_policy_file=policy_file, survey_tick_seconds=0.1
    ):
        conversation_id = await customer_writes(
            probe, "sv-auto", subject="Out of office", text="I am away", auto_submitted=True
        )
        await resolve(probe, conversation_id)
        skipped = await survey_document(mongo_client, service_env, conversation_id, "skipped")
        assert skipped["reason"] == "auto_submitted"
    assert await deliveries_of(probe, conversation_id) == []
