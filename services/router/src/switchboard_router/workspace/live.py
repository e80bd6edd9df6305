"""Live updates for agents' consoles: what happened, for whom, fanned out to the streams
this replica serves.

``LiveFeed`` is the handler of the per-replica consumer group: it turns assignment
decisions, customer messages, delivery statuses and agent activity into ``LiveUpdate``
for the agent concerned, and hands them to the ``LiveHub``, which queues them for each
of that agent's open streams. Assignment decisions name their agent; for the other
events the agent holding the conversation is read from its routing state, one ``_id``
lookup per Kafka batch.

Updates say what changed, never the text (the console refetches): a long-lived stream
carries no personal data. A stream that cannot keep up is dropped with a last ``reset``
update (refetch and reconnect); the consumer never waits for a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    ConversationActivity,
    ConversationAssigned,
    ConversationReopened,
    ConversationRequeued,
    ConversationResolved,
    ConversationTransferred,
    DeliveryUpdated,
    NoteAdded,
    ReplySent,
)
from switchboard_common.contract.events import AssignmentDecision
from switchboard_router.assignment.model import RouteState
from switchboard_router.metrics import LiveMetrics

#: The stream's event names (SSE ``event:``).
READY, RESET = "ready", "reset"


@dataclass(frozen=True)
class LiveUpdate:
    """One event on an agent's stream: its name and its (text-free) data."""

    event: str
    data: Mapping[str, Any]


def _update(event: str, conversation_id: str, **fields: Any) -> LiveUpdate:
    return LiveUpdate(event, {"type": event, "conversation_id": conversation_id, **fields})


def assignment_updates(decision: AssignmentDecision) -> list[tuple[str, LiveUpdate]]:
    """A routing decision for the agent it gives the conversation to, or takes it from."""
    cid = decision.conversation_id
    common = {"queue": decision.queue, "priority": str(decision.priority), "seq": decision.seq}
    if isinstance(decision, ConversationAssigned) and decision.agent_id:
        if decision.offer_expires_at is not None:
            until = decision.offer_expires_at.isoformat()
            return [(decision.agent_id, _update("offer", cid, offered_until=until, **common))]
        return [(decision.agent_id, _update("assigned", cid, **common))]
    if isinstance(decision, ConversationRequeued):
        # Who had it: the rejecting, timed-out or offline agent, or the one transferring.
        previous = decision.reason.get("previous_agent_id") or decision.reason.get("from_agent_id")
        reason = str(decision.reason.get("trigger") or "requeued")
        if isinstance(previous, str) and previous:
            return [(previous, _update("unassigned", cid, reason=reason, **common))]
        return []
    if decision.agent_id:  # queued or escalated while an agent is named
        change = decision.ce_type.rsplit(".", 1)[-1]
        return [(decision.agent_id, _update("conversation", cid, change=change, **common))]
    return []


def held_updates(event: object, holder: str | None) -> list[tuple[str, LiveUpdate]]:
    """An event about a conversation, for the agent holding it (``holder``)."""
    updates: list[tuple[str, LiveUpdate]] = []
    match event:
        case ConversationActivity():
            if holder:
                fields = {"message_id": event.message_id, "kind": event.kind}
                message = _update("message", event.conversation_id, **fields)
                updates.append((holder, message))
        case DeliveryUpdated():
            if holder:
                fields = {"reply_id": event.reply_id, "status": str(event.status)}
                updates.append((holder, _update("delivery", event.conversation_id, **fields)))
        case NoteAdded():
            if holder:
                fields = {"note_id": event.note_id, "agent_id": event.agent_id}
                updates.append((holder, _update("note", event.conversation_id, **fields)))
        case ConversationResolved():
            if holder:
                update = _update("unassigned", event.conversation_id, reason="resolved")
                updates.append((holder, update))
        case ConversationTransferred():
            # The routing state may already show the conversation waiting (no holder):
            # the agent it was transferred from is told either way.
            for agent in dict.fromkeys(a for a in (event.from_agent_id, holder) if a):
                update = _update("unassigned", event.conversation_id, reason="transferred")
                updates.append((agent, update))
        case ConversationReopened() | ReplySent():
            if holder:
                change = "reopened" if isinstance(event, ConversationReopened) else "reply_sent"
                update = _update("conversation", event.conversation_id, change=change)
                updates.append((holder, update))
    return updates


#: Events about a conversation that its holder is told of (``held_updates``).
HELD_EVENTS = (
    ConversationActivity,
    DeliveryUpdated,
    NoteAdded,
    ConversationResolved,
    ConversationTransferred,
    ConversationReopened,
    ReplySent,
)
HeldBy = Callable[[Sequence[str]], Awaitable[Mapping[str, RouteState]]]


class _Stream:
    def __init__(self, agent_id: str, size: int) -> None:
        self.agent_id = agent_id
        self.queue: asyncio.Queue[LiveUpdate] = asyncio.Queue(maxsize=size)


class LiveHub:
    """This replica's open streams, by agent; updates queued per stream, never awaited."""

    def __init__(self, queue_size: int, metrics: LiveMetrics | None = None) -> None:
        if queue_size < 1:
            raise ValueError("a stream's queue holds at least one update")
        self.queue_size = queue_size
        self.metrics = metrics
        self._streams: dict[str, set[_Stream]] = {}

    def open(self, agent_id: str) -> _Stream:
        stream = _Stream(agent_id, self.queue_size)
        self._streams.setdefault(agent_id, set()).add(stream)
        if self.metrics is not None:
            self.metrics.streams.inc()
        return stream

    def close(self, stream: _Stream) -> None:
        streams = self._streams.get(stream.agent_id)
        if streams is not None and stream in streams:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.agent_id]
            if self.metrics is not None:
                self.metrics.streams.dec()

    def streams(self, agent_id: str) -> int:
        return len(self._streams.get(agent_id, ()))

    async def run(self) -> None:
        """A background task of the shell: when the service stops (this is cancelled),
        every stream ends, so the HTTP server need not wait for the clients."""
        try:
            await asyncio.Event().wait()
        finally:
            self.close_all()

    def publish(self, agent_id: str, update: LiveUpdate) -> None:
        streams = list(self._streams.get(agent_id, ()))
        if streams and self.metrics is not None:
            self.metrics.updates.labels(update.event).inc(len(streams))
        for stream in streams:
            try:
                stream.queue.put_nowait(update)
            except asyncio.QueueFull:
                self._end(stream, "too_slow")

    def close_all(self) -> None:
        for streams in list(self._streams.values()):
            for stream in list(streams):
                self._end(stream, "shutdown")

    def _end(self, stream: _Stream, reason: str) -> None:
        """Out of the hub (nothing more is queued), its queue replaced by ``reset``: what
        it still held is stale, the client refetches anyway."""
        if self.metrics is not None:
            self.metrics.ended.labels(reason).inc()
        self.close(stream)
        while not stream.queue.empty():
            stream.queue.get_nowait()
        stream.queue.put_nowait(LiveUpdate(RESET, {"type": RESET, "reason": reason}))

    async def next(self, stream: _Stream, timeout: float) -> LiveUpdate | None:
        """The stream's next update (``reset`` last, once it ended); None when nothing
        came within ``timeout`` (time for a heartbeat)."""
        try:
            return await asyncio.wait_for(stream.queue.get(), timeout)
        except TimeoutError:
            return None


class LiveFeed:
    """The per-replica consumer group's handler: updates for the hub, no side effects."""

    def __init__(self, hub: LiveHub, held_by: HeldBy) -> None:
        self.hub = hub
        self.held_by = held_by

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        updates: list[tuple[str, LiveUpdate]] = []
        held = [d.event for d in deliveries if isinstance(d.event, HELD_EVENTS)]
        about = list(dict.fromkeys(e.conversation_id for e in held))
        holders = await self.held_by(about) if about else {}
        for delivery in deliveries:
            event = delivery.event
            if isinstance(event, AssignmentDecision):
                updates += assignment_updates(event)
            elif isinstance(event, HELD_EVENTS):
                state = holders.get(event.conversation_id)
                updates += held_updates(event, state.agent_id if state else None)
        for agent_id, update in updates:
            self.hub.publish(agent_id, update)
        return []
