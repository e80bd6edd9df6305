"""Surveys after a resolution (pure): which resolved conversation gets its survey, what
counts as the customer's answer, and the rating it becomes.

A survey is scheduled when a conversation is resolved (``Survey``, ``scheduled``), sent
once its delay has passed if ``plan_survey`` says so (``sent``, ``reply_id`` =
``survey:<conversation_id>``, so the channel's sender delivers it once however often it
is planned), and answered by the customer's next message on that conversation if it is a
score (``parse_score``, ``is_answer``): that message becomes ``support.feedback.received``
(``feedback``) and leaves the conversation resolved. ``surveyor`` is the shell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from switchboard_common.contract import Channel, FeedbackKind, FeedbackReceived, ReplyDelivery
from switchboard_common.mongo import Document
from switchboard_router.surveys import Surveys
from switchboard_router.timeline.replies import (
    REFERENCE_LENGTH,
    TEXT_LIMITS,
    addressed,
    hours_since_window,
)
from switchboard_router.timeline.threading import (
    Conversation,
    CustomerState,
    Inbound,
    Policy,
    place,
)

#: The longest comment a rating carries (``FeedbackReceived.comment``).
MAX_COMMENT = 2000
#: Who the survey is from: no agent sends it.
SURVEYOR = "switchboard"

SurveyState = Literal["scheduled", "sent", "answered", "skipped"]

# A score opens the message: digits (not part of a longer or decimal number), an optional
# "/<scale>", then anything as a comment.
_SCORE = re.compile(
    r"\s*(?P<score>[0-9]{1,3})(?:\s*/\s*(?P<scale>[0-9]{1,3}))?(?![.,]?[0-9])(?P<rest>.*)",
    re.DOTALL,
)
_COMMENT_LEAD = " \t\r\n!.,:;-–—)"  # noqa: RUF001 - dashes people type after a score


@dataclass(frozen=True)
class Score:
    """A customer's rating read from their message."""

    score: int
    comment: str | None


def parse_score(text: str, kind: FeedbackKind) -> Score | None:
    """The score a message opens with, and the rest of it as a comment: ``"5"``,
    ``"4/5"``, ``"9 great service"``, ``"10!"``. None when the message does not open with
    a number of the kind's scale (CSAT 1-5, NPS 0-10), names another scale (``"8/10"``
    for CSAT) or opens with a longer or decimal number (an order number, ``"4.5"``)."""
    match = _SCORE.fullmatch(text)
    if match is None:
        return None
    score = int(match["score"])
    scale = match["scale"]
    if score not in kind.scores or (scale is not None and int(scale) != kind.scores[-1]):
        return None
    comment = match["rest"].lstrip(_COMMENT_LEAD).strip()[:MAX_COMMENT]
    return Score(score, comment or None)


@dataclass(frozen=True)
class SurveyPolicy:
    """The policy's ``surveys`` section, checked against the channels at start."""

    kind: FeedbackKind
    channels: frozenset[Channel]
    delay: timedelta
    answer_window: timedelta
    text: str

    def __post_init__(self) -> None:
        """A text some surveyed channel would refuse is a mistake in the policy: refused
        at start, not at the first customer's expense."""
        text = self.text.format(reference="c" * REFERENCE_LENGTH)
        for channel in sorted(self.channels):
            limit = TEXT_LIMITS.get(channel)
            if limit is None:
                raise ValueError(f"Switchboard cannot send on {channel.value}")
            if len(text) > limit:
                raise ValueError(
                    f"the text for {channel.value} is {len(text)} characters with its "
                    f"reference; {channel.value} takes {limit}"
                )

    @classmethod
    def of(cls, section: Surveys) -> SurveyPolicy:
        return cls(
            kind=section.kind,
            channels=frozenset(section.channels),
            delay=timedelta(seconds=section.delay_seconds),
            answer_window=timedelta(seconds=section.answer_window_seconds),
            text=section.text,
        )


def survey_id(conversation_id: str) -> str:
    """The survey's id: its ``reply_id`` and its rating's ``feedback_id``."""
    return f"survey:{conversation_id}"


@dataclass(frozen=True)
class Survey:
    """One conversation's survey, as stored (``_id`` = ``survey_id``)."""

    conversation_id: str
    customer_id: str
    channel: Channel
    state: SurveyState
    #: The scale it asks for (the policy's when it was scheduled).
    kind: FeedbackKind
    #: The resolution it follows, and when it is due (``resolved_at`` + the delay).
    resolved_at: datetime
    due_at: datetime
    #: Set once sent: when, and until when an answer counts.
    sent_at: datetime | None = None
    answer_until: datetime | None = None
    #: The message that answered it (a redelivery of it is still the answer).
    answer_message_id: str | None = None
    #: Why it was not sent (``skipped``): a reason code, never personal data.
    reason: str | None = None

    @property
    def survey_id(self) -> str:
        return survey_id(self.conversation_id)


def scheduled(
    conversation_id: str, customer_id: str, conversation: Conversation, policy: SurveyPolicy
) -> Survey | None:
    """The survey a resolution schedules (None: its channel is not surveyed)."""
    if conversation.channel not in policy.channels or conversation.resolved_at is None:
        return None
    return Survey(
        conversation_id=conversation_id,
        customer_id=customer_id,
        channel=conversation.channel,
        state="scheduled",
        kind=policy.kind,
        resolved_at=conversation.resolved_at,
        due_at=conversation.resolved_at + policy.delay,
    )


def _status(
    conversation_id: str, document: Document, state: CustomerState | None
) -> tuple[str, datetime | None]:
    """The conversation's status and resolution time: the threading state's (the newest)
    when it still holds the conversation, else the stored document's."""
    known = None if state is None else state.conversations.get(conversation_id)
    if known is not None:
        return known.status, known.resolved_at
    return str(document.get("status") or "open"), document.get("resolved_at")


def plan_survey(
    survey: Survey,
    conversation: Document | None,
    state: CustomerState | None,
    policy: SurveyPolicy,
    now: datetime,
) -> ReplyDelivery | str | None:
    """A due survey's delivery, or why it is not sent (a reason code for the log and the
    metric), or None when it is not due after all (the conversation was resolved again
    later, and goes when that resolution's delay has passed)."""
    if (state is not None and state.erased) or (
        conversation is not None and not conversation.get("identity")
    ):
        return "erased"  # erasure may have deleted the conversation too
    if conversation is None:
        return "unknown_conversation"
    if Channel(conversation["channel"]) not in policy.channels:
        return "channel_not_surveyed"
    if conversation.get("auto_submitted"):
        return "auto_submitted"
    status, resolved_at = _status(survey.conversation_id, conversation, state)
    if status != "resolved":
        return "reopened"
    if resolved_at is not None and resolved_at + policy.delay > now:
        return None
    if hours_since_window(conversation, state, now) is not None:
        return "outside_reply_window"
    return addressed(
        conversation,
        state,
        reply_id=survey.survey_id,
        conversation_id=survey.conversation_id,
        agent_id=SURVEYOR,
        text=policy.text.format(reference=survey.conversation_id),
        requested_at=survey.due_at,
        now=now,
        automatic=True,
    )


def survey_targets(state: CustomerState, inbound: Inbound, policy: Policy) -> tuple[str, ...]:
    """The conversations whose survey a message may answer: the one threading puts it
    on (reopening it, if it is no answer), or the resolved one a new conversation would
    follow. A message the state has applied keeps the placement it got."""
    placement = state.applied.get(inbound.message_id) or place(state, inbound, policy)
    return tuple(c for c in (placement.conversation_id, placement.previous_conversation_id) if c)


def is_answer(
    survey: Survey,
    conversation: Conversation | None,
    message_id: str,
    received_at: datetime,
) -> bool:
    """Whether a customer message on the surveyed conversation may answer its survey
    (``parse_score`` then says whether it does): the survey went and is unanswered, the
    answer window is open, the conversation is still resolved and the customer has not
    written since the survey went — an answer is the *next* message. The message that
    answered it already still is its answer (a redelivery)."""
    if survey.answer_message_id is not None:
        return survey.answer_message_id == message_id
    if survey.state != "sent" or survey.sent_at is None or survey.answer_until is None:
        return False
    return (
        conversation is not None
        and conversation.status == "resolved"
        and conversation.last_message_at <= survey.sent_at
        and survey.sent_at <= received_at <= survey.answer_until
    )


def feedback(survey: Survey, score: Score, at: datetime) -> FeedbackReceived:
    """The rating a survey's answer gives (counted once per survey: ``feedback_id``)."""
    return FeedbackReceived(
        conversation_id=survey.conversation_id,
        kind=survey.kind,
        score=score.score,
        comment=score.comment,
        at=at,
        feedback_id=survey.survey_id,
        source="survey_reply",
    )
