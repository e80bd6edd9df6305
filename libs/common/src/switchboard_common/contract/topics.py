"""Topic names, keys and the event types each topic carries (CONTRACT.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard_common.contract.events import (
    AgentStatusChanged,
    AgentUpserted,
    ContractModel,
    ConversationActivity,
    ConversationAssigned,
    ConversationEscalated,
    ConversationQueued,
    ConversationReopened,
    ConversationRequeued,
    ConversationResolved,
    ConversationTransferred,
    DeadLetter,
    DeliveryUpdated,
    FeedbackReceived,
    MessageReceived,
    NoteAdded,
    OfferAccepted,
    OfferRejected,
    ReplyRequested,
    ReplySent,
    SlaAtRisk,
    SlaBreached,
)
from switchboard_common.contract.internal import (
    ConversationStatusChanged,
    CustomerErased,
    CustomerMessage,
    ReplyDelivery,
)

INBOUND = "support.inbound.v1"
ASSIGNMENTS = "support.assignments.v1"
AGENT_EVENTS = "support.agent-events.v1"
CONVERSATION_EVENTS = "support.conversation-events.v1"
SLA_EVENTS = "support.sla-events.v1"
DEADLETTER = "support.deadletter.v1"
OUTBOUND = "support.outbound.v1"
FEEDBACK = "support.feedback.v1"
#: Public since the SLA monitor reads it; named when it was the router's own topic, and
#: kept so that no record in flight is stranded by an upgrade.
CONVERSATION_ACTIVITY = "switchboard.router.conversation-activity.v1"

#: Router-internal topics (not public: see ``contract.internal``).
CUSTOMER_MESSAGES = "switchboard.router.customer-messages.v1"
REPLY_DELIVERIES = "switchboard.router.reply-deliveries.v1"

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One public topic: name, what its key is, which payloads it carries, how to create it.

    Partition counts and retention are defaults for a fresh cluster; operators may raise
    partitions (keys keep per-key order, so scaling out is safe) and set retention.
    """

    name: str
    key: str
    events: tuple[type[ContractModel], ...]
    partitions: int
    retention_ms: int
    description: str
    types: dict[str, type[ContractModel]] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", {e.ce_type: e for e in self.events})


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        INBOUND,
        key="sender identity, e.g. email:ana@example.com or whatsapp:+34600111222",
        events=(MessageReceived,),
        partitions=12,
        retention_ms=7 * _DAY_MS,
        description="Normalised customer messages from every channel.",
    ),
    TopicSpec(
        ASSIGNMENTS,
        key="conversation_id",
        events=(
            ConversationQueued,
            ConversationAssigned,
            ConversationRequeued,
            ConversationEscalated,
        ),
        partitions=12,
        retention_ms=7 * _DAY_MS,
        description="Routing decisions for helpdesk frontends; order by seq.",
    ),
    TopicSpec(
        AGENT_EVENTS,
        key="agent_id",
        events=(AgentUpserted, AgentStatusChanged, OfferAccepted, OfferRejected),
        partitions=6,
        retention_ms=7 * _DAY_MS,
        description="Agent profiles, presence and offer answers from frontends.",
    ),
    TopicSpec(
        CONVERSATION_EVENTS,
        key="conversation_id",
        events=(
            ReplySent,
            ConversationResolved,
            ConversationReopened,
            ConversationTransferred,
            NoteAdded,
        ),
        partitions=12,
        retention_ms=7 * _DAY_MS,
        description="Agent activity on conversations from frontends.",
    ),
    TopicSpec(
        SLA_EVENTS,
        key="conversation_id",
        events=(SlaAtRisk, SlaBreached),
        partitions=12,
        retention_ms=7 * _DAY_MS,
        description="SLA warnings and breaches from the SLA monitor.",
    ),
    TopicSpec(
        OUTBOUND,
        key="conversation_id",
        events=(ReplyRequested, DeliveryUpdated),
        partitions=12,
        retention_ms=7 * _DAY_MS,
        description="Replies frontends ask Switchboard to deliver, and what became of them.",
    ),
    TopicSpec(
        FEEDBACK,
        key="conversation_id",
        events=(FeedbackReceived,),
        partitions=12,
        retention_ms=30 * _DAY_MS,
        description="Customers' ratings of conversations (CSAT, NPS), from survey answers "
        "and frontends.",
    ),
    TopicSpec(
        DEADLETTER,
        key="the original record's key",
        events=(DeadLetter,),
        partitions=3,
        retention_ms=30 * _DAY_MS,
        description="Records a consumer could not process, with the reason.",
    ),
    TopicSpec(
        CONVERSATION_ACTIVITY,
        key="conversation_id",
        events=(ConversationActivity,),
        partitions=12,  # co-partitioned with support.conversation-events.v1
        retention_ms=3 * _DAY_MS,
        description="Customer messages as stored in their conversations, for routing and "
        "SLA clocks.",
    ),
)

#: Topics private to the router's pipeline; created like the public ones.
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        CUSTOMER_MESSAGES,
        key="customer_id",
        events=(CustomerMessage, ConversationStatusChanged, CustomerErased),
        partitions=12,
        retention_ms=3 * _DAY_MS,
        description="Router identity -> timeline: messages after identity resolution, and the "
        "status changes and erasures that threading must see in order with them.",
    ),
    TopicSpec(
        REPLY_DELIVERIES,
        key="conversation_id",
        events=(ReplyDelivery,),
        partitions=12,
        retention_ms=7 * _DAY_MS,
        description="Router -> the service speaking a channel: requested replies with the "
        "address, subject and references sending them needs.",
    ),
)

ALL_TOPICS: tuple[TopicSpec, ...] = TOPICS + INTERNAL_TOPICS
TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}

#: Every public contract payload by its ``ce_type``.
EVENT_TYPES: dict[str, type[ContractModel]] = {
    ce_type: model for t in TOPICS for ce_type, model in t.types.items()
}


@dataclass(frozen=True)
class TopicNames:
    """The topic names a deployment uses: the contract names behind an optional prefix.

    The prefix exists so tests (and several environments sharing one cluster) can isolate
    themselves; production leaves it empty and uses the contract names unchanged.
    """

    prefix: str = ""

    def __call__(self, contract_name: str) -> str:
        """The deployed name of a contract topic."""
        if contract_name not in TOPICS_BY_NAME:
            raise KeyError(f"{contract_name!r} is not a contract topic")
        return f"{self.prefix}{contract_name}"

    def contract_name(self, deployed_name: str) -> str:
        """The contract name of a deployed topic (inverse of calling this object)."""
        if self.prefix and deployed_name.startswith(self.prefix):
            deployed_name = deployed_name[len(self.prefix) :]
        if deployed_name not in TOPICS_BY_NAME:
            raise KeyError(f"{deployed_name!r} is not a contract topic")
        return deployed_name

    @property
    def inbound(self) -> str:
        return self(INBOUND)

    @property
    def assignments(self) -> str:
        return self(ASSIGNMENTS)

    @property
    def agent_events(self) -> str:
        return self(AGENT_EVENTS)

    @property
    def conversation_events(self) -> str:
        return self(CONVERSATION_EVENTS)

    @property
    def sla_events(self) -> str:
        return self(SLA_EVENTS)

    @property
    def deadletter(self) -> str:
        return self(DEADLETTER)

    @property
    def customer_messages(self) -> str:
        return self(CUSTOMER_MESSAGES)

    @property
    def conversation_activity(self) -> str:
        return self(CONVERSATION_ACTIVITY)
