"""Builders and fakes for tests of the assignment stage (like ``structlog.testing``):
valid agents, activities and states, consumed deliveries, a recording publisher, a fixed
language detector, and an engine on the in-memory store with a fake clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    AgentStatus,
    Channel,
    ConversationActivity,
    ConversationResolved,
    Priority,
)
from switchboard_common.contract.events import AssignmentDecision, ContractModel
from switchboard_common.deadletter import RawRecord
from switchboard_common.kafka import Outgoing
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.consumers import ConversationHandler
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.model import Agent, RouteState, RouteStatus
from switchboard_router.assignment.policy import RoutingPolicy, load_policy
from switchboard_router.assignment.store import AssignmentStore, InMemoryAssignmentStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def agent(
    agent_id: str,
    *,
    skills: dict[str, int] | None = None,
    languages: Sequence[str] = ("en",),
    capacity: dict[Channel, int] | None = None,
    status: AgentStatus = AgentStatus.ONLINE,
    total_capacity: int | None = None,
    tenant: str | None = None,
) -> Agent:
    return Agent(
        agent_id=agent_id,
        display_name=agent_id,
        skills=skills or {},
        languages=frozenset(languages),
        capacity={Channel.EMAIL: 3} if capacity is None else capacity,
        total_capacity=total_capacity,
        tenant=tenant,
        status=status,
        status_since=T0,
        version=(0, 0),
    )


def activity(conversation_id: str, **overrides: Any) -> ConversationActivity:
    fields: dict[str, Any] = {
        "conversation_id": conversation_id,
        "customer_id": f"cust-{conversation_id}",
        "channel": Channel.EMAIL,
        "kind": "opened",
        "message_id": f"msg-{conversation_id}",
        "received_at": T0,
        "subject": None,
        "text": "",
    }
    fields.update(overrides)
    return ConversationActivity.model_validate(fields)


def state(conversation_id: str, **overrides: Any) -> RouteState:
    fields: dict[str, Any] = {
        "conversation_id": conversation_id,
        "seq": 1,
        "status": RouteStatus.WAITING,
        "customer_id": f"cust-{conversation_id}",
        "channel": Channel.EMAIL,
        "priority": Priority.NORMAL,
        "queue": "general",
        "waiting_since": T0,
        "decided_at": T0,
    }
    fields.update(overrides)
    return RouteState.model_validate(fields)


class RecordingPublisher:
    """Collects published decisions in order."""

    def __init__(self) -> None:
        self.items: list[Outgoing] = []

    async def __call__(self, items: Sequence[Outgoing]) -> None:
        self.items.extend(items)

    @property
    def events(self) -> list[AssignmentDecision]:
        return [i.event for i in self.items if isinstance(i.event, AssignmentDecision)]

    def of(self, conversation_id: str) -> list[AssignmentDecision]:
        return [e for e in self.events if e.conversation_id == conversation_id]


class FixedLanguage:
    """A language detector that always answers one language (or nothing)."""

    def __init__(self, code: str = "en", confidence: float = 0.99) -> None:
        self.code = code
        self.confidence = confidence

    def __call__(self, text: str, candidates: Sequence[str]) -> tuple[str, float]:
        del text, candidates
        return self.code, self.confidence


def engine(
    policy: RoutingPolicy | None = None,
    *,
    store: AssignmentStore | None = None,
    start: datetime = T0,
) -> tuple[AssignmentEngine, RecordingPublisher, FakeClock]:
    """An engine on the in-memory store (unless given one) with a fake clock."""
    clock = FakeClock(start)
    published = RecordingPublisher()
    built = AssignmentEngine(
        store=store or InMemoryAssignmentStore(),
        policy=policy or load_policy(),
        clock=clock,
        publish=published,
        detector=FixedLanguage(),
    )
    return built, published, clock


def deliveries(events: Sequence[tuple[str, ContractModel]]) -> list[Delivery]:
    """Consumed records of assignment (keyed by conversation), as the batch consumer hands
    them over: resolutions from the conversation events topic, the rest from activity."""
    return [
        Delivery(
            RawRecord("t", 0, n, key.encode(), b"{}", ()),
            CloudEventAttributes(id=f"e{n}-{key}", type="x", source="/t", time=T0),
            event,
            CONVERSATION_EVENTS
            if isinstance(event, ConversationResolved)
            else CONVERSATION_ACTIVITY,
        )
        for n, (key, event) in enumerate(events)
    ]


async def _discard(items: Sequence[Outgoing]) -> None:
    del items


def replica_handlers(
    store: AssignmentStore,
    policy: RoutingPolicy,
    capacities: dict[str, int],
    *,
    replicas: int = 3,
    concurrency: int = 3,
) -> list[ConversationHandler]:
    """Assignment handlers of ``replicas`` router replicas on one store: each its own
    engine and view of the email agents ``capacities`` names (stale about the others'
    slots), publishing nowhere."""
    handlers = []
    for r in range(replicas):
        built = AssignmentEngine(
            store=store,
            policy=policy,
            clock=FakeClock(T0),
            publish=_discard,
            detector=FixedLanguage(),
            replica=f"r{r}",
        )
        for agent_id, capacity in capacities.items():
            built.directory.apply(agent(agent_id, capacity={Channel.EMAIL: capacity}))
        handlers.append(ConversationHandler(built, concurrency=concurrency))
    return handlers
