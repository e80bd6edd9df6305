"""Plain data of assignment: agents, the routing state of a conversation, and
the capacity slots that make reservations atomic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from switchboard_common.contract import (
    AgentStatus,
    Channel,
    ConversationAssigned,
    ConversationEscalated,
    ConversationQueued,
    ConversationRequeued,
    Priority,
)
from switchboard_common.contract.events import AssignmentDecision


class RouteStatus(StrEnum):
    """Where a conversation stands in routing."""

    WAITING = "waiting"  # in a queue
    OFFERED = "offered"  # offered to an agent, holds a slot until accepted or expired
    ASSIGNED = "assigned"  # the agent has it, holds a slot
    AWAITING_CUSTOMER = "awaiting_customer"  # agent replied, slot freed (policy)
    RESOLVED = "resolved"  # done; a reopen routes it again


#: Statuses that hold a capacity slot.
HOLDING = frozenset({RouteStatus.OFFERED, RouteStatus.ASSIGNED})

EventKind = Literal["queued", "assigned", "requeued", "escalated"]
EVENT_MODELS: dict[str, type[AssignmentDecision]] = {
    "queued": ConversationQueued,
    "assigned": ConversationAssigned,
    "requeued": ConversationRequeued,
    "escalated": ConversationEscalated,
}


class RouteState(BaseModel):
    """The routing state of one conversation after decision number ``seq``.

    Every change is a new decision ``<conversation_id>:<seq>`` inserted with a unique
    ``_id``: whoever inserts it owns that step, so two replicas can never both move a
    conversation from the same state.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    conversation_id: str
    seq: Annotated[int, Field(ge=1)]
    status: RouteStatus
    customer_id: str
    channel: Channel
    priority: Priority
    queue: str
    #: The skills the conversation names, with minimum levels (its topics' and
    #: ``language:<code>``); the queue's target says which of them are required.
    skills: dict[str, int] = Field(default_factory=dict)
    language: str | None = None
    topics: list[str] = Field(default_factory=list)
    tenant: str | None = None
    customer_tier: str | None = None
    #: When it started waiting; kept across requeues (a rejected offer keeps its place).
    waiting_since: AwareDatetime
    agent_id: str | None = None
    #: The capacity slots it holds (channel slot, then total-capacity slots).
    slots: list[str] = Field(default_factory=list)
    offer_expires_at: AwareDatetime | None = None
    #: Agents who rejected it or let the offer expire: never offered to them again.
    excluded_agents: list[str] = Field(default_factory=list)
    #: Waits for this agent (the one who last served the customer) until ``sticky_until``.
    sticky_agent: str | None = None
    sticky_until: AwareDatetime | None = None
    #: Only this agent may take it (transfer to a named agent who was full).
    pinned_agent: str | None = None
    #: SLA escalations already applied, e.g. ``at_risk:first_response``.
    escalations: list[str] = Field(default_factory=list)
    #: Ids of the records already applied (idempotence on redelivery), newest last.
    causes: list[str] = Field(default_factory=list)
    decided_at: AwareDatetime
    #: When the agent accepted (or was given) it; for the offline-reassign timeout.
    assigned_at: AwareDatetime | None = None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RouteState:
        return cls.model_validate({k: v for k, v in document.items() if k != "_id"})

    def applied(self, cause: str) -> bool:
        return cause in self.causes

    def with_cause(self, cause: str | None) -> list[str]:
        if cause is None:
            return list(self.causes)
        return [*self.causes[-19:], cause]


def decision_id(conversation_id: str, seq: int) -> str:
    return f"{conversation_id}:{seq}"


def slot_id(agent_id: str, channel: str, index: int) -> str:
    """A channel slot: ``<agent>|<channel>|<k>`` with k < capacity on that channel."""
    return f"{agent_id}|{channel}|{index}"


def total_slot_id(agent_id: str, index: int) -> str:
    """A unit of an agent's total (weighted) capacity: ``<agent>|*|<k>``."""
    return f"{agent_id}|*|{index}"


def parse_slot(slot: str) -> tuple[str, str, int]:
    agent, channel, index = slot.rsplit("|", 2)
    return agent, channel, int(index)


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent's profile and presence, as the router knows it."""

    agent_id: str
    display_name: str = ""
    skills: Mapping[str, int] = field(default_factory=dict)
    languages: frozenset[str] = frozenset()
    capacity: Mapping[Channel, int] = field(default_factory=dict)
    total_capacity: int | None = None
    tenant: str | None = None
    status: AgentStatus = AgentStatus.OFFLINE
    status_since: datetime | None = None
    #: (partition, offset) of the last agent event applied: views apply newer only.
    version: tuple[int, int] = (-1, -1)
    #: The highest capacity per channel the agent ever had: slots at or above the current
    #: capacity may still be held (work taken before a decrease) only below it.
    ceiling: Mapping[Channel, int] = field(default_factory=dict)
    #: Skills and ``language:<code>`` (level 10) in one map, for the matcher's hot loop.
    levels: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = {f"language:{code}": 10 for code in self.languages}
        levels.update({k: v for k, v in self.skills.items() if not k.startswith("language:")})
        object.__setattr__(self, "levels", levels)

    def level(self, skill: str) -> int:
        """Skill level 0..10; ``language:<code>`` is 10 when the agent speaks it."""
        return self.levels.get(skill, 0)

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.agent_id,
            "display_name": self.display_name,
            "skills": dict(self.skills),
            "languages": sorted(self.languages),
            "capacity": {str(c): n for c, n in self.capacity.items()},
            "total_capacity": self.total_capacity,
            "tenant": self.tenant,
            "status": str(self.status),
            "status_since": self.status_since,
            "version": list(self.version),
            "ceiling": {str(c): n for c, n in self.ceiling.items()},
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Agent:
        version = doc.get("version") or [-1, -1]
        return cls(
            agent_id=str(doc["_id"]),
            display_name=str(doc.get("display_name") or ""),
            skills={str(k): int(v) for k, v in (doc.get("skills") or {}).items()},
            languages=frozenset(doc.get("languages") or ()),
            capacity={Channel(c): int(n) for c, n in (doc.get("capacity") or {}).items()},
            total_capacity=doc.get("total_capacity"),
            tenant=doc.get("tenant"),
            status=AgentStatus(doc.get("status") or AgentStatus.OFFLINE),
            status_since=doc.get("status_since"),
            version=(int(version[0]), int(version[1])),
            ceiling={Channel(c): int(n) for c, n in (doc.get("ceiling") or {}).items()},
        )


def above_capacity(agent: Agent, channel: str, slot: str) -> list[str] | None:
    """Check a reserved channel slot against the agent's stored capacity: None when the
    slot is at or above the capacity in force (give it back), else the slots between
    the capacity and the highest capacity the agent ever had (``ceiling``). While any of
    those is held (work taken before a decrease) no lower slot may be kept either."""
    capacity = agent.capacity.get(Channel(channel), 0)
    if parse_slot(slot)[2] >= capacity:
        return None
    ceiling = agent.ceiling.get(Channel(channel), capacity)
    return [slot_id(agent.agent_id, channel, index) for index in range(capacity, ceiling)]


@dataclass(frozen=True, slots=True)
class Slot:
    """A held capacity slot: the document whose ``_id`` is the slot."""

    slot_id: str
    agent_id: str
    channel: str
    conversation_id: str
    seq: int
    at: datetime
