"""Payload models of every event in the public contract (CONTRACT.md).

Models are frozen and strictly typed. Unknown fields are ignored on input, so a producer
may add fields (the contract allows that) without breaking older consumers. Fields marked
"extension" are additions to CONTRACT.md v1: optional, with defaults, never required of
other producers.

Validate records from Kafka with ``Model.model_validate_json(raw_bytes)``: in JSON mode,
strict validation still parses RFC 3339 strings into datetimes and strings into enums.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from switchboard_common.contract.enums import (
    AgentStatus,
    Channel,
    DeliveryStatus,
    FeedbackKind,
    Priority,
    SenderKind,
    SlaMetric,
)

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=1024)]
SkillLevel = Annotated[int, Field(ge=1, le=10)]
Capacity = Annotated[int, Field(ge=0, le=1000)]


class ContractModel(BaseModel):
    """Base of every contract payload."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    #: The CloudEvents ``ce_type`` this payload is published under (set on event models).
    ce_type: ClassVar[str] = ""


# --------------------------------------------------------------------------- inbound


class Sender(ContractModel):
    """Who sent a message, as the channel identifies them."""

    kind: SenderKind
    value: NonEmptyStr
    display_name: str | None = None


class Attachment(ContractModel):
    """A file or media item that came with a message.

    For email every field is known (the bytes stay in the raw store). Social providers
    deliver media by reference: ``size`` and ``sha256`` are then null and
    ``provider_media_id`` says how to fetch it.
    """

    filename: str | None
    content_type: str
    size: Annotated[int, Field(ge=0)] | None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None
    #: extension: image, audio, video, document, sticker, location, contacts, file.
    kind: str | None = None
    #: extension: the provider's id for fetching the media.
    provider_media_id: str | None = None
    #: extension: inline (Content-Disposition inline / embedded image) rather than attached.
    inline: bool = False


AuthResult = Annotated[str, Field(max_length=32, pattern=r"^[a-z]+$")]


class SenderAuthentication(ContractModel):
    """extension (email): how the From domain was checked. Result words only (RFC 8601:
    ``pass``, ``fail``, ``neutral``, ``none``, ``temperror``, ``permerror``, ...), never
    the domains or addresses involved."""

    #: ``dkim`` (verified by ingest itself) or ``authentication-results`` (the verdict of
    #: a trusted MTA in front of it).
    method: Literal["dkim", "authentication-results"]
    #: The best DKIM result among the message's signatures; ``none`` without a signature.
    dkim: AuthResult | None = None
    #: SPF result of the envelope sender's domain; null when not checked.
    spf: AuthResult | None = None
    #: DMARC result; null when no DMARC policy was evaluated.
    dmarc: AuthResult | None = None
    #: A passing DKIM signature or SPF check belongs to the From domain (DMARC alignment).
    aligned: bool = False


#: ``MessageReceived.kind`` values that change an earlier message rather than say something
#: new: they join the timeline but never reopen a conversation or wait for an answer.
QUIET_KINDS = frozenset({"reaction", "edit"})


class MessageReceived(ContractModel):
    """``support.message.received``: one customer message from any channel."""

    ce_type: ClassVar[str] = "support.message.received"

    message_id: NonEmptyStr
    channel: Channel
    provider_message_id: str | None
    provider_thread_id: str | None
    sender: Sender
    received_at: AwareDatetime
    sent_at: AwareDatetime | None
    subject: str | None
    text: str
    attachments: list[Attachment] = Field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    auto_submitted: bool = False

    #: extension: the provider account that received it (support address, WhatsApp
    #: phone number id, page id, Instagram account id, X account id, bot id).
    account: str | None = None
    #: extension: the inbox or tenant the account belongs to (from ingest configuration).
    tenant: str | None = None
    #: extension: the whole text including quoted history and signature (email).
    full_text: str | None = None
    #: extension: where the exact bytes received are kept, e.g. ``sha256:<hex>``.
    raw_ref: str | None = None
    #: extension: what could not be parsed; the message is still delivered.
    parse_errors: list[str] = Field(default_factory=list)
    #: extension: the provider message this one replies to or quotes.
    reply_to_provider_message_id: str | None = None
    #: extension: ``message`` for an ordinary message; social ingest may add
    #: ``postback``, ``interactive``, ``story_reply``, ``edit``, ``reaction``.
    kind: str = "message"
    #: extension: the machine-readable payload of a postback, quick reply or button
    #: reply (what the business defined for the option the customer chose).
    postback_payload: str | None = None
    #: extension: recipients (email To/Cc) as addresses.
    recipients: list[str] = Field(default_factory=list)
    #: extension: true when the sender's domain is proven to have sent it (email: DMARC
    #: alignment), false when it was checked and is not, null when not checked (social
    #: channels need no check: the provider's signed webhook names the sender). Email
    #: that is not ``true`` must not link identities.
    sender_authenticated: bool | None = None
    #: extension: the checks behind ``sender_authenticated`` (email).
    authentication: SenderAuthentication | None = None

    @property
    def expects_reply(self) -> bool:
        """Whether the customer is waiting for an answer: not an auto-reply, bounce or bulk
        mail, and not a reaction to or an edit of an earlier message. Only such messages
        reopen, open or route conversations and start response clocks."""
        return not self.auto_submitted and self.kind not in QUIET_KINDS


# --------------------------------------------------------------------------- assignments


class AssignmentDecision(ContractModel):
    """Payload shared by the four ``support.conversation.*`` routing events."""

    conversation_id: NonEmptyStr
    customer_id: NonEmptyStr
    channel: Channel
    priority: Priority
    agent_id: str | None
    queue: NonEmptyStr
    required_skills: list[str] = Field(default_factory=list)
    #: Per-conversation sequence number; consumers drop events with a lower seq.
    seq: Annotated[int, Field(ge=0)]
    decided_at: AwareDatetime
    #: The inputs of the decision: why this agent, or why queued.
    reason: dict[str, JsonValue] = Field(default_factory=dict)
    #: extension: tenant of the conversation.
    tenant: str | None = None
    #: extension: when the agent must accept by (offers), else null.
    offer_expires_at: AwareDatetime | None = None
    #: extension: when the conversation started waiting (kept across requeues).
    waiting_since: AwareDatetime | None = None


class ConversationQueued(AssignmentDecision):
    """``support.conversation.queued``: waiting for an agent."""

    ce_type: ClassVar[str] = "support.conversation.queued"


class ConversationAssigned(AssignmentDecision):
    """``support.conversation.assigned``: given (or offered) to ``agent_id``."""

    ce_type: ClassVar[str] = "support.conversation.assigned"


class ConversationRequeued(AssignmentDecision):
    """``support.conversation.requeued``: taken back from an agent and waiting again."""

    ce_type: ClassVar[str] = "support.conversation.requeued"


class ConversationEscalated(AssignmentDecision):
    """``support.conversation.escalated``: priority raised or moved to overflow."""

    ce_type: ClassVar[str] = "support.conversation.escalated"


# --------------------------------------------------------------------------- agent events


class AgentUpserted(ContractModel):
    """``support.agent.upserted``: an agent's profile, created or replaced."""

    ce_type: ClassVar[str] = "support.agent.upserted"

    agent_id: NonEmptyStr
    display_name: str
    skills: dict[str, SkillLevel] = Field(default_factory=dict)
    capacity: dict[Channel, Capacity] = Field(default_factory=dict)
    languages: list[str] = Field(default_factory=list)
    #: extension: optional limit on the weighted sum of load across channels.
    total_capacity: Capacity | None = None
    #: extension: tenant the agent works for.
    tenant: str | None = None


class AgentStatusChanged(ContractModel):
    """``support.agent.status_changed``."""

    ce_type: ClassVar[str] = "support.agent.status_changed"

    agent_id: NonEmptyStr
    status: AgentStatus
    #: extension: when the change happened (defaults to the event time).
    at: AwareDatetime | None = None


class OfferAccepted(ContractModel):
    """``support.offer.accepted``."""

    ce_type: ClassVar[str] = "support.offer.accepted"

    agent_id: NonEmptyStr
    conversation_id: NonEmptyStr


class OfferRejected(ContractModel):
    """``support.offer.rejected``."""

    ce_type: ClassVar[str] = "support.offer.rejected"

    agent_id: NonEmptyStr
    conversation_id: NonEmptyStr
    #: extension: free text from the agent, never shown to customers.
    reason: str | None = None


# --------------------------------------------------------------------------- conversation events


class ReplySent(ContractModel):
    """``support.reply.sent``: an agent answered the customer."""

    ce_type: ClassVar[str] = "support.reply.sent"

    conversation_id: NonEmptyStr
    agent_id: NonEmptyStr
    sent_at: AwareDatetime
    #: extension: the conversation now waits on the customer (pauses SLA clocks).
    awaiting_customer: bool = False


class ConversationResolved(ContractModel):
    """``support.conversation.resolved``."""

    ce_type: ClassVar[str] = "support.conversation.resolved"

    conversation_id: NonEmptyStr
    at: AwareDatetime


class ConversationReopened(ContractModel):
    """``support.conversation.reopened``."""

    ce_type: ClassVar[str] = "support.conversation.reopened"

    conversation_id: NonEmptyStr
    at: AwareDatetime


class ConversationTransferred(ContractModel):
    """``support.conversation.transferred``: to a queue or to a named agent."""

    ce_type: ClassVar[str] = "support.conversation.transferred"

    conversation_id: NonEmptyStr
    from_agent_id: str | None
    to_queue: str | None = None
    to_agent_id: str | None = None
    #: extension: when it happened.
    at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> ConversationTransferred:
        if (self.to_queue is None) == (self.to_agent_id is None):
            raise ValueError("exactly one of to_queue and to_agent_id must be set")
        return self


#: The longest internal note (a note is for colleagues, not a document store).
NOTE_MAX_CHARS = 10_000


class NoteAdded(ContractModel):
    """``support.note.added`` (extension, v1): an agent's internal note on a conversation.
    Never sent to the customer; it joins the conversation's timeline for other agents."""

    ce_type: ClassVar[str] = "support.note.added"

    #: The publisher's idempotency key: a note is stored once per ``note_id``.
    note_id: Annotated[str, Field(min_length=1, max_length=200)]
    conversation_id: NonEmptyStr
    agent_id: NonEmptyStr
    text: Annotated[str, Field(min_length=1, max_length=NOTE_MAX_CHARS)]
    at: AwareDatetime


# --------------------------------------------------------------------------- outbound


class ReplyRequested(ContractModel):
    """``support.reply.requested``: a frontend asks Switchboard to answer the customer on
    the conversation's channel."""

    ce_type: ClassVar[str] = "support.reply.requested"

    #: The frontend's idempotency key: one reply is delivered once per ``reply_id``.
    reply_id: Annotated[str, Field(min_length=1, max_length=200)]
    conversation_id: NonEmptyStr
    agent_id: NonEmptyStr
    #: Plain text; checked against the channel's limit when delivered, not here, so
    #: that a reply too long for its channel gets a ``failed`` status, not a dead letter.
    text: str
    html: str | None = None
    requested_at: AwareDatetime


class DeliveryError(ContractModel):
    """Why a reply was not delivered: the provider's code and text, or Switchboard's own
    (``unknown_conversation``, ``empty_text``, ``text_too_long``, ...)."""

    code: str
    text: str


class DeliveryUpdated(ContractModel):
    """``support.delivery.updated``: what became of a requested reply."""

    ce_type: ClassVar[str] = "support.delivery.updated"

    reply_id: Annotated[str, Field(min_length=1, max_length=200)]
    conversation_id: NonEmptyStr
    #: null only when the conversation is unknown (or erased).
    channel: Channel | None
    status: DeliveryStatus
    provider_message_id: str | None = None
    error: DeliveryError | None = None
    at: AwareDatetime


# --------------------------------------------------------------------------- feedback


class FeedbackReceived(ContractModel):
    """``support.feedback.received``: a customer's rating of a conversation, from a survey
    answer or published by a frontend. Never exported by customer."""

    ce_type: ClassVar[str] = "support.feedback.received"

    conversation_id: NonEmptyStr
    kind: FeedbackKind
    #: CSAT 1-5, NPS 0-10.
    score: int
    comment: Annotated[str, Field(max_length=2000)] | None = None
    at: AwareDatetime
    #: extension: the publisher's idempotency key (a rating counts once per id).
    feedback_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    #: extension: where it came from (``survey_reply``, ``link``, ``frontend``).
    source: Annotated[str, Field(max_length=32)] | None = None

    @model_validator(mode="after")
    def _score_in_range(self) -> FeedbackReceived:
        if self.score not in self.kind.scores:
            low, high = self.kind.scores[0], self.kind.scores[-1]
            raise ValueError(f"a {self.kind.value} score is {low}-{high}, not {self.score}")
        return self


# --------------------------------------------------------------------------- SLA events


class SlaEvent(ContractModel):
    """Payload shared by ``support.sla.at_risk`` and ``support.sla.breached``."""

    conversation_id: NonEmptyStr
    metric: SlaMetric
    policy: NonEmptyStr
    due_at: AwareDatetime
    at: AwareDatetime
    #: extensions: labels of the conversation, for routing escalation and dashboards.
    channel: Channel | None = None
    priority: Priority | None = None
    queue: str | None = None
    #: extension: which clock of the conversation this is about, stable per clock
    #: (``1`` for first_response, ``m<hash of the starting message>`` for a next_response,
    #: ``e<n>`` for the n-th open/reopen episode's resolution).
    cycle: str | None = None


class SlaAtRisk(SlaEvent):
    """``support.sla.at_risk``: ``warn_before`` the deadline, once per clock."""

    ce_type: ClassVar[str] = "support.sla.at_risk"


class SlaBreached(SlaEvent):
    """``support.sla.breached``: at the deadline, once per clock."""

    ce_type: ClassVar[str] = "support.sla.breached"


# --------------------------------------------------------------------------- dead letters


class DeadLetterHeader(ContractModel):
    """One Kafka header of the original record; the value is base64 (headers are bytes)."""

    key: str
    value_b64: str | None


class DeadLetter(ContractModel):
    """``support.deadletter``: a record a consumer could not process, with the reason.

    The record key on ``support.deadletter.v1`` is the original key.
    """

    ce_type: ClassVar[str] = "support.deadletter"

    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    error: str
    #: The original value, base64; null for a tombstone.
    value_b64: str | None
    headers: list[DeadLetterHeader] = Field(default_factory=list)
    #: extension: the consumer group and service that gave up on it, and when.
    consumer_group: str | None = None
    service: str | None = None
    failed_at: AwareDatetime | None = None
    #: extension: a bounded category of ``error`` (for metrics and triage).
    reason: Literal[
        "not_json", "invalid_payload", "bad_headers", "unknown_type", "processing_error"
    ] = "processing_error"


def model_json_schema(model: type[ContractModel]) -> dict[str, Any]:
    """The JSON Schema of a payload as it travels (serialisation view)."""
    return model.model_json_schema(mode="serialization")


class ConversationActivity(ContractModel):
    """A customer message stored in its conversation (public, ``CONVERSATION_ACTIVITY``).

    The router's timeline publishes it after the message is stored; the router's
    assignment and the SLA monitor consume it (``support.inbound.v1`` does not know the
    conversation yet). Keyed by ``conversation_id`` and co-partitioned with
    ``support.conversation-events.v1`` (same partition count), so one consumer sees every
    event of a conversation in order.

    ``kind``: ``opened`` (a new conversation), ``reopened`` (a message reopened a
    resolved conversation), ``message`` (another customer message on an open one).
    """

    ce_type: ClassVar[str] = "switchboard.router.conversation_activity"

    conversation_id: NonEmptyStr
    customer_id: NonEmptyStr
    channel: Channel
    kind: Literal["opened", "reopened", "message"]
    message_id: NonEmptyStr
    received_at: AwareDatetime
    subject: str | None = None
    #: The message text for classification (keywords, language), at most 4000 characters.
    text: Annotated[str, Field(max_length=4000)] = ""
    auto_submitted: bool = False
    #: False for auto-replies, reactions and edits (``MessageReceived.expects_reply``):
    #: never routed, and no response clock starts.
    expects_reply: bool = True
    tenant: str | None = None
    #: The customer's tier (e.g. ``vip``) when a CRM link set one.
    customer_tier: str | None = None
    #: The conversation this one continues (a message after the reopen window).
    previous_conversation_id: str | None = None
    #: How many customer messages the conversation holds, this one included.
    message_count: Annotated[int, Field(ge=1)] = 1
