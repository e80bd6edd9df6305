"""The executor: applies a batch of ``Change``s (one or many conversations) in a fixed
number of bulk round trips, with the exclusive inserts of the capacity protocol
(services/router/README.md). The only code that reserves, claims, publishes and writes
heads; every handler of the engine and every batch go through ``execute``.

1. choose an agent for each routing change in this replica's view and take its slots
   there (so one batch never picks a slot twice); insert every reserved slot (one
   unordered insert) — a slot someone holds loses that reservation;
2. re-read every agent that got a slot (and the slots between its capacity and
   ceiling) and give back the slots that break the capacity in force;
3. a reservation lost in 1 or 2 chooses again with the view so corrected (another round,
   rare; at most ``MAX_RESERVATIONS``); a routing change nobody has room for is decided
   waiting (or, for a retry of a waiting conversation, not at all);
4. claim every step (one unordered insert of ``<conversation_id>:<seq>`` ids); a lost
   claim gives its slots back and is reported ``LOST``: the caller re-reads and decides
   again;
5. publish every event (Kafka's acknowledgements awaited once), write the heads, re-read
   the decision past each (a newer one: write that instead, ``settle``);
6. release the slots the claimed steps free (one bulk delete), and for the conversations
   now waiting re-read the load of the agents that could take them (``recheck``).

A decision's event is published *before* its head is written. Whoever reads a
conversation and finds decisions past its head (``current``) publishes them again (same
``ce_id`` and ``seq``): a replica that crashed between claiming and publishing loses
nothing, and a reader racing a live decision causes at worst a duplicate consumers drop
by ``seq``. A reader in the replica making the decision (a timer, a drain, the repair)
waits for it instead (``deciding``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from switchboard_common.contract import ASSIGNMENTS
from switchboard_common.contract.events import AssignmentDecision
from switchboard_common.kafka import Outgoing
from switchboard_common.metrics import add_tally
from switchboard_router.assignment.clock import Clock
from switchboard_router.assignment.decide import Change, Routing, assigned_state, waiting_state
from switchboard_router.assignment.figures import AgentFigures
from switchboard_router.assignment.matcher import is_eligible, requirements
from switchboard_router.assignment.model import (
    EVENT_MODELS,
    HOLDING,
    RouteState,
    RouteStatus,
    Slot,
    above_capacity,
    decision_id,
    parse_slot,
)
from switchboard_router.assignment.policy import RoutingPolicy
from switchboard_router.assignment.store import AssignmentStore, Decision
from switchboard_router.assignment.views import AgentDirectory, QueueView
from switchboard_router.metrics import AssignmentMetrics

Publish = Callable[[Sequence[Outgoing]], Awaitable[Any]]

#: Reservations tried for one decision before queueing (each failure fixes the view).
MAX_RESERVATIONS = 12


class Missed(enum.Enum):
    """Why a change was not decided."""

    LOST = "lost"  # another decision took the conversation's step: re-read, decide again
    NO_ROOM = "no_room"  # a retry of a waiting conversation found no agent: nothing changed


Outcome = RouteState | Missed


def event_for(decision: Decision) -> AssignmentDecision:
    """The contract event of a decision (``ce_id`` = ``<conversation_id>:<seq>``)."""
    state = decision.state
    model = EVENT_MODELS[decision.kind or "queued"]
    return model(
        conversation_id=state.conversation_id,
        customer_id=state.customer_id,
        channel=state.channel,
        priority=state.priority,
        agent_id=state.agent_id if state.status in HOLDING else None,
        queue=state.queue,
        required_skills=sorted(state.skills),
        seq=state.seq,
        decided_at=state.decided_at,
        reason=decision.reason,
        tenant=state.tenant,
        offer_expires_at=state.offer_expires_at,
        waiting_since=state.waiting_since,
    )


@dataclass
class _Routed:
    """A routing change on its way through the rounds of one ``execute``."""

    change: Change
    routing: Routing
    tried: set[str] = field(default_factory=set)
    agent_id: str | None = None
    slots: list[str] = field(default_factory=list)
    reason: dict[str, Any] = field(default_factory=dict)
    done: bool = False  # an agent reserved, or nobody has room


class Executor:
    """Applies changes for one replica; safe beside any number of other replicas."""

    def __init__(
        self,
        *,
        store: AssignmentStore,
        policy: RoutingPolicy,
        clock: Clock,
        publish: Publish,
        directory: AgentDirectory,
        queue: QueueView,
        replica: str,
        metrics: AssignmentMetrics | None = None,
        figures: AgentFigures | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.publish = publish
        self.directory = directory
        self.queue = queue
        self.replica = replica
        self.metrics = metrics
        self.figures = figures
        self._tokens = itertools.count()
        #: Conversations whose decision this replica is claiming, publishing and settling.
        self._deciding: Counter[str] = Counter()
        self._decided = asyncio.Event()  # replaced (after being set) whenever one ends
        #: Called with the conversations a batch left waiting (each with whether an
        #: agent was looked for) and the agents whose reservations lost claims gave back:
        #: the engine's re-check.
        self.on_waiting: (
            Callable[[Sequence[tuple[RouteState, bool]], Sequence[str]], Awaitable[None]] | None
        ) = None

    # ================================================================ reading
    @contextlib.asynccontextmanager
    async def deciding(self, conversation_ids: Iterable[str]) -> AsyncIterator[None]:
        """Around claiming, publishing and settling decisions of these conversations:
        ``current`` in this replica waits for them rather than publish them again as a
        crashed maker's. Nothing awaited inside may call ``current`` for them."""
        ids = Counter(conversation_ids)
        self._deciding += ids
        try:
            yield
        finally:
            self._deciding -= ids  # drops the conversations no longer being decided
            ended, self._decided = self._decided, asyncio.Event()
            ended.set()

    async def current(self, conversation_id: str) -> RouteState | None:
        """The latest state: the head, then any newer decisions (the head may lag)."""
        while self._deciding[conversation_id]:
            await self._decided.wait()
        state = await self.store.head(conversation_id)
        seq = 0 if state is None else state.seq
        ahead: list[Decision] = []
        while True:
            decision = await self.store.decision(conversation_id, seq + 1)
            if decision is None:
                break
            ahead.append(decision)
            seq += 1
        if ahead:
            # Perhaps never published: its maker may have crashed.
            await self.publish_decisions(ahead, count=False)
            state = await self.settle(ahead[-1].state)
        return state

    async def settle(self, state: RouteState) -> RouteState:
        """Write the head, then make sure no newer decision exists; if one does, write
        that instead. The last writer always checks after writing, so the head converges
        to the newest decision even when writes of two replicas interleave."""
        while True:
            await self.store.put_head(state)
            newer = await self.store.decision(state.conversation_id, state.seq + 1)
            if newer is None:
                return state
            state = newer.state

    # ================================================================ applying
    async def execute(self, changes: Sequence[Change]) -> list[Outcome]:
        """Apply changes of distinct conversations; per change, the state decided or why
        not. Raises the store's and Kafka's errors; what was done before the error is
        finished by the next reader, as for a crash."""
        started = time.perf_counter()
        now = self.clock.now()
        routed = {i: _Routed(c, c.routing) for i, c in enumerate(changes) if c.routing is not None}
        await self._reserve(list(routed.values()), now)
        outcomes: list[Outcome] = [Missed.NO_ROOM] * len(changes)
        decisions: dict[int, Decision] = {}
        for i, change in enumerate(changes):
            decision = self._decision(change, routed.get(i), now)
            if decision is not None:
                decisions[i] = decision
        if not decisions:
            return outcomes
        winners: list[tuple[Change, Decision]] = []
        lost: list[_Routed] = []  # reservations of lost claims, to give back
        async with self.deciding(d.state.conversation_id for d in decisions.values()):
            won = await self.store.claim_many(list(decisions.values()))
            for (i, decision), ok in zip(decisions.items(), won, strict=True):
                if ok:
                    winners.append((changes[i], decision))
                    outcomes[i] = decision.state
                    continue
                outcomes[i] = Missed.LOST
                self.count_conflict("decision")
                if i in routed and routed[i].slots:
                    lost.append(routed[i])
            given_back = [str(entry.agent_id) for entry in lost]
            await self._give_back(lost)
            if winners:
                await self._publish_and_settle(winners)
        if winners or given_back:
            await self._after(winners, started, given_back)
        return outcomes

    def _decision(self, change: Change, entry: _Routed | None, now: datetime) -> Decision | None:
        """The decision to claim for a change (None: nothing to decide)."""
        if entry is None:
            return Decision(change.after, change.kind, dict(change.reason), self.new_token())
        if entry.agent_id is not None:
            state = assigned_state(change.after, entry.agent_id, entry.slots, self.policy, now)
            reason = {**change.reason, **entry.reason}
            return Decision(state, "assigned", reason, self.new_token())
        if entry.routing.queued_kind is None:
            return None
        state, why = waiting_state(change.after, self.policy, now)
        reason = {**change.reason, "why": why}
        return Decision(state, entry.routing.queued_kind, reason, self.new_token())

    async def _publish_and_settle(self, winners: Sequence[tuple[Change, Decision]]) -> None:
        """Publish the claimed decisions, then write their heads and converge them."""
        await self.publish_decisions([d for _, d in winners])
        heads = [d.state for c, d in winners if c.write_head]
        if heads:
            await self.store.put_heads(heads)
            newer = await self.store.decisions_at({s.conversation_id: s.seq + 1 for s in heads})
            for decision in newer.values():  # another replica moved it already: converge
                await self.settle(decision.state)

    async def _after(
        self,
        winners: Sequence[tuple[Change, Decision]],
        started: float,
        given_back: Sequence[str],
    ) -> None:
        """Release what the steps free, update the views, re-check."""
        releases = [
            (c.release, d.state.conversation_id, d.state.seq - 1) for c, d in winners if c.release
        ]
        if releases:
            await self.store.release_many(releases)
        for change, decision in winners:
            state = decision.state
            if change.release:
                self.directory.mark_free(change.release)
            self.queue.apply(state)
            if state.status in HOLDING and state.agent_id:
                self.directory.assigned(state.agent_id, state.decided_at)
            if change.routing is not None:
                self.observe(decision.kind or "assigned", started)
            if change.offer is not None and self.metrics is not None:
                self.metrics.offers.labels(change.offer).inc()
            if self.figures is not None:
                self.figures.record(change)
        waiting = [
            (d.state, c.routing is not None)
            for c, d in winners
            if d.state.status == RouteStatus.WAITING
        ]
        if (waiting or given_back) and self.on_waiting is not None:
            await self.on_waiting(waiting, given_back)

    # ================================================================ reserving
    async def _reserve(self, entries: list[_Routed], now: datetime) -> None:
        """Reserve an agent's slots for every routing change that has one with room
        (rounds while reservations are lost to a stale view)."""
        for _ in range(MAX_RESERVATIONS):
            picking = [e for e in entries if not e.done]
            for entry in picking:
                self._pick(entry, now)
            reserving = [e for e in picking if e.slots]
            if not reserving:
                return
            conflicts = await self.store.reserve_many(
                [
                    [
                        Slot(
                            s,
                            str(e.agent_id),
                            parse_slot(s)[1],
                            e.change.conversation_id,
                            e.change.after.seq,
                            now,
                        )
                        for s in e.slots
                    ]
                    for e in reserving
                ]
            )
            held = [e for e, conflict in zip(reserving, conflicts, strict=True) if conflict is None]
            for entry, conflict in zip(reserving, conflicts, strict=True):
                if conflict is not None:  # the view was stale: it now knows, choose again
                    self.directory.mark_free([s for s in entry.slots if s != conflict])
                    self.count_conflict("slot")
                    entry.agent_id, entry.slots = None, []
            refused = await self._refused(held)
            await self._give_back(refused)
            for entry in refused:
                self.count_conflict("capacity")
                entry.tried.add(str(entry.agent_id))
                entry.agent_id, entry.slots = None, []
            for entry in held:
                entry.done = entry.done or bool(entry.slots)

    def _pick(self, entry: _Routed, now: datetime) -> None:
        """Choose the agent and take its slots in this replica's view (the view marks
        them held at once, so the next change sees them taken), or mark it done."""
        state = entry.change.after
        only = entry.routing.only
        weight = self.policy.capacity.weight(state.channel)
        if only is not None:
            candidate = self.directory.candidate(only, state.channel)
            needs = requirements(state, self.policy, now)
            slots = None
            if (
                only not in entry.tried
                and candidate is not None
                and is_eligible(candidate, state, needs, weight)
            ):
                slots = self.directory.take(only, state.channel, weight)
            if slots is None:
                entry.done = True
            else:
                entry.agent_id, entry.slots = only, slots
            return
        for _ in range(MAX_RESERVATIONS):
            choice = self.directory.choose(state, self.policy, now, skip=entry.tried)
            if choice is None:
                break
            slots = self.directory.take(choice.agent_id, state.channel, weight)
            if slots is None:
                entry.tried.add(choice.agent_id)
                continue
            entry.agent_id, entry.slots, entry.reason = choice.agent_id, slots, choice.reason
            return
        entry.done = True

    async def _refused(self, entries: Sequence[_Routed]) -> list[_Routed]:
        """Reservations that break their agent's *stored* capacity (re-read after
        inserting the slots): a replica whose view still has a capacity that was lowered
        must not keep a slot at or above the new one, and while slots above it are held
        (work taken before the decrease) no lower slot is kept either. Conservative
        within a batch: a slot above the capacity that this batch gives back still
        counts as held."""
        if not entries:
            return []
        agents = await self.store.agents_by_id(sorted({str(e.agent_id) for e in entries}))
        for stored in agents.values():
            self.directory.apply(stored)
        refused: list[_Routed] = []
        above: dict[int, list[str]] = {}
        for number, entry in enumerate(entries):
            agent = agents.get(str(entry.agent_id))
            if agent is None:  # not persisted yet (its first event is still in flight)
                continue
            high = above_capacity(agent, entry.change.after.channel, entry.slots[0])
            if high is None:
                refused.append(entry)
            elif high:
                above[number] = high
        if above:
            held = await self.store.held_among(sorted({s for h in above.values() for s in h}))
            if held:
                self.directory.mark_held(held)
                refused += [entries[n] for n, h in above.items() if held.intersection(h)]
        return refused

    async def _give_back(self, entries: Sequence[_Routed]) -> None:
        """Release these changes' own reservations in one bulk delete (never a slot
        someone reserved since)."""
        if not entries:
            return
        await self.store.release_many(
            [(e.slots, e.change.conversation_id, e.change.after.seq) for e in entries]
        )
        for entry in entries:
            self.directory.mark_free(entry.slots)
            entry.slots = []

    # ================================================================ publishing
    def new_token(self) -> str:
        """Names this replica and attempt in a decision (for operators)."""
        return f"{self.replica}-{next(self._tokens)}"

    async def publish_decisions(self, decisions: Sequence[Decision], *, count: bool = True) -> None:
        """Publish the events of decisions that have one, all acknowledged on return."""
        with_event = [d for d in decisions if d.kind is not None]
        if not with_event:
            return
        events = [event_for(d) for d in with_event]
        await self.publish(
            [
                Outgoing(
                    ASSIGNMENTS,
                    key=event.conversation_id,
                    event=event,
                    event_id=decision_id(event.conversation_id, event.seq),
                    time=event.decided_at,
                )
                for event in events
            ]
        )
        if count and self.metrics is not None:
            add_tally(
                self.metrics.assignments,
                Counter(
                    (str(decision.kind), str(event.channel), str(event.priority))
                    for decision, event in zip(with_event, events, strict=True)
                ),
            )

    def count_conflict(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.conflicts.labels(kind).inc()

    def observe(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.decision_seconds.labels(outcome).observe(time.perf_counter() - started)
