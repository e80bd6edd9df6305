"""Surveys' shell: scheduled by the timeline's resolutions, sent by a loop once due,
answered by the customer's messages in the timeline's own batch. The decisions are
``surveys`` (pure); the waiting is ``survey_store``.

Round trips: a timeline batch with resolutions on surveyed channels writes once
(``schedule``); one with a message that opens with a number reads the surveys it may
answer once, and writes once if some do (``answers``); others cost nothing. A round of the
loop reads the due surveys, their conversations and their customers' states (three
reads), publishes once and writes once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from switchboard_common.contract import FEEDBACK, REPLY_DELIVERIES, FeedbackKind, ReplyDelivery
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.metrics import add_tally
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.plan import CustomerPlan, Item, MessageItem
from switchboard_router.timeline.ports import TimelineStore
from switchboard_router.timeline.resolve import Publisher
from switchboard_router.timeline.survey_store import SurveyStore
from switchboard_router.timeline.surveys import (
    Score,
    Survey,
    SurveyPolicy,
    feedback,
    is_answer,
    parse_score,
    plan_survey,
    scheduled,
    survey_id,
    survey_targets,
)
from switchboard_router.timeline.threading import CustomerState, Policy

log = get_logger(__name__)

#: Due surveys one round of the loop sends.
ROUND = 200


@dataclass(frozen=True)
class Answer:
    """A customer message that answers a survey, and the rating it gives."""

    survey: Survey
    score: Score
    #: When the customer answered (the message's receipt).
    at: datetime

    def outgoing(self) -> Outgoing:
        """Its ``support.feedback.received`` (one event id per survey: a redelivered
        answer publishes the same event again)."""
        return Outgoing(
            topic=FEEDBACK,
            key=self.survey.conversation_id,
            event=feedback(self.survey, self.score, self.at),
            event_id=f"{self.survey.survey_id}:feedback",
        )


def _some_score(text: str) -> bool:
    return any(parse_score(text, kind) is not None for kind in FeedbackKind)


def quieted(item: MessageItem) -> MessageItem:
    """A survey's answer as threading and routing take it: joins its conversation as it
    is, like a reaction, never reopening it or waiting for an agent."""
    return MessageItem(item.record, dataclasses.replace(item.inbound, expects_reply=False))


class Surveyor:
    """Surveys of one router (safe on any number of replicas: every write is
    conditional by ``_id``, and the sender delivers a ``reply_id`` once)."""

    def __init__(
        self,
        store: SurveyStore,
        timeline: TimelineStore,
        publisher: Publisher,
        *,
        policy: SurveyPolicy,
        threading: Policy,
        clock: Callable[[], datetime],
        metrics: TimelineMetrics,
    ) -> None:
        self.store = store
        self._timeline = timeline
        self._publisher = publisher
        self.policy = policy
        self._threading = threading
        self._clock = clock
        self._metrics = metrics

    # ------------------------------------------------------------------- scheduling
    async def schedule(self, plans: Sequence[CustomerPlan]) -> None:
        """Schedule the surveys of the conversations these plans resolved (after their
        states are written: a batch replayed after a crash applies its resolutions
        again, and scheduling again is harmless)."""
        surveys = []
        for plan in plans:
            for change in plan.applied_status:
                conversation = plan.state.conversations.get(change.conversation_id)
                if change.status != "resolved" or conversation is None:
                    continue
                survey = scheduled(
                    change.conversation_id, plan.state.customer_id, conversation, self.policy
                )
                if survey is not None:
                    surveys.append(survey)
        await self.store.schedule(surveys)

    # ------------------------------------------------------------------- sending
    async def send_due(self) -> None:
        """Send the surveys whose delay has passed, or record why not (one round)."""
        now = self._clock()
        due = await self.store.due(now, ROUND)
        if not due:
            return
        conversations = await self._timeline.get_conversations(
            sorted({s.conversation_id for s in due})
        )
        states = await self._timeline.load_states(sorted({s.customer_id for s in due}))
        outgoing: list[Outgoing] = []
        sent: list[tuple[str, datetime, datetime]] = []
        skipped: list[tuple[str, str]] = []
        outcomes: Counter[tuple[str, ...]] = Counter()
        for survey in due:
            planned = plan_survey(
                survey,
                conversations.get(survey.conversation_id),
                states.get(survey.customer_id),
                self.policy,
                now,
            )
            if planned is None:
                continue
            if isinstance(planned, ReplyDelivery):
                outgoing.append(
                    Outgoing(
                        topic=REPLY_DELIVERIES,
                        key=survey.conversation_id,
                        event=planned,
                        event_id=f"{survey.survey_id}:delivery",
                    )
                )
                sent.append((survey.survey_id, now, now + self.policy.answer_window))
                outcomes[survey.channel.value, "sent"] += 1
            else:
                log.info(
                    "survey not sent",
                    conversation_id=survey.conversation_id,
                    channel=survey.channel.value,
                    reason=planned,
                )
                skipped.append((survey.survey_id, planned))
                outcomes[survey.channel.value, planned] += 1
        # Published before it is recorded: a crash in between sends it again next
        # round, and the sender delivers a reply_id once.
        await self._publisher.publish_all(outgoing)
        await self.store.settle(sent, skipped)
        add_tally(self._metrics.surveys, outcomes)

    # ------------------------------------------------------------------- answers
    async def answers(
        self, customers: Sequence[tuple[CustomerState, Sequence[Item]]]
    ) -> dict[str, Answer]:
        """The messages of a batch that answer a survey (message id → answer), each
        survey answered once, by the customer's first message on its conversation after
        it went. Recorded before anything of the batch is stored, so a replay of the
        batch finds the same answers however far the first attempt got."""
        wanted: list[tuple[CustomerState, list[tuple[MessageItem, tuple[str, ...]]]]] = []
        ids: set[str] = set()
        for base, items in customers:
            surveyed = [
                i
                for i in items
                if isinstance(i, MessageItem)
                and i.inbound.expects_reply
                and i.inbound.channel in self.policy.channels
            ]
            # Only a score of some scale can answer: other messages cost no read (and
            # no threading twice).
            if not any(_some_score(i.record.message.text) for i in surveyed):
                continue
            messages = [(i, survey_targets(base, i.inbound, self._threading)) for i in surveyed]
            wanted.append((base, messages))
            ids.update(survey_id(c) for _, targets in messages for c in targets)
        if not ids:
            return {}
        surveys = await self.store.get(sorted(ids))
        found: dict[str, Answer] = {}
        for base, messages in wanted:
            spent: set[str] = set()  # conversations the customer wrote on in this batch
            for item, targets in messages:
                answer = self._answer(base, item, targets, surveys, spent)
                if answer is None:
                    spent.update(targets)
                else:
                    found[item.message_id] = answer
                    spent.add(answer.survey.conversation_id)
        await self.store.answered([(a.survey.survey_id, m) for m, a in found.items()])
        add_tally(
            self._metrics.surveys,
            Counter((a.survey.channel.value, "answered") for a in found.values()),
        )
        return found

    @staticmethod
    def _answer(
        base: CustomerState,
        item: MessageItem,
        targets: tuple[str, ...],
        surveys: dict[str, Survey],
        spent: set[str],
    ) -> Answer | None:
        message = item.record.message
        for conversation_id in targets:
            survey = surveys.get(survey_id(conversation_id))
            if (
                survey is None
                or conversation_id in spent
                or not is_answer(
                    survey,
                    base.conversations.get(conversation_id),
                    message.message_id,
                    message.received_at,
                )
            ):
                continue
            score = parse_score(message.text, survey.kind)
            if score is not None:
                return Answer(survey, score, message.received_at)
        return None
