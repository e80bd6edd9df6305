"""The assignment engine: applies conversation, agent and SLA events and timers to the
routing state, through the store port, and publishes every decision.

Every change to a conversation is a decision ``<conversation_id>:<seq>`` inserted with a
unique ``_id`` (``AssignmentStore.claim``): the engine reads the current state, computes
the next one with the pure matcher, reserves capacity slots if it gives the conversation
to an agent, and claims step ``seq + 1``. Losing a race (duplicate key) means another
replica moved the conversation first: the engine re-reads and decides again. So any
replica may decide about any conversation — consumers, timers, drains — and the
database keeps them exclusive.

A decision's event is published *before* the conversation's head document is written.
Whoever reads a conversation and finds decisions past its head (``current``) publishes
them again (same ``ce_id`` ``<conversation_id>:<seq>``, same ``seq``): so a replica that
crashed between claiming and publishing loses nothing — the redelivered record, a
replica's timers or the slot repair will read that conversation again — and a reader
racing a live decision only causes a duplicate that consumers drop by ``seq``. A reader in
the replica that is making the decision (a timer, a drain or the repair of this replica)
waits for it instead (``deciding``), so that race is left to replicas.

No wake-up is lost between replicas without any replica reading another's events: the
replica that frees capacity releases the slot, then reads the queue from the database
(``drain``); the replica that queues a conversation writes its head, then re-reads the
load of the agents that could take it (``recheck_queued``). Whichever of the two reads
comes second sees the other's write.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from switchboard_common.contract import (
    ASSIGNMENTS,
    AgentStatus,
    Channel,
    ConversationActivity,
    ConversationTransferred,
    Priority,
    SlaEvent,
)
from switchboard_common.contract.events import AssignmentDecision
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_router.assignment.classify import (
    Classified,
    LanguageDetector,
    activity_reason,
    classify,
    select_queue,
)
from switchboard_router.assignment.clock import Clock
from switchboard_router.assignment.matcher import (
    change_moments,
    is_eligible,
    overflow_due_at,
    pick_conversation,
    raised,
    requirements,
)
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

log = get_logger(__name__)

Publish = Callable[[Sequence[Outgoing]], Awaitable[Any]]

#: How often one operation re-reads and retries after losing a race.
MAX_ATTEMPTS = 8
#: Reservations tried for one decision before queueing (each failure fixes the view).
MAX_RESERVATIONS = 12
#: Waiting conversations read from the database when draining an agent (queue order).
DRAIN_READ = 200


class Missed(enum.Enum):
    """Why a reservation-and-claim did not give the conversation to the agent."""

    FULL = "full"  # this replica's view shows no free slot: try another agent
    CONFLICT = "conflict"  # the slot was held after all (a stale view): look again
    LOST = "lost"  # another decision took the conversation's step: re-read


class ContentionError(TimeoutError):
    """Other decisions kept taking a conversation's next step: transient (a
    ``TimeoutError``, so the batch consumer retries the batch with backoff instead of
    dead-lettering the record)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id}: too many lost races in a row")


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
        metrics: AssignmentMetrics | None = None,
        directory: AgentDirectory | None = None,
        queue: QueueView | None = None,
        replica: str | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.publish = publish
        self.detector = detector
        self.metrics = metrics
        self.directory = directory or AgentDirectory()
        self.queue = queue or QueueView()
        self.replica = replica or uuid.uuid4().hex[:12]
        self._tokens = itertools.count()
        self._last_tick = clock.now()
        self._offline_handled: set[tuple[str, datetime | None]] = set()
        #: Conversations whose decision this replica is claiming, publishing and settling.
        self._deciding: Counter[str] = Counter()
        self._decided = asyncio.Event()  # replaced (after being set) whenever one ends
        #: When this replica's repair first listed each reservation, by its own clock.
        self._listed_since: dict[tuple[str, str, int], datetime] = {}

    # ================================================================ state
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

    async def commit(
        self,
        after: RouteState,
        kind: str | None,
        reason: dict[str, Any],
        *,
        release: Sequence[str] = (),
        write_head: bool = True,
    ) -> bool:
        """Claim step ``after.seq``; on success apply its side effects and publish.

        Returns False (and changes nothing) when another decision took that step.
        ``write_head=False`` skips the head write for steps between statuses that no
        listing looks for (e.g. assigned → resolved): readers probe past the head.
        """
        decision = Decision(after, kind, reason, self.new_token())
        async with self.deciding([after.conversation_id]):
            if not await self.store.claim(decision):
                self.count_conflict("decision")
                return False
            if kind is not None:
                await self._publish(decision)
            if write_head:
                await self.settle(after)
        if release:
            await self.store.release(release, after.conversation_id, after.seq - 1)
            self.directory.mark_free(release)
        self.queue.apply(after)
        if after.status in HOLDING and after.agent_id:
            self.directory.assigned(after.agent_id, after.decided_at)
        return True

    def new_token(self) -> str:
        """Names this replica and attempt in a decision (for operators)."""
        return f"{self.replica}-{next(self._tokens)}"

    async def _publish(self, decision: Decision, *, count: bool = True) -> None:
        await self.publish_decisions([decision], count=count)

    async def publish_decisions(self, decisions: Sequence[Decision], *, count: bool = True) -> None:
        """Publish the events of decisions that have one, all acknowledged on return."""
        events = [event_for(d) for d in decisions if d.kind is not None]
        if not events:
            return
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
            for decision, event in zip(
                (d for d in decisions if d.kind is not None), events, strict=True
            ):
                self.metrics.assignments.labels(
                    decision.kind, str(event.channel), str(event.priority)
                ).inc()

    def count_conflict(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.conflicts.labels(kind).inc()

    # ================================================================ routing
    async def _route(
        self,
        base: RouteState,
        *,
        queued_kind: str,
        reason: dict[str, Any],
        release: Sequence[str] = (),
    ) -> RouteState | None:
        """Give ``base`` (a waiting state at its new seq) to the best agent, or queue it
        as ``queued_kind``. None when another decision took the step first."""
        started = time.perf_counter()
        now = self.clock.now()
        tried: set[str] = set()
        for _ in range(MAX_RESERVATIONS):
            choice = self.directory.choose(base, self.policy, now, skip=tried)
            if choice is None:
                break
            assigned = await self._reserve_and_commit(
                base, choice.agent_id, {**reason, **choice.reason}, release=release
            )
            if assigned is Missed.LOST:
                return None
            if isinstance(assigned, RouteState):
                self.observe("assigned", started)
                return assigned
            if assigned is Missed.FULL:
                tried.add(choice.agent_id)
        waiting, why = self.waiting_state(base, now)
        ok = await self.commit(waiting, queued_kind, {**reason, "why": why}, release=release)
        if not ok:
            return None
        self.observe(queued_kind, started)
        await self.recheck_queued([waiting])
        return waiting

    def waiting_state(self, base: RouteState, now: datetime) -> tuple[RouteState, str]:
        """``base`` queued (no agent had room), and why."""
        waiting = base.model_copy(
            update={
                "status": RouteStatus.WAITING,
                "agent_id": None,
                "slots": [],
                "offer_expires_at": None,
                "decided_at": now,
            }
        )
        why = (
            "waiting for the sticky agent"
            if requirements(waiting, self.policy, now).only_agent
            else ("no eligible agent with free capacity")
        )
        return waiting, why

    def assigned_state(
        self, base: RouteState, agent_id: str, slots: Sequence[str], now: datetime
    ) -> RouteState:
        """``base`` given to the agent holding ``slots`` (offered if the policy says so)."""
        offer = self.policy.offers.require_acceptance
        return base.model_copy(
            update={
                "status": RouteStatus.OFFERED if offer else RouteStatus.ASSIGNED,
                "agent_id": agent_id,
                "slots": list(slots),
                "offer_expires_at": (
                    now + timedelta(seconds=self.policy.offers.timeout_seconds) if offer else None
                ),
                "assigned_at": None if offer else now,
                "pinned_agent": None,
                "sticky_until": None,
                "decided_at": now,
            }
        )

    def observe(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.decision_seconds.labels(outcome).observe(time.perf_counter() - started)

    async def _reserve_and_commit(
        self,
        base: RouteState,
        agent_id: str,
        reason: dict[str, Any],
        *,
        release: Sequence[str] = (),
    ) -> RouteState | Missed:
        """Reserve the agent's slots and claim the step: the new state, or why not."""
        weight = self.policy.capacity.weight(base.channel)
        slots = self.directory.take(agent_id, base.channel, weight)
        if slots is None:
            return Missed.FULL
        now = self.clock.now()
        conflict = await self.store.reserve(
            [
                Slot(s, agent_id, parse_slot(s)[1], base.conversation_id, base.seq, now)
                for s in slots
            ]
        )
        if conflict is not None:
            self.directory.mark_free([s for s in slots if s != conflict])
            self.count_conflict("slot")
            return Missed.CONFLICT
        if not await self._within_capacity(agent_id, base.channel, slots[0]):
            await self.store.release(slots, base.conversation_id, base.seq)
            self.directory.mark_free(slots)
            self.count_conflict("capacity")
            return Missed.FULL
        state = self.assigned_state(base, agent_id, slots, now)
        if not await self.commit(state, "assigned", reason, release=release):
            await self.store.release(slots, base.conversation_id, base.seq)
            self.directory.mark_free(slots)
            return Missed.LOST
        if state.status == RouteStatus.ASSIGNED:
            await self.store.remember_agent(state.customer_id, agent_id, now)
        return state

    async def _within_capacity(self, agent_id: str, channel: str, slot: str) -> bool:
        """Re-check a reservation against the agent's *stored* capacity, after inserting
        its slot: a replica whose view still has a capacity that was lowered must not keep
        a slot at or above the new capacity, and while slots above the new capacity are
        still held (work taken before the decrease) no lower slot is given out, so the
        load never exceeds the capacity in force. Costs one read by ``_id`` (plus one per
        slot between capacity and ceiling, only after a decrease)."""
        agent = await self.store.agent(agent_id)
        if agent is None:  # not persisted yet (its first event is still in flight)
            return True
        self.directory.apply(agent)
        above = above_capacity(agent, channel, slot)
        if above is None:
            return False
        for high in above:
            if await self.store.slot_held(high):
                self.directory.mark_held([high])
                return False
        return True

    async def _sticky(self, customer_id: str, known: str | None = None) -> str | None:
        if not self.policy.sticky.enabled:
            return None
        if known is not None:
            return known
        return self.remembered(await self.store.last_agent(customer_id))

    def remembered(self, last: tuple[str, datetime] | None) -> str | None:
        """The agent a customer's memory names while it is recent enough."""
        if last is None:
            return None
        agent_id, at = last
        if (self.clock.now() - at).total_seconds() > self.policy.sticky.remember_seconds:
            return None
        return agent_id

    def sticky_until(self, agent_id: str | None) -> datetime | None:
        """Wait for the sticky agent only while they are online (full or not)."""
        if agent_id is None or self.policy.sticky.wait_seconds <= 0:
            return None
        agent = self.directory.get(agent_id)
        if agent is None or agent.status != AgentStatus.ONLINE:
            return None
        return self.clock.now() + timedelta(seconds=self.policy.sticky.wait_seconds)

    # ================================================================ conversation input
    async def on_activity(self, activity: ConversationActivity) -> str:
        """A customer message: route the conversation unless it is already routed.

        Returns the outcome (``routed``, ``not_routed`` for auto-submitted messages,
        ``unchanged`` when already routed or already applied)."""
        cause = f"message:{activity.message_id}"
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(activity.conversation_id)
            if current is not None and (
                current.applied(cause) or current.status in (RouteStatus.WAITING, *HOLDING)
            ):
                return "unchanged"
            classified = classify(activity, self.policy, self.detector)
            if classified is None:
                return "not_routed"
            known = None
            if current is not None and current.status == RouteStatus.AWAITING_CUSTOMER:
                known = current.agent_id
            sticky = await self._sticky(activity.customer_id, known)
            base = self.new_waiting(activity, classified, current, sticky, cause)
            reason = activity_reason(activity, classified)
            if await self._route(base, queued_kind="queued", reason=reason) is not None:
                return "routed"
        raise ContentionError(activity.conversation_id)

    def new_waiting(
        self,
        activity: ConversationActivity,
        classified: Classified,
        current: RouteState | None,
        sticky: str | None,
        cause: str,
    ) -> RouteState:
        queue = select_queue(
            classified,
            self.policy,
            channel=str(activity.channel),
            customer_tier=activity.customer_tier,
            tenant=activity.tenant,
        )
        now = self.clock.now()
        return RouteState(
            conversation_id=activity.conversation_id,
            seq=1 if current is None else current.seq + 1,
            status=RouteStatus.WAITING,
            customer_id=activity.customer_id,
            channel=activity.channel,
            priority=classified.priority,
            queue=queue.name,
            skills=classified.skills,
            language=classified.language,
            topics=list(classified.topics),
            tenant=activity.tenant,
            customer_tier=activity.customer_tier,
            waiting_since=now,
            sticky_agent=sticky,
            sticky_until=self.sticky_until(sticky),
            causes=[cause] if current is None else current.with_cause(cause),
            decided_at=now,
        )

    async def on_resolved(self, conversation_id: str, cause: str) -> None:
        """Resolved: free its capacity and let the agent take the next one at once."""
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(conversation_id)
            if current is None or current.applied(cause) or current.status == RouteStatus.RESOLVED:
                return
            after = current.model_copy(
                update={
                    "seq": current.seq + 1,
                    "status": RouteStatus.RESOLVED,
                    "slots": [],
                    "offer_expires_at": None,
                    "causes": current.with_cause(cause),
                    "decided_at": self.clock.now(),
                }
            )
            listed = current.status in (RouteStatus.WAITING, RouteStatus.OFFERED)
            if await self.commit(
                after, None, {"trigger": "resolved"}, release=current.slots, write_head=listed
            ):
                self.queue.forget(conversation_id)
                await self._drain_after_release(current)
                return

    async def on_reopened(self, conversation_id: str, cause: str) -> None:
        """Reopened by an agent: route it again, first to the agent who had it."""
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(conversation_id)
            if current is None or current.applied(cause):
                return
            if current.status != RouteStatus.RESOLVED:
                return
            sticky = await self._sticky(current.customer_id, current.agent_id)
            base = self._rewait(current, cause, waiting_since=self.clock.now()).model_copy(
                update={"sticky_agent": sticky, "sticky_until": self.sticky_until(sticky)}
            )
            if await self._route(base, queued_kind="queued", reason={"trigger": "reopened"}):
                return

    def _rewait(
        self, current: RouteState, cause: str | None, *, waiting_since: datetime | None = None
    ) -> RouteState:
        """The next step of ``current`` as a waiting conversation (slots not yet freed)."""
        return current.model_copy(
            update={
                "seq": current.seq + 1,
                "status": RouteStatus.WAITING,
                "agent_id": None,
                "slots": [],
                "offer_expires_at": None,
                "assigned_at": None,
                "waiting_since": waiting_since or current.waiting_since,
                "causes": current.with_cause(cause),
                "decided_at": self.clock.now(),
            }
        )

    async def on_transferred(self, event: ConversationTransferred, cause: str) -> str | None:
        """Transfer to a queue or a named agent; returns a rejection reason if invalid."""
        if event.to_queue is not None and self.policy.queue(event.to_queue) is None:
            return f"transfer to unknown queue {event.to_queue!r}"
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(event.conversation_id)
            if current is None or current.applied(cause) or current.status == RouteStatus.RESOLVED:
                return None
            base = self._rewait(current, cause, waiting_since=self.clock.now()).model_copy(
                update={
                    "queue": event.to_queue or current.queue,
                    "pinned_agent": event.to_agent_id,
                    "sticky_agent": None,
                    "sticky_until": None,
                    "excluded_agents": [],
                }
            )
            reason = {"trigger": "transferred", "from_agent_id": event.from_agent_id}
            if await self._route(
                base, queued_kind="requeued", reason=reason, release=current.slots
            ):
                await self._drain_after_release(current)
                return None
        raise ContentionError(event.conversation_id)

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
            current = await self.current(conversation_id)
            if current is None:
                return
        if (
            awaiting_customer
            and self.policy.capacity.release_when_awaiting_customer
            and current.status == RouteStatus.ASSIGNED
        ):
            after = current.model_copy(
                update={
                    "seq": current.seq + 1,
                    "status": RouteStatus.AWAITING_CUSTOMER,
                    "slots": [],
                    "causes": current.with_cause(cause),
                    "decided_at": self.clock.now(),
                }
            )
            if await self.commit(
                after,
                None,
                {"trigger": "awaiting_customer"},
                release=current.slots,
                write_head=False,
            ):
                await self._drain_after_release(current)

    async def on_offer_answer(
        self, agent_id: str, conversation_id: str, *, accepted: bool, cause: str
    ) -> None:
        """``offer.accepted``: the agent has it. ``offer.rejected``: back to the queue with
        its original waiting time, never offered to that agent again."""
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(conversation_id)
            if (
                current is None
                or current.applied(cause)
                or current.status != RouteStatus.OFFERED
                or current.agent_id != agent_id
            ):
                return
            if accepted:
                now = self.clock.now()
                after = current.model_copy(
                    update={
                        "seq": current.seq + 1,
                        "status": RouteStatus.ASSIGNED,
                        "offer_expires_at": None,
                        "assigned_at": now,
                        "causes": current.with_cause(cause),
                        "decided_at": now,
                    }
                )
                if await self.commit(after, "assigned", {"trigger": "offer", "offer": "accepted"}):
                    await self.store.remember_agent(current.customer_id, agent_id, now)
                    self._count_offer("accepted")
                    return
            elif await self._take_back(current, cause, "rejected", exclude=True):
                return

    async def _take_back(
        self, current: RouteState, cause: str | None, outcome: str, *, exclude: bool
    ) -> bool:
        """Requeue an offered or assigned conversation (original waiting time), then try
        the other agents at once. False when another decision moved it first."""
        excluded = list(current.excluded_agents)
        if exclude and current.agent_id and current.agent_id not in excluded:
            excluded.append(current.agent_id)
        after = self._rewait(current, cause).model_copy(
            update={"excluded_agents": excluded, "sticky_agent": None, "sticky_until": None}
        )
        reason = {"trigger": outcome, "previous_agent_id": current.agent_id}
        if not await self.commit(after, "requeued", reason, release=current.slots):
            return False
        if outcome in ("rejected", "timed_out"):
            self._count_offer(outcome)
        await self.recheck_queued([after])
        if current.agent_id:
            await self.drain(current.agent_id)
        return True

    def _count_offer(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.offers.labels(outcome).inc()

    async def on_sla(self, event: SlaEvent, kind: str, cause: str) -> None:
        """``at_risk``/``breached`` for a waiting conversation: raise its priority or move
        it to the overflow queue (policy), once per metric and kind."""
        action = (
            self.policy.escalation.at_risk if kind == "at_risk" else self.policy.escalation.breached
        )
        if action == "none":
            return
        key = f"{kind}:{event.metric}"
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(event.conversation_id)
            if (
                current is None
                or current.applied(cause)
                or current.status != RouteStatus.WAITING
                or key in current.escalations
            ):
                return
            update: dict[str, Any] = {"escalations": [*current.escalations, key]}
            if action == "raise_priority":
                update["priority"] = raised(current.priority)
            else:
                update["queue"] = self.policy.overflow.name
            after = self._rewait(current, cause).model_copy(update=update)
            reason = {
                "trigger": f"sla:{kind}",
                "metric": str(event.metric),
                "action": action,
                "previous_priority": str(current.priority),
                "previous_queue": current.queue,
            }
            if await self.commit(after, "escalated", reason):
                await self.assign_waiting(event.conversation_id)
                return

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
        for slot in await self.store.held_slots([agent_id]):
            for _ in range(MAX_ATTEMPTS):
                current = await self.current(slot.conversation_id)
                if current is None or current.agent_id != agent_id:
                    break
                wanted = {RouteStatus.OFFERED} | ({RouteStatus.ASSIGNED} if assigned_too else set())
                if current.status not in wanted:
                    break
                if await self._take_back(current, None, "agent_offline", exclude=False):
                    break

    # ================================================================ draining
    async def _drain_after_release(self, previous: RouteState) -> None:
        if previous.status in HOLDING and previous.agent_id:
            await self.drain(previous.agent_id)

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
                now = self.clock.now()
                claiming = self.queue.claiming
                waiting = (
                    s
                    for s in self.queue.sorted_waiting(channel)
                    if s.conversation_id not in claiming
                )
                pick = pick_conversation(candidate, waiting, self.policy, now)
                if pick is None:
                    break
                outcome = await self.assign_waiting(pick.conversation_id, only=agent_id)
                if outcome:
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
            return await self._try_assign_waiting(conversation_id, only)
        finally:
            self.queue.claiming.discard(conversation_id)

    async def _try_assign_waiting(self, conversation_id: str, only: str | None) -> bool:
        started = time.perf_counter()
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(conversation_id)
            if current is None or current.status != RouteStatus.WAITING:
                self._refresh_view(conversation_id, current)
                return False
            self.queue.apply(current)
            now = self.clock.now()
            base = current.model_copy(update={"seq": current.seq + 1, "decided_at": now})
            if only is not None:
                candidate = self.directory.candidate(only, current.channel)
                needs = requirements(current, self.policy, now)
                if candidate is None or not is_eligible(
                    candidate, current, needs, self.policy.capacity.weight(current.channel)
                ):
                    return False
                reason = {
                    "trigger": "capacity_freed",
                    "waited_seconds": round((now - current.waiting_since).total_seconds(), 3),
                }
                result = await self._reserve_and_commit(base, only, reason)
                if result is Missed.LOST:
                    continue
                if isinstance(result, RouteState):
                    self.observe("assigned", started)
                    return True
                return False
            choice = self.directory.choose(current, self.policy, now)
            if choice is None:
                return False
            reason = {"trigger": "rematch", **choice.reason}
            result = await self._reserve_and_commit(base, choice.agent_id, reason)
            if result is Missed.LOST:
                continue
            if isinstance(result, RouteState):
                self.observe("assigned", started)
                return True
        return False

    async def recheck_queued(self, queued: Sequence[RouteState]) -> None:
        """After writing the heads of conversations it queued: re-read the load of the
        online agents that could take them (another replica may have freed a slot this
        view still counts as held, and drained before these heads were written), then
        try again those the fresh view finds an agent for."""
        waiting = [s for s in queued if s.status == RouteStatus.WAITING]
        channels = {str(s.channel) for s in waiting}
        agents = sorted(self.directory.online(channels))
        if not agents:
            return
        self.directory.replace_held(await self.store.held_slots(agents), agents)
        now = self.clock.now()
        for state in waiting:
            if self.directory.choose(state, self.policy, now):
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
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(conversation_id)
            if current is None or current.status != RouteStatus.OFFERED:
                self._refresh_view(conversation_id, current)
                return
            expires = current.offer_expires_at
            if expires is None or expires > self.clock.now():
                self.queue.apply(current)
                return
            if await self._take_back(current, None, "timed_out", exclude=True):
                return

    async def _overflow(self, conversation_id: str) -> None:
        for _ in range(MAX_ATTEMPTS):
            current = await self.current(conversation_id)
            if current is None or current.status != RouteStatus.WAITING:
                return
            due = overflow_due_at(current, self.policy)
            if due is None or due > self.clock.now() or current.queue == self.policy.overflow.name:
                self.queue.apply(current)
                return
            after = self._rewait(current, None).model_copy(
                update={"queue": self.policy.overflow.name, "sticky_until": None}
            )
            reason = {
                "trigger": "wait_timeout",
                "previous_queue": current.queue,
                "waited_seconds": round(
                    (self.clock.now() - current.waiting_since).total_seconds(), 3
                ),
            }
            if await self.commit(after, "escalated", reason):
                await self.assign_waiting(conversation_id)
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

    # ================================================================ views
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
                self._unchanged(current, slot),
                None,
                {"trigger": "repair", "fenced_slot": slot.slot_id},
                self.new_token(),
            )
            if await self.store.claim(fence):
                return True
        return False

    def _unchanged(self, current: RouteState | None, slot: Slot) -> RouteState:
        """``current`` as step ``slot.seq``; for a conversation without any state yet,
        a resolved placeholder (its next activity routes it from scratch)."""
        now = self.clock.now()
        if current is not None:
            return current.model_copy(update={"seq": slot.seq, "decided_at": now})
        return RouteState(
            conversation_id=slot.conversation_id,
            seq=slot.seq,
            status=RouteStatus.RESOLVED,
            customer_id="",
            # A total-capacity slot names no channel; the placeholder routes nothing.
            channel=Channel(slot.channel) if slot.channel in set(Channel) else Channel.EMAIL,
            priority=Priority.NORMAL,
            queue=self.policy.overflow.name,
            waiting_since=now,
            decided_at=now,
        )
