"""Surveys through the timeline's batch handler and the survey loop on in-memory stores:
scheduled by a resolution, sent once when due, answered by the next message that is a
score without reopening or routing, and the same answer again after a redelivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    CUSTOMER_MESSAGES,
    Channel,
    ContractModel,
    ConversationActivity,
    ConversationStatusChanged,
    FeedbackKind,
    FeedbackReceived,
    ReplyDelivery,
)
from switchboard_common.deadletter import RawRecord
from switchboard_devkit.testing.builders import T0
from switchboard_devtools.testing.router_timeline import (
    RecordingPublisher,
    customer_message,
    inbound,
)
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.apply import TimelineStage
from switchboard_router.timeline.identity import identity_of
from switchboard_router.timeline.memory import (
    InMemoryIdentityStore,
    InMemoryRawMail,
    InMemoryTimelineStore,
)
from switchboard_router.timeline.resolve import IdentityResolver
from switchboard_router.timeline.survey_store import InMemorySurveyStore
from switchboard_router.timeline.surveyor import Surveyor
from switchboard_router.timeline.surveys import Survey, SurveyPolicy
from switchboard_router.timeline.threading import Policy

pytestmark = pytest.mark.unit

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
PHONE = "+34600111222"
SURVEYS = SurveyPolicy(
    kind=FeedbackKind.CSAT,
    channels=frozenset({Channel.WHATSAPP, Channel.EMAIL}),
    delay=HOUR,
    answer_window=timedelta(days=1),
    text="How did we do? 1-5",
)


class CountingSurveyStore(InMemorySurveyStore):
    """Counts the reads of surveys that the timeline's batches make."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, survey_ids: Sequence[str]) -> dict[str, Survey]:
        self.reads += 1
        return await super().get(survey_ids)


class Router:
    """The timeline stage and the survey loop of one router on shared stores."""

    def __init__(self, clock: list[datetime]) -> None:
        self.clock = clock
        self.store = InMemoryTimelineStore()
        self.surveys = CountingSurveyStore()
        self.publisher = RecordingPublisher()
        self.offset = 0
        self.restart()

    def restart(self) -> None:
        """A new process on the same stores (nothing kept in memory)."""
        metrics = TimelineMetrics.create(CollectorRegistry())

        def now() -> datetime:
            return self.clock[0]

        self.surveyor = Surveyor(
            self.surveys,
            self.store,
            self.publisher,
            policy=SURVEYS,
            threading=Policy(),
            clock=now,
            metrics=metrics,
        )
        self.stage = TimelineStage(
            self.store,
            self.publisher,
            IdentityResolver(InMemoryIdentityStore(), clock=now, metrics=metrics, ttl=0),
            raw_mail=InMemoryRawMail(),
            policy=Policy(),
            clock=now,
            metrics=metrics,
            surveyor=self.surveyor,
        )

    def delivery(self, event: ContractModel) -> Delivery:
        self.offset += 1
        record = RawRecord(CUSTOMER_MESSAGES, 0, self.offset, b"cu-1", b"{}", ())
        attributes = CloudEventAttributes(
            id=f"ce-{self.offset}", type=event.ce_type, source="/t", time=T0
        )
        return Delivery(record, attributes, event, CUSTOMER_MESSAGES)

    async def writes(self, message_id: str, text: str, at: datetime) -> Delivery:
        message = inbound(message_id, channel=Channel.WHATSAPP, sender=PHONE, at=at, text=text)
        delivery = self.delivery(customer_message(message, "cu-1", identity_of(message)))
        await self.stage([delivery])
        return delivery

    async def resolves(self, conversation_id: str, at: datetime) -> None:
        change = ConversationStatusChanged(
            customer_id="cu-1", conversation_id=conversation_id, status="resolved", at=at
        )
        await self.stage([self.delivery(change)])

    def activity(self, message_id: str) -> ConversationActivity:
        found: set[ConversationActivity] = {
            a for a in self.publisher.events(ConversationActivity) if a.message_id == message_id
        }
        (activity,) = found
        return activity


async def conversation_resolved_and_surveyed() -> tuple[Router, str]:
    clock = [T0]
    router = Router(clock)
    await router.writes("m-1", "my order is late", T0)
    assert router.surveys.reads == 0  # a message that is no score costs no read
    conversation_id = router.activity("m-1").conversation_id
    await router.resolves(conversation_id, T0 + HOUR)
    clock[0] = T0 + 90 * MINUTE  # before the delay has passed: nothing goes
    await router.surveyor.send_due()
    assert router.publisher.events(ReplyDelivery) == []
    router.restart()  # the timer is in the store, not in memory
    clock[0] = T0 + 2 * HOUR
    await router.surveyor.send_due()
    await router.surveyor.send_due()
    (survey,) = router.publisher.events(ReplyDelivery)
    assert (survey.reply_id, survey.recipient, survey.automatic) == (
        f"survey:{conversation_id}",
        PHONE,
        True,
    )
    return router, conversation_id


async def test_a_score_answers_once_without_reopening_and_a_redelivery_counts_the_same() -> None:
    router, conversation_id = await conversation_resolved_and_surveyed()
    answer = await router.writes("m-2", "4/5 fast, thanks", T0 + 3 * HOUR)
    (rating,) = router.publisher.events(FeedbackReceived)
    assert (rating.conversation_id, rating.score, rating.comment, rating.feedback_id) == (
        conversation_id,
        4,
        "fast, thanks",
        f"survey:{conversation_id}",
    )
    activity = router.activity("m-2")
    assert (activity.conversation_id, activity.kind, activity.expects_reply) == (
        conversation_id,
        "message",
        False,
    )
    stored = await router.store.get_conversations([conversation_id])
    assert stored[conversation_id]["status"] == "resolved"

    router.restart()  # the batch comes again to a new process
    await router.stage([answer])
    ratings = router.publisher.events(FeedbackReceived)
    assert len(ratings) == 2
    assert ratings[0] == ratings[1]
    events = [o for o in router.publisher.published if isinstance(o.event, FeedbackReceived)]
    assert events[0].event_id == events[1].event_id
    replayed = [a for a in router.publisher.events(ConversationActivity) if a.message_id == "m-2"]
    assert {a.expects_reply for a in replayed} == {False}

    # A second score is an ordinary message: the survey was answered.
    await router.writes("m-3", "5", T0 + 4 * HOUR)
    assert router.activity("m-3").kind == "reopened"
    assert len(router.publisher.events(FeedbackReceived)) == 2


async def test_a_message_that_is_no_score_reopens_and_a_later_score_is_no_answer() -> None:
    router, conversation_id = await conversation_resolved_and_surveyed()
    await router.writes("m-2", "it broke again", T0 + 3 * HOUR)
    assert router.activity("m-2").kind == "reopened"
    await router.resolves(conversation_id, T0 + 4 * HOUR)
    await router.writes("m-3", "5", T0 + 5 * HOUR)
    assert router.publisher.events(FeedbackReceived) == []
    assert router.activity("m-3").kind == "reopened"


async def test_a_conversation_reopened_before_the_delay_gets_no_survey() -> None:
    clock = [T0]
    router = Router(clock)
    await router.writes("m-1", "hello", T0)
    conversation_id = router.activity("m-1").conversation_id
    await router.resolves(conversation_id, T0 + HOUR)
    await router.writes("m-2", "one more thing", T0 + 90 * MINUTE)
    clock[0] = T0 + 3 * HOUR
    await router.surveyor.send_due()
    assert router.publisher.events(ReplyDelivery) == []
    assert router.surveys.surveys[f"survey:{conversation_id}"].reason == "reopened"
