"""The assignment engine: what happens to conversations and agents, turned into decisions.

Every handler reads the conversation's current state (``Executor.current``), asks the
pure core (``decide``) for the next step, and hands it to the executor, which claims
it as decision ``<conversation_id>:<seq>`` with a unique ``_id``. Losing that race means
another replica moved the conversation first: the handler re-reads and decides again.
So any replica may decide about any conversation — consumers, timers, drains — and the
database keeps them exclusive (protocol: services/router/README.md).

No wake-up is lost between replicas, and no replica reads another's events: the replica
that frees capacity releases the slot, then reads the queue from the database
(``drain``); the replica that queues a conversation writes its head, then re-reads the
load of the agents that could take it (``recheck_queued``). Whichever of the two reads
comes second sees the other's write.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta

from switchboard_common.contract import (
    AgentStatus,
    ConversationActivity,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    ReplySent,
    SlaAtRisk,
    SlaBreached,
)
from switchboard_common.logging import get_logger
from switchboard_router.assignment import decide
from switchboard_router.assignment.classify import (
    LanguageDetector,
    activity_reason,
    classify,
)
from switchboard_router.assignment.clock import Clock
from switchboard_router.assignment.decide import Change
from switchboard_router.assignment.executor import (
    MAX_RESERVATIONS,
    Executor,
    Missed,
    Outcome,
    Publish,
)
from switchboard_router.assignment.figures import AgentFigures
from switchboard_router.assignment.matcher import change_moments, overflow_due_at, pick_conversation
from switchboard_router.assignment.model import HOLDING, RouteState, RouteStatus, Slot
from switchboard_router.assignment.policy import RoutingPolicy
from switchboard_router.assignment.store import AssignmentStore, Decision
from switchboard_router.assignment.views import AgentDirectory, QueueView
from switchboard_router.metrics import AssignmentMetrics

log = get_logger(__name__)

#: How often one operation re-reads and retries after losing a race.
MAX_ATTEMPTS = 8
#: Waiting conversations read from the database when draining an agent (queue order).
DRAIN_READ = 200

#: Per conversation of a batch: ``routed`` (a routing step), ``decided`` (another step),
#: ``unchanged``, ``not_routed``, or None for one left to the one-at-a-time path (its
#: head lags its decisions, or it lost a race).
Outcomes = dict[str, str | None]
_DECIDED = {False: "routed", True: "decided"}

#: Conversation events decided in batches (offer answers go one at a time, and so does a
#: reply that accepts an offer: it takes two steps).
Batched = (
    ConversationActivity
    | ConversationResolved
    | ConversationReopened
    | ConversationTransferred
    | ReplySent
    | SlaAtRisk
    | SlaBreached
)
#: What ``_plan`` answers for an event the batch leaves to the one-at-a-time path.
ONE_AT_A_TIME = "one_at_a_time"


class ContentionError(TimeoutError):
    """Other decisions kept taking a conversation's next step: transient (a
    ``TimeoutError``, so the batch consumer retries the batch with backoff instead of
    dead-lettering the record)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id}: too many lost races in a row")


class AssignmentEngine:
    """Assignment's decisions. Every public method is idempotent and safe to run on any
    number of replicas at once; they raise only the store's and Kafka's errors."""

    def __init__(
        self,
        *,
        store: AssignmentStore,
        policy: RoutingPolicy,
        clock: Clock,
        publish: Publish,
        detector: LanguageDetector,
        replica: str | None = None,
        metrics: AssignmentMetrics | None = None,
        figures: AgentFigures | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.detector = detector
        self.directory = AgentDirectory()
        self.queue = QueueView()
        self.executor = Executor(
            store=store,
            policy=policy,
            clock=clock,
            publish=publish,
            directory=self.directory,
            queue=self.queue,
            replica=replica or uuid.uuid4().hex[:12],
            metrics=metrics,
            figures=figures,
        )
        self.executor.on_waiting = self.recheck_queued
        self._last_tick = clock.now()
        self._offline_handled: set[tuple[str, datetime | None]] = set()
        #: When this replica's repair first listed each reservation, by its own clock.
        self._listed_since: dict[tuple[str, str, int], datetime] = {}

    @property
    def replica(self) -> str:
        return self.executor.replica

    @property
    def publish(self) -> Publish:
        return self.executor.publish

    @publish.setter
    def publish(self, publish: Publish) -> None:
        self.executor.publish = publish

    @property
    def metrics(self) -> AssignmentMetrics | None:
        return self.executor.metrics

    @metrics.setter
    def metrics(self, metrics: AssignmentMetrics | None) -> None:
        self.executor.metrics = metrics

    async def current(self, conversation_id: str) -> RouteState | None:
        return await self.executor.current(conversation_id)

    async def _decide(self, change: Change) -> Outcome:
        (outcome,) = await self.executor.execute([change])
        return outcome

    # ================================================================ conversation events
    async def on_events(
        self,
        items: Sequence[tuple[Batched, str]],
        earlier: Mapping[str, Sequence[str]] | None = None,
    ) -> Outcomes:
        """Conversation events of a consumed batch, one per conversation (with their
        causes), decided in one ``execute`` after two bulk reads (heads, the decisions
        just past them) and, for customers who come back, a third (the heads of the
        conversations ``earlier`` names, for sticky routing). A conversation named twice is
        decided once here; its later events are left (None) to the one-at-a-time path,
        like one whose head lags its decisions or that lost a race."""
        by_id: dict[str, tuple[Batched, str]] = {}
        for event, cause in items:
            by_id.setdefault(event.conversation_id, (event, cause))
        heads = await self.store.heads_of(list(by_id))
        ahead = await self.store.decisions_at(
            {c: (heads[c].seq if c in heads else 0) + 1 for c in by_id}
        )
        outcomes: Outcomes = dict.fromkeys(ahead)  # the one-at-a-time path settles them
        ready = [
            (event, cause, heads.get(cid))
            for cid, (event, cause) in by_id.items()
            if cid not in ahead
        ]
        served = await self._last_agents(ready, earlier or {})
        now = self.clock.now()
        changes: list[Change] = []
        previous: dict[str, RouteState | None] = {}
        for event, cause, current in ready:
            planned = self._plan(event, cause, current, served, now)
            if planned == ONE_AT_A_TIME:
                outcomes[event.conversation_id] = None
            elif isinstance(planned, str):
                outcomes[event.conversation_id] = planned
            else:
                changes.append(planned)
                previous[planned.conversation_id] = current
        freed: list[str] = []
        for change, outcome in zip(changes, await self.executor.execute(changes), strict=True):
            cid = change.conversation_id
            if outcome is Missed.LOST:
                outcomes[cid] = None
                continue
            outcomes[cid] = _DECIDED[change.routing is None]
            holder = previous[cid]
            if change.release and holder is not None and holder.agent_id:
                freed.append(holder.agent_id)
        for agent_id in dict.fromkeys(freed):  # each freed agent takes the next one at once
            await self.drain(agent_id)
        return outcomes

    async def on_event(
        self, event: Batched, cause: str, earlier: Mapping[str, Sequence[str]] | None = None
    ) -> str:
        """One conversation event, re-read and decided again after every lost race.
        Returns what happened (``routed``, ``decided``, ``unchanged``, ``not_routed``)."""
        async for current in self._attempts(event.conversation_id):
            served = await self._last_agents([(event, cause, current)], earlier or {})
            planned = self._plan(event, cause, current, served, self.clock.now())
            if planned == ONE_AT_A_TIME and isinstance(event, ReplySent):
                # Accepts the offer, then waits on the customer: two steps.
                await self.on_reply(
                    event.conversation_id, event.agent_id, event.awaiting_customer, cause
                )
                return "decided"
            if isinstance(planned, str):
                return planned
            if await self._apply(planned, current):
                return _DECIDED[planned.routing is None]
        raise ContentionError(event.conversation_id)

    def _plan(
        self,
        event: Batched,
        cause: str,
        current: RouteState | None,
        served: Mapping[str, tuple[str, datetime]],
        now: datetime,
    ) -> Change | str:
        """The step an event makes (the pure core's answer), or why none."""
        if isinstance(event, ConversationActivity):
            if not decide.wants_routing(current, cause):
                return "unchanged"
            classified = classify(event, self.policy, self.detector)
            if classified is None:
                return "not_routed"
            sticky = (
                decide.known_agent(current)
                or decide.remembered(served.get(event.conversation_id), self.policy, now)
                if self.policy.sticky.enabled
                else None
            )
            return decide.activity_change(
                event,
                classified,
                current,
                sticky=sticky,
                sticky_agent=self.directory.get(sticky) if sticky else None,
                reason=activity_reason(event, classified),
                policy=self.policy,
                now=now,
            )
        change: Change | None
        if isinstance(event, ReplySent):
            if decide.answers_offer(current, event.agent_id, cause):
                return ONE_AT_A_TIME  # accepts the offer first: two steps
            if current is None or current.applied(cause) or not event.awaiting_customer:
                return "unchanged"
            change = decide.awaiting_change(current, event.agent_id, cause, self.policy, now)
        elif isinstance(event, ConversationResolved):
            change = decide.resolved_change(current, cause, now)
        elif isinstance(event, ConversationTransferred):
            change = decide.transferred_change(current, event, cause, now)
        elif isinstance(event, ConversationReopened):
            change = None
            if current is not None and decide.reopens(current, cause):
                sticky = current.agent_id if self.policy.sticky.enabled else None
                change = decide.reopened_change(
                    current,
                    cause,
                    sticky=sticky,
                    sticky_agent=self.directory.get(sticky) if sticky else None,
                    policy=self.policy,
                    now=now,
                )
        else:
            kind = "at_risk" if isinstance(event, SlaAtRisk) else "breached"
            change = decide.escalated_change(
                current, event, kind=kind, cause=cause, policy=self.policy, now=now
            )
        return "unchanged" if change is None else change

    async def _last_agents(
        self,
        items: Sequence[tuple[Batched, str, RouteState | None]],
        earlier: Mapping[str, Sequence[str]],
    ) -> dict[str, tuple[str, datetime]]:
        """For each conversation a customer message routes with no agent of its own, the
        agent who last served one of the customer's ``earlier`` conversations, and when
        (their heads, one read; none when sticky routing is off or the customer has no
        earlier conversation: a new customer costs no read). The heads are where that
        is kept already; a head lagging its decisions still names who served."""
        if not self.policy.sticky.enabled or not earlier:
            return {}
        wanted = {
            event.conversation_id: earlier[event.conversation_id]
            for event, cause, current in items
            if isinstance(event, ConversationActivity)
            and event.conversation_id in earlier
            and decide.wants_routing(current, cause)
            and decide.known_agent(current) is None
        }
        ids = sorted({c for conversations in wanted.values() for c in conversations})
        if not ids:
            return {}
        heads = await self.store.heads_of(ids)
        found = {
            cid: decide.last_served([heads[c] for c in conversations if c in heads])
            for cid, conversations in wanted.items()
        }
        return {cid: served for cid, served in found.items() if served is not None}

    async def on_activity(self, activity: ConversationActivity, earlier: Sequence[str] = ()) -> str:
        """A customer message: route the conversation unless it is already routed
        (``routed``, ``not_routed`` for auto-submitted messages, ``unchanged``)."""
        return await self.on_event(
            activity, f"message:{activity.message_id}", {activity.conversation_id: earlier}
        )

    async def on_activities(
        self,
        activities: Sequence[ConversationActivity],
        earlier: Mapping[str, Sequence[str]] | None = None,
    ) -> Outcomes:
        """``on_events`` for customer messages."""
        return await self.on_events([(a, f"message:{a.message_id}") for a in activities], earlier)

    async def on_resolved(self, conversation_id: str, cause: str) -> None:
        """Resolved: free its capacity and let the agent take the next one at once."""
        resolved = ConversationResolved(conversation_id=conversation_id, at=self.clock.now())
        await self.on_event(resolved, cause)

    async def on_reopened(self, conversation_id: str, cause: str) -> None:
        """Reopened by an agent: route it again, first to the agent who had it."""
        reopened = ConversationReopened(conversation_id=conversation_id, at=self.clock.now())
        await self.on_event(reopened, cause)

    async def on_transferred(self, event: ConversationTransferred, cause: str) -> str | None:
        """Transfer to a queue or a named agent; returns a rejection reason if invalid."""
        if not self.transfer_is_valid(event):
            return f"transfer to unknown queue {event.to_queue!r}"
        await self.on_event(event, cause)
        return None

    def transfer_is_valid(self, event: ConversationTransferred) -> bool:
        return event.to_queue is None or self.policy.queue(event.to_queue) is not None

    async def on_sla(self, event: SlaAtRisk | SlaBreached, cause: str) -> None:
        """``at_risk``/``breached`` for a waiting conversation: raise its priority or move
        it to the overflow queue (policy), once per metric and kind."""
        await self.on_event(event, cause)

    # ================================================================ agents' work
    async def on_reply(
        self, conversation_id: str, agent_id: str, awaiting_customer: bool, cause: str
    ) -> None:
        """A reply by the offered agent accepts the offer; a reply that waits on the
        customer frees the slot when the policy says so."""
        current = await self.current(conversation_id)
        if current is None or current.applied(cause) or current.agent_id != agent_id:
            return
        if current.status == RouteStatus.OFFERED:
            await self.on_offer_answer(agent_id, conversation_id, accepted=True, cause=cause)
        if not awaiting_customer:
            return
        async for current in self._attempts(conversation_id):
            change = decide.awaiting_change(current, agent_id, cause, self.policy, self.clock.now())
            if change is None or await self._apply(change, current):
                return

    async def on_offer_answer(
        self, agent_id: str, conversation_id: str, *, accepted: bool, cause: str
    ) -> None:
        """``offer.accepted``: the agent has it. ``offer.rejected``: back to the queue with
        its original waiting time, never offered to that agent again."""
        async for current in self._attempts(conversation_id):
            change = decide.offer_answer_change(
                current, agent_id, cause, self.clock.now(), accepted=accepted
            )
            if change is None or await self._apply(change, current):
                return

    async def _attempts(self, conversation_id: str) -> AsyncIterator[RouteState | None]:
        """The conversation's current state, read again after each lost race (at most
        ``MAX_ATTEMPTS`` times)."""
        for _ in range(MAX_ATTEMPTS):
            yield await self.current(conversation_id)

    async def _apply(self, change: Change, previous: RouteState | None) -> bool:
        """Execute one change; False when another decision took the step first. The agent
        whose slots it frees takes the next waiting conversation at once."""
        if await self._decide(change) is Missed.LOST:
            return False
        if change.release and previous is not None and previous.agent_id:
            await self.drain(previous.agent_id)
        return True

    # ================================================================ agents
    async def on_presence(self, agent_id: str, status: AgentStatus) -> None:
        """Presence changed (already in the directory): an agent who left loses the
        offers they had not accepted (requeued at once, original waiting time); an agent
        who came online takes work from the queue at once."""
        if status == AgentStatus.ONLINE:
            await self.drain(agent_id)
        else:
            await self._requeue_offers_of(agent_id)

    async def _requeue_offers_of(self, agent_id: str, *, assigned_too: bool = False) -> None:
        wanted = {RouteStatus.OFFERED} | ({RouteStatus.ASSIGNED} if assigned_too else set())
        for slot in await self.store.held_slots([agent_id]):
            async for current in self._attempts(slot.conversation_id):
                if current is None or current.agent_id != agent_id or current.status not in wanted:
                    break
                now = self.clock.now()
                change = decide.taken_back_change(
                    current, None, "agent_offline", now, exclude=False
                )
                if await self._apply(change, current):
                    break

    # ================================================================ draining
    async def drain(self, agent_id: str) -> int:
        """Give the agent waiting conversations (queue order) while it has room.
        Returns how many it got."""
        agent = self.directory.get(agent_id)
        if agent is None or agent.status != AgentStatus.ONLINE:
            return 0
        # Conversations other replicas queued are in the database, not in this view.
        channels = sorted(str(c) for c, n in agent.capacity.items() if n > 0)
        for state in await self.store.waiting(channels, DRAIN_READ):
            self.queue.apply(state)
        given = 0
        misses = 0
        for channel in sorted(agent.capacity):
            while misses < MAX_RESERVATIONS:
                candidate = self.directory.candidate(agent_id, channel)
                if candidate is None:
                    break
                claiming = self.queue.claiming
                waiting = (
                    s
                    for s in self.queue.sorted_waiting(channel)
                    if s.conversation_id not in claiming
                )
                pick = pick_conversation(candidate, waiting, self.policy, self.clock.now())
                if pick is None:
                    break
                if await self.assign_waiting(pick.conversation_id, only=agent_id):
                    given += 1
                else:
                    misses += 1
        return given

    async def assign_waiting(self, conversation_id: str, *, only: str | None = None) -> bool:
        """Try to give a waiting conversation to the best agent (or to ``only``).

        One attempt per conversation at a time in this replica: concurrent drains of
        several freed agents would otherwise all race for the head of the queue."""
        if conversation_id in self.queue.claiming:
            return False
        self.queue.claiming.add(conversation_id)
        try:
            for _ in range(MAX_ATTEMPTS):
                current = await self.current(conversation_id)
                if current is None or current.status != RouteStatus.WAITING:
                    self._refresh_view(conversation_id, current)
                    return False
                self.queue.apply(current)
                change = decide.rematch_change(current, self.clock.now(), only=only)
                outcome = await self._decide(change)
                if outcome is not Missed.LOST:
                    return outcome is not Missed.NO_ROOM
            return False
        finally:
            self.queue.claiming.discard(conversation_id)

    async def recheck_queued(
        self, queued: Sequence[tuple[RouteState, bool]], given_back: Sequence[str] = ()
    ) -> None:
        """After writing the heads of conversations now waiting (each with whether an
        agent was looked for): re-read the load of the agents who could take them but
        look full in this view, and drain those something was freed behind (another
        replica may have freed a slot and drained before these heads were written) —
        in queue order, so a conversation just queued does not pass older ones. A
        conversation requeued without looking for an agent (an offer taken back, an
        escalation) is tried now. Agents no load would make eligible (language, skills,
        tenant, offline) cost no read; under steady load (nothing freed) this is one
        aggregation of slot counts. Agents whose reservation a lost claim gave back are
        drained too: that slot is free and nobody else was told."""
        now = self.clock.now()
        states = [state for state, _ in queued]
        agents = sorted(self.directory.could_take(states, self.policy, now))
        freed: list[str] = []
        if agents:
            # Counts first (one short aggregation): only agents holding fewer slots than
            # this view says had something freed behind it, and only theirs are read in
            # full.
            held = await self.store.load_summary(agents)
            freed = [a for a in agents if self.directory.holds_more(a, held)]
            if freed:
                self.directory.replace_held(await self.store.held_slots(freed), freed)
        for agent_id in dict.fromkeys([*given_back, *freed]):  # each drained once
            await self.drain(agent_id)
        for state, looked in queued:
            if not looked and self.directory.choose(state, self.policy, now):
                await self.assign_waiting(state.conversation_id)

    def _refresh_view(self, conversation_id: str, current: RouteState | None) -> None:
        """The database says something else than this replica's view: believe it."""
        if current is not None:
            self.queue.apply(current)
        if current is None or current.status not in (RouteStatus.WAITING, RouteStatus.OFFERED):
            self.queue.forget(conversation_id)

    # ================================================================ timers
    async def tick(self) -> None:
        """Offer deadlines, relaxation steps, sticky windows, overflow, offline agents.
        Safe on every replica: each change is an exclusive claim."""
        now = self.clock.now()
        since, self._last_tick = self._last_tick, now
        for state in list(self.queue.offers.values()):
            if state.offer_expires_at is not None and state.offer_expires_at <= now:
                await self.expire_offer(state.conversation_id)
        for state in list(self.queue.sorted_waiting()):
            due = overflow_due_at(state, self.policy)
            if due is not None and due <= now and state.queue != self.policy.overflow.name:
                await self._overflow(state.conversation_id)
            elif any(since < m <= now for m in change_moments(state, self.policy)):
                await self.assign_waiting(state.conversation_id)
        await self._reassign_offline(now)

    async def expire_offer(self, conversation_id: str) -> None:
        async for current in self._attempts(conversation_id):
            change = None if current is None else decide.expired_change(current, self.clock.now())
            if change is None:
                self._refresh_view(conversation_id, current)
                return
            if await self._apply(change, current):
                return

    async def _overflow(self, conversation_id: str) -> None:
        async for current in self._attempts(conversation_id):
            if current is None:
                return
            change = decide.overflow_change(current, self.policy, self.clock.now())
            if change is None:
                self._refresh_view(conversation_id, current)
                return
            if await self._apply(change, current):
                return

    async def _reassign_offline(self, now: datetime) -> None:
        limit = self.policy.capacity.offline_reassign_after_seconds
        if limit is None:
            return
        for agent in list(self.directory.agents.values()):
            if agent.status != AgentStatus.OFFLINE or agent.status_since is None:
                continue
            key = (agent.agent_id, agent.status_since)
            if key in self._offline_handled or (now - agent.status_since).total_seconds() < limit:
                continue
            if not self.directory.load(agent.agent_id):
                continue
            self._offline_handled.add(key)
            await self._requeue_offers_of(agent.agent_id, assigned_too=True)

    # ================================================================ views and repair
    async def load(self) -> None:
        """Fill this replica's views from the database (start-up and refresh)."""
        since = self.clock.now()
        for agent in await self.store.agents():
            self.directory.apply(agent)
        self.directory.replace_held(await self.store.held_slots())
        self.queue.replace_from(
            await self.store.routes([RouteStatus.WAITING, RouteStatus.OFFERED]), since
        )

    async def rematch(self) -> None:
        """Safety net behind the event-driven path: retry waiting conversations for
        which this replica's view shows an eligible agent with room."""
        now = self.clock.now()
        for state in list(self.queue.sorted_waiting()):
            if self.directory.choose(state, self.policy, now):
                await self.assign_waiting(state.conversation_id)

    async def repair(self, older_than: timedelta) -> None:
        """Finish what crashed replicas left: slots no decision holds are released, and
        reading each holder's state publishes decisions a crash left unpublished.

        Age alone proves nothing (a replica may pause for any time between reserving
        and claiming, and clocks differ): ``older_than`` only spares decisions in
        flight the cost of a lost race. A reservation is old once this replica has listed
        it for ``older_than`` by its own clock, or once its stamp (the reserver's clock) is
        that old: a reserver whose clock runs ahead cannot keep a crashed slot from repair."""
        now = self.clock.now()
        cutoff = now - older_than
        listed: dict[tuple[str, str, int], datetime] = {}
        for slot in await self.store.held_slots():
            key = (slot.slot_id, slot.conversation_id, slot.seq)
            listed[key] = self._listed_since.get(key, now)
            old = slot.at < cutoff or listed[key] <= cutoff
            if old and await self._abandoned(slot):
                await self.store.release([slot.slot_id], slot.conversation_id, slot.seq)
                self.directory.mark_free([slot.slot_id])
        self._listed_since = listed

    async def _abandoned(self, slot: Slot) -> bool:
        """Whether no decision holds ``slot`` now or ever will.

        The slot was reserved for step ``slot.seq`` of its conversation. Once that step
        is taken, the latest state says whether the slot is still held. While it is
        open, the reserver may still claim it: the repair takes that step itself,
        changing nothing (no event), so the reserver's claim fails and it gives the
        reservation back and decides again. Releasing without that fence could give
        the slot to another conversation just before the reserver's claim succeeds."""
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(slot.conversation_id)
            if current is not None and current.seq >= slot.seq:
                return slot.slot_id not in current.slots or current.status not in HOLDING
            fence = Decision(
                decide.fence_state(
                    current,
                    conversation_id=slot.conversation_id,
                    seq=slot.seq,
                    channel=slot.channel,
                    policy=self.policy,
                    now=self.clock.now(),
                ),
                None,
                {"trigger": "repair", "fenced_slot": slot.slot_id},
                self.executor.new_token(),
            )
            if await self.store.claim(fence):
                return True
        return False
