"""Facts: what the monitor keeps of each consumed event, keyed so redelivery is harmless.

Every event that matters to a conversation's clocks becomes one fact with a key derived
from the event's own content (message id, assignment seq, agent and send time, ...).
A conversation's clocks are a pure function of its *set* of facts (see ``clocks``), so
processing events twice, or in any order across topics, gives the same clocks.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from switchboard_common.cloudevents import rfc3339
from switchboard_common.contract import (
    AssignmentDecision,
    Channel,
    ContractModel,
    ConversationActivity,
    ConversationReopened,
    ConversationResolved,
    FeedbackKind,
    FeedbackReceived,
    Priority,
    ReplySent,
    SlaAtRisk,
    SlaBreached,
    SlaEvent,
)


class _Fact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class MessageFact(_Fact):
    """A customer message on the conversation (from the router's conversation activity)."""

    kind: Literal["message"] = "message"
    message_id: str
    received_at: AwareDatetime
    activity: Literal["opened", "reopened", "message"]
    channel: Channel
    tenant: str | None = None
    customer_tier: str | None = None
    auto_submitted: bool = False
    #: False for reactions and edits (and auto-replies): nobody waits for an answer.
    expects_reply: bool = True

    @property
    def key(self) -> str:
        return f"m:{self.message_id}"

    @property
    def awaits_answer(self) -> bool:
        """Whether this message starts or keeps a response clock running."""
        return self.expects_reply and not self.auto_submitted


class AssignmentFact(_Fact):
    """A routing decision: the conversation's priority, queue and waiting time."""

    kind: Literal["assignment"] = "assignment"
    seq: int
    channel: Channel
    priority: Priority
    queue: str
    tenant: str | None = None
    decided_at: AwareDatetime
    waiting_since: AwareDatetime | None = None
    #: The agent it was assigned to (None: queued); who holds the conversation.
    agent_id: str | None = None

    @property
    def key(self) -> str:
        return f"a:{self.seq}"


class ReplyFact(_Fact):
    """An agent replied; ``awaiting_customer`` puts the conversation in that status."""

    kind: Literal["reply"] = "reply"
    agent_id: str
    sent_at: AwareDatetime
    awaiting_customer: bool = False

    @property
    def key(self) -> str:
        return f"r:{self.agent_id}:{rfc3339(self.sent_at)}"


class ResolvedFact(_Fact):
    kind: Literal["resolved"] = "resolved"
    at: AwareDatetime

    @property
    def key(self) -> str:
        return f"x:{rfc3339(self.at)}"


class ReopenedFact(_Fact):
    kind: Literal["reopened"] = "reopened"
    at: AwareDatetime

    @property
    def key(self) -> str:
        return f"o:{rfc3339(self.at)}"


class FollowUpFact(_Fact):
    """The customer wrote again after the router's reopen window: a new conversation
    continues this one (its ``previous_conversation_id``). Starts no clock here; it is a
    reopen for first-contact resolution."""

    kind: Literal["follow_up"] = "follow_up"
    message_id: str
    at: AwareDatetime

    @property
    def key(self) -> str:
        return f"c:{self.message_id}"


class FeedbackFact(_Fact):
    """A customer's rating. Keyed by the publisher's ``feedback_id``, else by kind: a
    rating counts once, and without an id the first of each kind is the one kept."""

    kind: Literal["feedback"] = "feedback"
    feedback_kind: FeedbackKind
    score: int
    at: AwareDatetime
    feedback_id: str | None = None

    @property
    def key(self) -> str:
        return f"f:{self.feedback_id}" if self.feedback_id else f"f:~{self.feedback_kind.value}"


class EmittedFact(_Fact):
    """The monitor's own at-risk or breach event came back: that emission is done."""

    kind: Literal["emitted"] = "emitted"
    emission_id: str

    @property
    def key(self) -> str:
        return f"e:{self.emission_id}"


Fact = Annotated[
    MessageFact
    | AssignmentFact
    | ReplyFact
    | ResolvedFact
    | ReopenedFact
    | FollowUpFact
    | FeedbackFact
    | EmittedFact,
    Field(discriminator="kind"),
]


class FactEnvelope(BaseModel):
    """How a fact is stored: the discriminated union, for (de)serialisation."""

    fact: Fact


def fact_key_field(key: str) -> str:
    """A storage field name for a fact key (ids may hold ``.`` or ``$``, field names not)."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def emission_id(conversation_id: str, metric: str, cycle: str, kind: str) -> str:
    """The deterministic id of one emission: claim ``_id`` and CloudEvents ``ce_id``."""
    return f"{conversation_id}:{metric}:{cycle}:{kind}"


def fact_from_event(event: ContractModel) -> tuple[str, Fact] | None:
    """The conversation id and fact an event contributes, or None if it has none.

    Transfers carry no clock information (the router follows one with a new assignment,
    which updates the queue), and SLA events without a ``cycle`` are not the monitor's.
    """
    match event:
        case ConversationActivity():
            return event.conversation_id, MessageFact(
                message_id=event.message_id,
                received_at=event.received_at,
                activity=event.kind,
                channel=event.channel,
                tenant=event.tenant,
                customer_tier=event.customer_tier,
                auto_submitted=event.auto_submitted,
                expects_reply=event.expects_reply,
            )
        case AssignmentDecision():
            return event.conversation_id, AssignmentFact(
                seq=event.seq,
                channel=event.channel,
                priority=event.priority,
                queue=event.queue,
                tenant=event.tenant,
                decided_at=event.decided_at,
                waiting_since=event.waiting_since,
                agent_id=event.agent_id,
            )
        case ReplySent():
            return event.conversation_id, ReplyFact(
                agent_id=event.agent_id,
                sent_at=event.sent_at,
                awaiting_customer=event.awaiting_customer,
            )
        case ConversationResolved():
            return event.conversation_id, ResolvedFact(at=event.at)
        case ConversationReopened():
            return event.conversation_id, ReopenedFact(at=event.at)
        case FeedbackReceived():
            return event.conversation_id, FeedbackFact(
                feedback_kind=event.kind,
                score=event.score,
                at=event.at,
                feedback_id=event.feedback_id,
            )
        case SlaAtRisk() | SlaBreached() if isinstance(event, SlaEvent) and event.cycle:
            kind = "at_risk" if isinstance(event, SlaAtRisk) else "breached"
            return event.conversation_id, EmittedFact(
                emission_id=emission_id(event.conversation_id, event.metric, event.cycle, kind)
            )
    return None


def follow_up_from_event(event: ContractModel) -> tuple[str, Fact] | None:
    """What a new conversation tells the resolved one it continues, if anything: the
    customer came back (an auto-reply, reaction or edit is not coming back)."""
    if (
        isinstance(event, ConversationActivity)
        and event.previous_conversation_id
        and event.expects_reply
        and not event.auto_submitted
    ):
        return event.previous_conversation_id, FollowUpFact(
            message_id=event.message_id, at=event.received_at
        )
    return None
