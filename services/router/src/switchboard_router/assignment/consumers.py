"""Batch handlers of assignment's three consumers (subscribed in ``switchboard_router.app``):

- ``ConversationHandler`` (group ``router-assignment``): conversation events and SLA
  events, one conversation at a time in partition order, several conversations
  concurrently; and, handed over by the timeline in its own batch, the customer
  messages it has just stored;
- ``AgentStateHandler`` (group ``router-agents``): persists agent profiles and presence
  and acts on them (requeue offers, drain queues) and on offer answers;
- ``AgentViewHandler`` (a group per replica, from the end of the topic): keeps this
  replica's agents fresh with every agent event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    AgentStatusChanged,
    AgentUpserted,
    ContractModel,
    ConversationActivity,
    ConversationTransferred,
    OfferAccepted,
    OfferRejected,
)
from switchboard_common.deadletter import Rejection
from switchboard_common.logging import get_logger
from switchboard_router.assignment.engine import AssignmentEngine, Batched
from switchboard_router.assignment.model import Agent
from switchboard_router.assignment.views import AgentDirectory

log = get_logger(__name__)


class ConversationHandler:
    """Applies conversation-keyed events; idempotent (causes recorded in the state).

    Two entries: the ``router-assignment`` consumer's batches (``__call__``) and the
    customer messages the timeline has just stored (``route_messages``, in the timeline's
    own batch, so a message reaches its decision without another hop through Kafka)."""

    def __init__(self, engine: AssignmentEngine, concurrency: int) -> None:
        self.engine = engine
        self.concurrency = concurrency

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        return await self._run(
            [_Item(d.key or "", d.event, cause_of(d), d) for d in deliveries], {}
        )

    async def route_messages(
        self,
        activities: Sequence[ConversationActivity],
        earlier: Mapping[str, Sequence[str]],
    ) -> None:
        """Route the conversations of stored customer messages (in the timeline's order,
        which is each conversation's order); ``earlier`` names, for a conversation just
        opened, the customer's earlier conversations (sticky routing looks there for the
        agent who served them). Raises what deciding raises: the timeline's batch is
        retried, and the causes recorded make the retry change nothing twice."""
        await self._run(
            [_Item(a.conversation_id, a, f"message:{a.message_id}", None) for a in activities],
            earlier,
        )

    async def _run(
        self, items: Sequence[_Item], earlier: Mapping[str, Sequence[str]]
    ) -> list[tuple[Delivery, str]]:
        by_key: dict[str, list[_Item]] = {}
        for item in items:
            by_key.setdefault(item.key, []).append(item)
        await self._decide_leading_events(by_key, earlier)
        gate = asyncio.Semaphore(self.concurrency)
        rejected: list[tuple[Delivery, str]] = []

        async def run(queued: list[_Item]) -> None:
            async with gate:
                for item in queued:
                    problem = await self.handle(item.event, item.cause, earlier)
                    if problem is not None and item.delivery is not None:
                        rejected.append((item.delivery, problem))

        # Every conversation runs to the end of its own events even when another fails: a
        # task group would cancel the others halfway through a write or a publish, and
        # what that cancellation raises is no verdict on their records. The failures come
        # out together; the batch consumer tells a transient group (retry the batch) from
        # one holding a poison record (isolate it).
        outcomes = await asyncio.gather(
            *(run(queued) for queued in by_key.values()), return_exceptions=True
        )
        errors: list[Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                errors.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # the whole batch was cancelled: no record's failure
        if errors:
            raise ExceptionGroup("conversation events", errors)
        return rejected

    async def _decide_leading_events(
        self, by_key: dict[str, list[_Item]], earlier: Mapping[str, Sequence[str]]
    ) -> None:
        """Decide in bulk (``AssignmentEngine.on_events``) every conversation whose next
        event is a customer message, a resolution, a reopening, a valid transfer, an
        agent's reply or an SLA warning, round after round while some are (a customer who
        wrote twice: the second round finds the first routed), dropping the events
        decided from ``by_key``. What remains — a reply that accepts an offer, invalid
        transfers, and conversations the batch left undecided — is handled one at a time
        afterwards, in order per conversation."""
        engine = self.engine
        stopped: set[str] = set()
        while True:
            leading: dict[str, tuple[str, Batched, str]] = {}
            for key, items in by_key.items():
                if key in stopped or not items:
                    continue
                event = items[0].event
                if isinstance(event, ConversationTransferred) and not engine.transfer_is_valid(
                    event
                ):
                    continue
                if isinstance(event, Batched):
                    leading.setdefault(event.conversation_id, (key, event, items[0].cause))
            if not leading:
                return
            outcomes = await engine.on_events([(e, c) for _, e, c in leading.values()], earlier)
            for conversation_id, (key, event, _) in leading.items():
                outcome = outcomes.get(conversation_id)
                if outcome is None:
                    stopped.add(key)
                    continue
                by_key[key] = by_key[key][1:]
                self._count(event, outcome)

    async def handle(
        self, event: ContractModel, cause: str, earlier: Mapping[str, Sequence[str]]
    ) -> str | None:
        """One event on the one-at-a-time path; a rejection reason for an invalid
        transfer."""
        engine = self.engine
        if isinstance(event, ConversationTransferred):
            return await engine.on_transferred(event, cause)
        if isinstance(event, Batched):
            self._count(event, await engine.on_event(event, cause, earlier))
        return None

    def _count(self, event: ContractModel, outcome: str) -> None:
        """Customer messages by what routing did with them."""
        metrics = self.engine.metrics
        if metrics is not None and isinstance(event, ConversationActivity):
            metrics.activities.labels(outcome).inc()


@dataclass(frozen=True, slots=True)
class _Item:
    """One conversation event on its way through a batch: the key it is ordered by, the
    cause its step records, and the record it came from (None: handed over in-process)."""

    key: str
    event: ContractModel
    cause: str
    delivery: Delivery | None


def cause_of(delivery: Delivery) -> str:
    """The cause a record's step records (idempotence on redelivery): a customer
    message by its message id, any other event by its CloudEvents id."""
    event = delivery.event
    if isinstance(event, ConversationActivity):
        return f"message:{event.message_id}"
    return f"event:{delivery.attributes.id}"


def agent_fields(delivery: Delivery) -> dict[str, Any] | None:
    """The agent fields an ``upserted`` or ``status_changed`` event sets (None for
    others). Profile and presence are separate fields, so each event is a plain ``$set``
    and replaying events in order gives the same document."""
    event = delivery.event
    version = [delivery.record.partition, delivery.record.offset]
    if isinstance(event, AgentUpserted):
        return {
            "display_name": event.display_name,
            "skills": dict(event.skills),
            "languages": sorted(event.languages),
            "capacity": {str(c): n for c, n in event.capacity.items()},
            "total_capacity": event.total_capacity,
            "tenant": event.tenant,
            "version": version,
        }
    if isinstance(event, AgentStatusChanged):
        return {
            "status": str(event.status),
            "status_since": event.at or delivery.attributes.time,
            "version": version,
        }
    return None


def merged(current: Agent | None, agent_id: str, fields: dict[str, Any]) -> Agent:
    base = {} if current is None else current.to_document()
    return Agent.from_document({**base, **fields, "_id": agent_id})


class AgentStateHandler:
    """Persists agents (one ``$set`` per agent and batch, by ``_id``) and acts on
    presence, capacity and offer answers."""

    def __init__(self, engine: AssignmentEngine) -> None:
        self.engine = engine

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        directory = self.engine.directory
        updates: dict[str, dict[str, Any]] = {}
        actions: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            event = delivery.event
            agent_id = str(getattr(event, "agent_id", ""))
            fields = agent_fields(delivery)
            if fields is not None:
                updates.setdefault(agent_id, {}).update(fields)
                directory.apply(merged(directory.get(agent_id), agent_id, fields))
            actions.append((delivery, agent_id))
        await self.engine.store.update_agents(updates)
        for delivery, agent_id in actions:
            event = delivery.event
            if isinstance(event, OfferAccepted | OfferRejected):
                await self.engine.on_offer_answer(
                    event.agent_id,
                    event.conversation_id,
                    accepted=isinstance(event, OfferAccepted),
                    cause=f"event:{delivery.attributes.id}",
                )
            elif isinstance(event, AgentStatusChanged):
                await self.engine.on_presence(agent_id, event.status)
            elif isinstance(event, AgentUpserted):
                await self.engine.drain(agent_id)
        return []


class AgentViewHandler:
    """This replica's view of every agent event (no side effects)."""

    def __init__(self, directory: AgentDirectory) -> None:
        self.directory = directory

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        for delivery in deliveries:
            event = delivery.event
            agent_id = getattr(event, "agent_id", None)
            if agent_id is None:
                continue
            fields = agent_fields(delivery)
            if fields is not None:
                self.directory.apply(merged(self.directory.get(agent_id), agent_id, fields))
        return []


class LoggedDeadLetters:
    """Dead-letter sink of the per-replica view consumer: the consumer group that owns
    the topic dead-letters bad records once; the view only logs and skips them."""

    async def publish(self, rejections: Sequence[Rejection]) -> None:
        for rejection in rejections:
            log.warning(
                "view skipped a bad record",
                topic=rejection.record.topic,
                partition=rejection.record.partition,
                offset=rejection.record.offset,
                reason=rejection.reason,
            )
