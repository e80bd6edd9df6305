"""Per-replica in-memory views used for matching: agents with their (approximate) load,
and the waiting and offered conversations.

The views are hints, never the authority: a reservation is an insert of a slot document
and a claim is an insert of a decision document, so a stale view costs a failed insert
and a retry, never an over-assignment. They are kept fresh from this replica's own
decisions at once, from every agent event (a consumer group per replica), and from the
database: the load of the agents a queued conversation could have had is re-read after
queueing it, the queue is re-read before draining an agent, and everything at start and
on a periodic refresh. No replica reads another's decisions from the published events.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from switchboard_common.contract import AgentStatus, Channel
from switchboard_router.assignment.index import AgentIndex
from switchboard_router.assignment.matcher import (
    Candidate,
    Choice,
    is_eligible,
    queue_key,
    requirements,
)
from switchboard_router.assignment.model import (
    Agent,
    RouteState,
    RouteStatus,
    Slot,
    parse_slot,
    slot_id,
    total_slot_id,
)
from switchboard_router.assignment.policy import RoutingPolicy

TOTAL = "*"


class AgentDirectory:
    """Agents by id, online agents by channel, held slot indexes, last assignment times."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self._online: dict[str, dict[str, None]] = {}
        #: agent -> channel (or "*") -> held slot indexes
        self._held: dict[str, dict[str, set[int]]] = {}
        self._last_assigned: dict[str, datetime] = {}
        self._candidates: dict[str, dict[str, Candidate]] = {}
        self.index = AgentIndex()

    # ---------------------------------------------------------------- agents
    def apply(self, agent: Agent) -> Agent | None:
        """Apply a newer version of an agent; returns the previous one. Older versions
        (a refresh racing an event) are ignored and return the current one unchanged."""
        before = self.agents.get(agent.agent_id)
        if before is not None and agent.version < before.version:
            return before
        self.agents[agent.agent_id] = agent
        self.index.update_agent(agent)
        self._changed(agent.agent_id)
        for channel in Channel:
            members = self._online.setdefault(channel, {})
            if agent.status == AgentStatus.ONLINE and agent.capacity.get(channel, 0) > 0:
                members[agent.agent_id] = None
            else:
                members.pop(agent.agent_id, None)
        return before

    def get(self, agent_id: str) -> Agent | None:
        return self.agents.get(agent_id)

    def could_take(
        self, conversations: Iterable[RouteState], policy: RoutingPolicy, now: datetime
    ) -> set[str]:
        """The online agents who would be eligible for any of these conversations if
        they had no work (the matcher's eligibility at zero load)."""
        found: set[str] = set()
        for conversation in conversations:
            needs = requirements(conversation, policy, now)
            weight = policy.capacity.weight(conversation.channel)
            for agent_id in self._online.get(conversation.channel, {}):
                if agent_id not in found and is_eligible(
                    Candidate(self.agents[agent_id], 0), conversation, needs, weight
                ):
                    found.add(agent_id)
        return found

    # ---------------------------------------------------------------- candidates
    def candidate(self, agent_id: str, channel: str) -> Candidate | None:
        agent = self.agents.get(agent_id)
        if agent is None:
            return None
        held = self._held.get(agent_id, {})
        return Candidate(
            agent,
            len(held.get(channel, ())),
            len(held.get(TOTAL, ())),
            self._last_assigned.get(agent_id),
        )

    def candidates(self, channel: str, skip: Iterable[str] = ()) -> Iterator[Candidate]:
        """Online agents with capacity on the channel (load as this replica knows it).

        Candidates are cached until the agent, its load or its last assignment changes:
        matching over 10,000 agents then allocates nothing per agent."""
        skipped = set(skip)
        for agent_id in self._online.get(channel, {}):
            if agent_id in skipped:
                continue
            candidate = self._cached_candidate(agent_id, channel)
            if candidate is not None:
                yield candidate

    def _cached_candidate(self, agent_id: str, channel: str) -> Candidate | None:
        cache = self._candidates.setdefault(channel, {})
        candidate = cache.get(agent_id)
        if candidate is None:
            candidate = self.candidate(agent_id, channel)
            if candidate is not None:
                cache[agent_id] = candidate
        return candidate

    def choose(
        self,
        conversation: RouteState,
        policy: RoutingPolicy,
        now: datetime,
        skip: Iterable[str] = (),
    ) -> Choice | None:
        """``choose_agent`` over this replica's candidates, computed with the index."""
        return self.index.choose(conversation, policy, now, self._cached_candidate, skip)

    def _changed(self, agent_id: str) -> None:
        for cache in self._candidates.values():
            cache.pop(agent_id, None)

    # ---------------------------------------------------------------- slots
    def take(self, agent_id: str, channel: str, weight: int) -> list[str] | None:
        """Pick free slot ids (channel slot, then total-capacity units) and mark them held
        at once, so concurrent decisions of this replica never pick the same ones."""
        agent = self.agents.get(agent_id)
        if agent is None:
            return None
        held = self._held.setdefault(agent_id, {})
        channel_held = held.setdefault(channel, set())
        free = [k for k in range(agent.capacity.get(Channel(channel), 0)) if k not in channel_held]
        if not free:
            return None
        slots = [slot_id(agent_id, channel, free[0])]
        if agent.total_capacity is not None:
            total_held = held.setdefault(TOTAL, set())
            units = [k for k in range(agent.total_capacity) if k not in total_held][:weight]
            if len(units) < weight:
                return None
            slots += [total_slot_id(agent_id, k) for k in units]
        self.mark_held(slots)
        return slots

    def mark_held(self, slots: Iterable[str]) -> None:
        for slot in slots:
            agent, channel, index = parse_slot(slot)
            held = self._held.setdefault(agent, {}).setdefault(channel, set())
            held.add(index)
            self.index.set_load(agent, channel, len(held))
            self._changed(agent)

    def mark_free(self, slots: Iterable[str]) -> None:
        for slot in slots:
            agent, channel, index = parse_slot(slot)
            held = self._held.get(agent, {}).get(channel)
            if held is not None:
                held.discard(index)
                self.index.set_load(agent, channel, len(held))
            self._changed(agent)

    def replace_held(self, slots: Iterable[Slot], agent_ids: Iterable[str] | None = None) -> None:
        """Replace the load view by the database's held slots (start-up and refresh), or
        only the load of ``agent_ids`` (whose held slots ``slots`` then are)."""
        held: dict[str, dict[str, set[int]]] = {}
        for slot in slots:
            agent, channel, index = parse_slot(slot.slot_id)
            held.setdefault(agent, {}).setdefault(channel, set()).add(index)
            self.assigned(agent, slot.at)
        if agent_ids is None:
            previous, self._held = self._held, held
        else:
            replaced = set(agent_ids)
            previous = {a: self._held.pop(a) for a in replaced if a in self._held}
            self._held.update({a: held.get(a, {}) for a in replaced})
        for agent_id in previous.keys() | held.keys():
            self._changed(agent_id)
            channels = previous.get(agent_id, {}).keys() | held.get(agent_id, {}).keys()
            for channel in channels:
                self.index.set_load(agent_id, channel, len(held.get(agent_id, {}).get(channel, ())))

    def assigned(self, agent_id: str, at: datetime) -> None:
        last = self._last_assigned.get(agent_id)
        if last is None or at > last:
            self._last_assigned[agent_id] = at
            self.index.set_last(agent_id, at)
            self._changed(agent_id)

    def holds_more(self, agent_id: str, held: Mapping[tuple[str, str], int]) -> bool:
        """Whether this view counts more slots of the agent than ``held`` (the
        database's counts per agent and channel): something was freed behind it."""
        mine = self._held.get(agent_id, {})
        return any(len(indexes) > held.get((agent_id, ch), 0) for ch, indexes in mine.items())

    def load(self, agent_id: str) -> dict[str, int]:
        return {
            ch: len(indexes)
            for ch, indexes in self._held.get(agent_id, {}).items()
            if ch != TOTAL and indexes
        }

    def online_agents(self) -> list[Agent]:
        """The online agents with capacity on some channel."""
        ids = dict.fromkeys(a for members in self._online.values() for a in members)
        return [self.agents[a] for a in ids]

    def totals(self, load: Mapping[tuple[str, str], int]) -> dict[str, tuple[int, int, int]]:
        """Per channel: (load, capacity, agents) summed over online agents, the load
        from ``load`` (slots held per agent and channel, as the database has them)."""
        out: dict[str, tuple[int, int, int]] = {}
        for channel, members in self._online.items():
            used = capacity = 0
            for agent_id in members:
                capacity += self.agents[agent_id].capacity.get(Channel(channel), 0)
                used += load.get((agent_id, str(channel)), 0)
            out[str(channel)] = (used, capacity, len(members))
        return out


class QueueView:
    """Waiting and offered conversations, newest decision per conversation wins."""

    def __init__(self, remember: int = 100_000) -> None:
        self.waiting: dict[str, RouteState] = {}
        self.offers: dict[str, RouteState] = {}
        self._seqs: OrderedDict[str, int] = OrderedDict()
        self._remember = remember
        self._sorted: dict[str, list[RouteState]] | None = None
        #: Conversations this replica is trying to assign right now.
        self.claiming: set[str] = set()

    def apply(self, state: RouteState) -> bool:
        """Record a decision; False when this view already knew it or a newer one."""
        cid = state.conversation_id
        if self._seqs.get(cid, 0) >= state.seq:
            return False
        self._seqs[cid] = state.seq
        self._seqs.move_to_end(cid)
        while len(self._seqs) > self._remember:
            old, _ = self._seqs.popitem(last=False)
            self.waiting.pop(old, None)
            self.offers.pop(old, None)
        self._place(state)
        return True

    def forget(self, conversation_id: str) -> None:
        self.waiting.pop(conversation_id, None)
        self.offers.pop(conversation_id, None)
        self._sorted = None

    def _place(self, state: RouteState) -> None:
        cid = state.conversation_id
        self.waiting.pop(cid, None)
        self.offers.pop(cid, None)
        if state.status == RouteStatus.WAITING:
            self.waiting[cid] = state
        elif state.status == RouteStatus.OFFERED:
            self.offers[cid] = state
        self._sorted = None

    def replace_from(self, states: Iterable[RouteState], since: datetime) -> None:
        """Merge a database snapshot taken after ``since``: newer seqs win; entries the
        snapshot lacks are dropped if this view learnt them before ``since``."""
        seen: set[str] = set()
        for state in states:
            seen.add(state.conversation_id)
            if self._seqs.get(state.conversation_id, 0) <= state.seq:
                self._seqs[state.conversation_id] = state.seq
                self._place(state)
        for table in (self.waiting, self.offers):
            for cid, state in list(table.items()):
                if cid not in seen and state.decided_at < since:
                    self.forget(cid)

    def sorted_waiting(self, channel: str | None = None) -> list[RouteState]:
        """Waiting conversations in queue order (priority, then waiting time)."""
        if self._sorted is None:
            everything = sorted(self.waiting.values(), key=queue_key)
            by_channel: dict[str, list[RouteState]] = {"": everything}
            for state in everything:
                by_channel.setdefault(str(state.channel), []).append(state)
            self._sorted = by_channel
        return self._sorted.get(channel or "", [])
