"""How long agents take: the handling-time model of a replay (pure).

Customers write when they wrote, whatever the policy; agents' work depends on when and
to whom routing gave the conversation. So the recorded agent work on a conversation —
replies, the resolution, offer answers, transfers and reopenings — is cut into
*episodes*, one per assignment (``support.conversation.assigned`` to an agent; an
accepted offer continues the episode of its offer), each a script of steps timed from
the moment of its assignment.

When the replay assigns a conversation for the n-th time:

- to the agent who had its n-th recorded episode, that episode's script runs again,
  timed from the simulated assignment (same policy: the same moments as recorded);
- to another agent (or where reality never assigned it), the script of a *donor*
  episode runs: a completed (resolved) episode recorded in the same queue and channel,
  picked by a hash of the conversation id and n — a draw from that queue's and
  channel's recorded distribution of first-reply, reply and resolution times, taken
  whole so they stay consistent with each other. With no donor there, the channel's
  episodes of any queue, then any episode. Donor scripts keep replies, offer answers
  and the resolution (transfers and reopenings belong to their own conversation).

Work recorded before any assignment (a conversation resolved from the queue) is
replayed at its recorded time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    ConversationAssigned,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    OfferAccepted,
    OfferRejected,
    ReplySent,
)
from switchboard_common.contract.events import ContractModel
from switchboard_router.simulation.trace import Trace, TraceRecord

#: Agent work on a conversation (on ``support.conversation-events.v1`` and, for offer
#: answers, ``support.agent-events.v1``).
Work = (
    ReplySent
    | ConversationResolved
    | ConversationReopened
    | ConversationTransferred
    | OfferAccepted
    | OfferRejected
)
#: What a donor's script lends another conversation.
_LENT = (ReplySent, ConversationResolved, OfferAccepted, OfferRejected)


@dataclass(frozen=True, slots=True)
class Step:
    """One piece of recorded work, ``offset`` seconds after its episode's assignment."""

    offset: float
    record: TraceRecord


@dataclass
class Episode:
    conversation_id: str
    agent_id: str
    queue: str
    channel: str
    start: datetime
    steps: list[Step] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return any(isinstance(s.record.event, ConversationResolved) for s in self.steps)


@dataclass(frozen=True, slots=True)
class Script:
    """The work a simulated assignment sets off: where it came from (``recorded``,
    ``modelled``, ``none``: no recorded episode to draw from) and its steps."""

    source: str
    steps: Sequence[Step]
    #: The agent of the episode the steps were recorded with (its id in them is replaced).
    recorded_agent: str | None = None


def is_work(record: TraceRecord) -> bool:
    return record.topic in (CONVERSATION_EVENTS, AGENT_EVENTS) and isinstance(record.event, Work)


def starts_episode(event: ContractModel) -> bool:
    """An assignment to an agent, other than the acceptance of its own offer."""
    return (
        isinstance(event, ConversationAssigned)
        and event.agent_id is not None
        and event.reason.get("offer") != "accepted"
    )


class Handling(Protocol):
    """Where a replay's agent work comes from: recorded episodes (``HandlingModel``) or,
    for a sample trace, the work the sample's agents were drawn to do."""

    @property
    def unassigned(self) -> Sequence[TraceRecord]: ...

    def script(
        self, conversation_id: str, nth: int, agent_id: str, queue: str, channel: str
    ) -> Script: ...


class HandlingModel:
    """Recorded episodes by conversation, and donor pools by queue and channel."""

    def __init__(self, episodes: dict[str, list[Episode]], unassigned: list[TraceRecord]) -> None:
        self.episodes = episodes
        #: Work recorded before any assignment of its conversation.
        self.unassigned: Sequence[TraceRecord] = unassigned
        done = [e for cid in sorted(episodes) for e in episodes[cid] if e.resolved]
        self._by_queue: dict[tuple[str, str], list[Episode]] = {}
        self._by_channel: dict[str, list[Episode]] = {}
        for episode in done:
            self._by_queue.setdefault((episode.queue, episode.channel), []).append(episode)
            self._by_channel.setdefault(episode.channel, []).append(episode)
        self._all = done

    @classmethod
    def from_trace(cls, trace: Trace) -> HandlingModel:
        episodes: dict[str, list[Episode]] = {}
        unassigned: list[TraceRecord] = []
        for record in trace.records:
            event = record.event
            if (
                record.topic == ASSIGNMENTS
                and isinstance(event, ConversationAssigned)
                and starts_episode(event)
            ):
                episodes.setdefault(event.conversation_id, []).append(
                    Episode(
                        event.conversation_id,
                        str(event.agent_id),
                        event.queue,
                        str(event.channel),
                        event.decided_at,
                    )
                )
            elif is_work(record):
                cid = str(getattr(event, "conversation_id", ""))
                own = episodes.get(cid)
                if not own:
                    unassigned.append(record)
                    continue
                episode = own[-1]
                offset = max(0.0, (record.time - episode.start).total_seconds())
                episode.steps.append(Step(offset, record))
        return cls(episodes, unassigned)

    @property
    def donors(self) -> int:
        return len(self._all)

    def script(
        self, conversation_id: str, nth: int, agent_id: str, queue: str, channel: str
    ) -> Script:
        """The work of the ``nth`` (from 0) simulated assignment of a conversation."""
        own = self.episodes.get(conversation_id, [])
        if nth < len(own) and own[nth].agent_id == agent_id:
            return Script("recorded", own[nth].steps, own[nth].agent_id)
        pool = self._by_queue.get((queue, channel)) or self._by_channel.get(channel) or self._all
        if not pool:
            return Script("none", ())
        digest = hashlib.sha256(f"{conversation_id}|{nth}".encode()).digest()
        donor = pool[int.from_bytes(digest[:8], "big") % len(pool)]
        lent = [s for s in donor.steps if isinstance(s.record.event, _LENT)]
        return Script("modelled", lent, donor.agent_id)


def retimed(
    event: ContractModel,
    conversation_id: str,
    agent_id: str,
    recorded_agent: str | None,
    at: datetime,
) -> ContractModel:
    """A recorded piece of work as the simulated agent does it, at ``at``."""
    update: dict[str, object] = {}
    if isinstance(event, ReplySent):
        update = {"agent_id": agent_id, "sent_at": at}
    elif isinstance(event, ConversationResolved | ConversationReopened):
        update = {"at": at}
    elif isinstance(event, ConversationTransferred):
        update = {"at": at}
        if event.from_agent_id is not None and event.from_agent_id == recorded_agent:
            update["from_agent_id"] = agent_id
    elif isinstance(event, OfferAccepted | OfferRejected):
        update = {"agent_id": agent_id}
    if getattr(event, "conversation_id", conversation_id) != conversation_id:
        update["conversation_id"] = conversation_id
    return event.model_copy(update=update)
