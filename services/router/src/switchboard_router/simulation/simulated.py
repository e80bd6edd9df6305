"""The simulated clock and store a replay runs the router's engine on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from switchboard_router.assignment.model import RouteState, RouteStatus
from switchboard_router.assignment.store import InMemoryAssignmentStore


def _to_ms(moment: datetime) -> datetime:
    # The engine's clocks answer at millisecond precision (what MongoDB stores); the
    # simulated one does too, so a replay decides on the same instants the router did.
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class SimulatedClock:
    """Time as the replay has reached it: moved forward to each event and timer, never
    back (records of the same moment may arrive out of order across topics)."""

    def __init__(self, start: datetime) -> None:
        self._now = _to_ms(start)

    def now(self) -> datetime:
        return self._now

    def advance_to(self, moment: datetime) -> datetime:
        moment = _to_ms(moment)
        self._now = max(self._now, moment)
        return self._now


class ReplayStore(InMemoryAssignmentStore):
    """The in-memory store with the waiting heads indexed.

    The engine reads the queue from the store at every drain (other replicas may have
    queued work); the shipped in-memory store answers by scanning every head, which a
    day of traffic (tens of thousands of conversations, a drain per resolution) turns
    into minutes. Same answers, kept in step with every head written."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: dict[str, RouteState] = {}

    async def put_head(self, state: RouteState) -> None:
        await super().put_head(state)
        self._index(state)

    async def put_heads(self, states: Sequence[RouteState]) -> None:
        await super().put_heads(states)
        for state in states:
            self._index(state)

    def _index(self, state: RouteState) -> None:
        if state.status == RouteStatus.WAITING:
            self._waiting[state.conversation_id] = state
        else:
            self._waiting.pop(state.conversation_id, None)

    async def waiting(self, channels: Sequence[str], limit: int) -> list[RouteState]:
        found = [s for s in self._waiting.values() if str(s.channel) in channels]
        found.sort(key=lambda s: (s.priority.rank, s.waiting_since, s.conversation_id))
        return found[:limit]
