"""A replay: recorded traffic through the router's own engine on a simulated clock.

The engine, its handlers and the pure core are the live router's (``ConversationHandler``
and ``AgentStateHandler`` are fed the records as the consumers would feed them; customer
messages arrive as the timeline hands them over, with the customer's earlier
conversations for sticky routing). What the simulation adds is time and agents:

- customers' messages, agents' profiles and presence, and SLA warnings happen when
  they were recorded; an SLA warning about a clock the replay has already stopped (the
  first reply came sooner, the conversation is resolved) is dropped;
- agents' work on a conversation follows each simulated assignment (``handling``);
- timers run at the moment they are due — offer deadlines, relaxation steps, sticky
  windows, overflow, offline reassignment — where the live router acts at its next
  tick (``ROUTER_ASSIGNMENT_TICK_SECONDS``, a quarter second by default). The
  refresh round is not run: one replica on its own store has nothing to repair, and
  its re-match is a safety net behind the event-driven path the replay drives.

The replay ends at the last recorded record: what is still open then stays open.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    ConversationActivity,
    ReplySent,
    SlaMetric,
)
from switchboard_common.contract.events import ContractModel, SlaEvent
from switchboard_common.deadletter import RawRecord
from switchboard_common.kafka import Outgoing
from switchboard_router.assignment.classify import LanguageDetector, Py3LangIdDetector
from switchboard_router.assignment.consumers import AgentStateHandler, ConversationHandler
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.matcher import change_moments
from switchboard_router.assignment.model import RouteStatus
from switchboard_router.assignment.policy import RoutingPolicy
from switchboard_router.assignment.store import Decision
from switchboard_router.simulation.handling import Handling, Step, is_work, retimed
from switchboard_router.simulation.simulated import ReplayStore, SimulatedClock
from switchboard_router.simulation.trace import Trace, TraceRecord

SOURCE = "/switchboard/simulation"
_MS = timedelta(milliseconds=1)
# What happens first when several things are due at one moment: recorded events, then
# agents' simulated work, then timers (the live router's tick comes after the events).
_INPUT, _WORK, _TIMER = 0, 1, 2


@dataclass
class Outcome:
    """What a replay decided, and what the report needs beside it."""

    label: str
    policy: RoutingPolicy
    start: datetime
    end: datetime
    #: Every decision, by conversation, in step order.
    decisions: dict[str, list[Decision]]
    #: The first customer message of each conversation.
    opened: dict[str, ConversationActivity]
    #: When the first agent reply was sent, in the replay.
    first_reply: dict[str, datetime]
    #: Capacity-seconds agents were online with, by channel, from the first message on.
    capacity_seconds: dict[str, float]
    #: Simulated assignments by where their work came from (``handling.Script.source``).
    scripts: Counter[str] = field(default_factory=Counter)
    #: Recorded events not replayed, by why.
    dropped: Counter[str] = field(default_factory=Counter)
    #: The agents' work the replay did, as records (a sample trace records it).
    worked: list[TraceRecord] = field(default_factory=list)


class _Presence:
    """Online capacity over time, by channel (the denominator of occupancy)."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.totals: dict[str, float] = {}
        self._agents: dict[str, tuple[bool, dict[str, int], datetime]] = {}

    def update(self, event: ContractModel, now: datetime) -> None:
        agent_id = str(getattr(event, "agent_id", ""))
        online, capacity, _ = self._agents.get(agent_id, (False, {}, now))
        self._flush(agent_id, now)
        if isinstance(event, AgentUpserted):
            capacity = {str(c): n for c, n in event.capacity.items()}
        elif isinstance(event, AgentStatusChanged):
            online = event.status == AgentStatus.ONLINE
        self._agents[agent_id] = (online, capacity, now)

    def _flush(self, agent_id: str, now: datetime) -> None:
        if agent_id not in self._agents:
            return
        online, capacity, since = self._agents[agent_id]
        seconds = (now - max(since, self.since)).total_seconds()
        if online and seconds > 0:
            for channel, slots in capacity.items():
                self.totals[channel] = self.totals.get(channel, 0.0) + slots * seconds

    def close(self, now: datetime) -> dict[str, float]:
        for agent_id in sorted(self._agents):
            self._flush(agent_id, now)
            online, capacity, _ = self._agents[agent_id]
            self._agents[agent_id] = (online, capacity, now)
        return dict(sorted(self.totals.items()))


class RememberedLanguages:
    """A language detector that answers each text once: both replays of a trace (and a
    customer who writes the same words twice) cost one detection. The answer is the
    wrapped detector's, so routing is unchanged."""

    def __init__(self, detector: LanguageDetector | None = None) -> None:
        self.detector = detector or Py3LangIdDetector()
        self._known: dict[tuple[str, tuple[str, ...]], tuple[str, float]] = {}

    def __call__(self, text: str, candidates: Sequence[str]) -> tuple[str, float]:
        key = (text, tuple(candidates))
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self.detector(text, candidates)
        return found


class _Recorder(ReplayStore):
    """The replay's store: hands over every decision claimed since last asked."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed: list[Decision] = []

    async def claim(self, decision: Decision) -> bool:
        if await super().claim(decision):
            self.claimed.append(decision)
            return True
        return False


async def _discard(items: Sequence[Outgoing]) -> None:
    del items  # the decisions are read from the store, complete and in step order


class Replay:
    """One replay of a trace through one policy (``run`` once)."""

    def __init__(
        self,
        trace: Trace,
        policy: RoutingPolicy,
        model: Handling,
        *,
        label: str,
        detector: LanguageDetector | None = None,
    ) -> None:
        if trace.start is None or trace.end is None:
            raise ValueError("nothing to replay: the trace has no record")
        self.trace = trace
        self.end: datetime = trace.end
        self.policy = policy
        self.model = model
        self.label = label
        self.clock = SimulatedClock(trace.start)
        self.store = _Recorder()
        self.engine = AssignmentEngine(
            store=self.store,
            policy=policy,
            clock=self.clock,
            publish=_discard,
            detector=detector or RememberedLanguages(),
            replica="simulation",
        )
        self.conversations = ConversationHandler(self.engine, concurrency=1)
        self.agents = AgentStateHandler(self.engine)
        self._queue: list[tuple[datetime, int, int, object]] = []
        self._order = itertools.count()
        self._offsets = itertools.count()
        self._generation: Counter[str] = Counter()
        self._assignments: Counter[str] = Counter()
        self._customers: dict[str, list[str]] = {}
        self.opened: dict[str, ConversationActivity] = {}
        self.first_reply: dict[str, datetime] = {}
        self.scripts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.worked: list[TraceRecord] = []
        first_message = next(
            (r.time for r in trace.records if r.topic == CONVERSATION_ACTIVITY), trace.start
        )
        self.presence = _Presence(first_message)

    def _push(self, at: datetime, kind: int, item: object) -> None:
        heapq.heappush(self._queue, (at, kind, next(self._order), item))

    async def run(self) -> Outcome:
        end = self.end
        for record in self.trace.records:
            if record.topic != ASSIGNMENTS and not is_work(record):
                self._push(record.time, _INPUT, record)
        for record in self.model.unassigned:
            self._push(record.time, _INPUT, record)
        while self._queue and self._queue[0][0] <= end:
            at, kind, _, item = heapq.heappop(self._queue)
            now = self.clock.advance_to(at)
            if kind == _TIMER:
                # Every timer due by now is handled by this one round.
                while self._queue and self._queue[0][1] == _TIMER and self._queue[0][0] <= now:
                    heapq.heappop(self._queue)
                await self.engine.tick()
            elif isinstance(item, _Work):
                if self._generation[item.conversation_id] == item.generation:
                    await self._work(item, now)
            elif isinstance(item, TraceRecord):
                await self._input(item, now)
            self._after(now)
        self.clock.advance_to(end)
        decisions: dict[str, list[Decision]] = {}
        for decision in self.store.decisions.values():
            decisions.setdefault(decision.state.conversation_id, []).append(decision)
        for steps in decisions.values():
            steps.sort(key=lambda d: d.state.seq)
        return Outcome(
            label=self.label,
            policy=self.policy,
            start=self.presence.since,
            end=end,
            decisions=dict(sorted(decisions.items())),
            opened=self.opened,
            first_reply=self.first_reply,
            capacity_seconds=self.presence.close(end),
            scripts=self.scripts,
            dropped=self.dropped,
            worked=self.worked,
        )

    # ------------------------------------------------------------------ inputs
    async def _input(self, record: TraceRecord, now: datetime) -> None:
        event = record.event
        if isinstance(event, ConversationActivity):
            await self._customer_message(event)
        elif record.topic == AGENT_EVENTS and not is_work(record):
            self.presence.update(event, now)
            await self.agents([self._delivery(record.topic, record.key, record.attributes, event)])
            if isinstance(event, AgentStatusChanged) and event.status == AgentStatus.OFFLINE:
                limit = self.policy.capacity.offline_reassign_after_seconds
                if limit is not None:
                    since = event.at or record.time
                    self._push(_ceil_ms(since + timedelta(seconds=limit)) + _MS, _TIMER, None)
        elif isinstance(event, SlaEvent):
            if self._clock_stopped(event):
                self.dropped[f"sla_{event.metric}_already_met"] += 1
                return
            await self._conversation_event(record.topic, record.key, record.attributes, event)
        else:  # work recorded before any assignment: when it was recorded
            await self._conversation_event(record.topic, record.key, record.attributes, event)

    async def _customer_message(self, activity: ConversationActivity) -> None:
        cid = activity.conversation_id
        self.opened.setdefault(cid, activity)
        before = self._customers.setdefault(activity.customer_id, [])
        earlier = {cid: [c for c in before if c != cid]} if activity.kind == "opened" else {}
        if cid in before:
            before.remove(cid)
        before.insert(0, cid)  # most recently active first, as the timeline hands them
        await self.conversations.route_messages([activity], earlier)

    def _clock_stopped(self, event: SlaEvent) -> bool:
        """Whether the replay already stopped the SLA clock the warning is about."""
        cid = event.conversation_id
        if event.metric == SlaMetric.FIRST_RESPONSE:
            return cid in self.first_reply
        head = self.store.heads.get(cid)
        return head is not None and head.status == RouteStatus.RESOLVED

    async def _conversation_event(
        self, topic: str, key: str, attributes: CloudEventAttributes, event: ContractModel
    ) -> None:
        if isinstance(event, ReplySent):
            self.first_reply.setdefault(event.conversation_id, attributes.time)
        delivery = self._delivery(topic, key, attributes, event)
        if topic == AGENT_EVENTS:  # offer answers
            await self.agents([delivery])
            return
        rejected = await self.conversations([delivery])
        for _, why in rejected:
            self.dropped[f"rejected: {why}"] += 1

    def _delivery(
        self, topic: str, key: str, attributes: CloudEventAttributes, event: ContractModel
    ) -> Delivery:
        # Offsets only grow: agent views apply an agent event only when it is newer.
        raw = RawRecord(topic, 0, next(self._offsets), key.encode(), None, ())
        return Delivery(raw, attributes, event, topic)

    # ------------------------------------------------------------------ agents' work
    async def _work(self, work: _Work, now: datetime) -> None:
        record = work.step.record
        event = retimed(record.event, work.conversation_id, work.agent_id, work.recorded_agent, now)
        attributes = CloudEventAttributes(
            id=f"{record.attributes.id}@{work.conversation_id}:{work.nth}",
            type=record.attributes.type,
            source=SOURCE,
            time=now,
        )
        key = work.agent_id if record.topic == AGENT_EVENTS else work.conversation_id
        self.worked.append(TraceRecord(record.topic, key, attributes, event))
        await self._conversation_event(record.topic, key, attributes, event)

    # ------------------------------------------------------------------ after each step
    def _after(self, now: datetime) -> None:
        """Timers and agents' work for the decisions just made."""
        claimed, self.store.claimed = self.store.claimed, []
        for decision in claimed:
            state = decision.state
            cid = state.conversation_id
            if state.status == RouteStatus.WAITING:
                for moment in change_moments(state, self.policy):
                    if moment >= now:
                        self._push(_ceil_ms(moment), _TIMER, None)
            elif state.status == RouteStatus.OFFERED and state.offer_expires_at is not None:
                self._push(_ceil_ms(state.offer_expires_at), _TIMER, None)
            if decision.kind == "requeued":
                self._generation[cid] += 1  # the agent no longer has it: their work stops
            elif (
                decision.kind == "assigned"
                and state.agent_id
                and decision.reason.get("offer") != "accepted"
            ):
                self._assign(cid, state.agent_id, state.queue, str(state.channel), state.decided_at)

    def _assign(self, cid: str, agent_id: str, queue: str, channel: str, at: datetime) -> None:
        nth = self._assignments[cid]
        self._assignments[cid] += 1
        self._generation[cid] += 1
        script = self.model.script(cid, nth, agent_id, queue, channel)
        self.scripts[script.source] += 1
        for step in script.steps:
            work = _Work(cid, self._generation[cid], nth, agent_id, script.recorded_agent, step)
            self._push(at + timedelta(seconds=step.offset), _WORK, work)


@dataclass(frozen=True, slots=True)
class _Work:
    """A step of agent work scheduled by the ``nth`` assignment of a conversation; it is
    skipped once a later assignment or requeue (``generation``) has superseded it."""

    conversation_id: str
    generation: int
    nth: int
    agent_id: str
    recorded_agent: str | None
    step: Step


def _ceil_ms(moment: datetime) -> datetime:
    """Up to the clock's millisecond, so that a timer never fires just before it is due."""
    rest = moment.microsecond % 1000
    return moment if rest == 0 else moment + timedelta(microseconds=1000 - rest)


async def replay(
    trace: Trace,
    policy: RoutingPolicy,
    model: Handling,
    *,
    label: str,
    detector: LanguageDetector | None = None,
) -> Outcome:
    """Replay ``trace`` through ``policy`` (see the module's docstring)."""
    return await Replay(trace, policy, model, label=label, detector=detector).run()
