"""The capacity protocol as a state machine (hypothesis ``RuleBasedStateMachine``).

Several router replicas share one in-memory store (held to the MongoDB/FerretDB adapter
by the store contract suite). Every store operation and every publication of a replica
waits at a gate the machine opens one at a time, so hypothesis chooses the interleaving:
any replica may run one step while the others wait, stall for as long as the machine
likes (past every timeout, by any clock), crash between any two steps (what it did not
finish is redelivered, as an uncommitted batch is) and come back with empty views. Each
replica has its own clock, moved independently, so clocks are skewed by minutes.

The capacity oracle is the one the fault tests use: it replays the decisions as
published on ``support.assignments.v1`` and the frontend's resolutions, never the
router's own records. After every step no agent is above capacity there (and each
conversation's decisions are numbered without a gap); at the end, once every replica
has run to completion and repaired, no capacity is lost (every held slot belongs to a
conversation that holds it) and every conversation has a decision. A second machine
adds offers: answers race the offer timeout of replicas whose clocks disagree.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery, is_transient
from switchboard_common.contract import (
    AGENT_EVENTS,
    AgentUpserted,
    Channel,
    ConversationResolved,
    OfferAccepted,
    OfferRejected,
)
from switchboard_common.contract.events import AssignmentDecision
from switchboard_common.deadletter import RawRecord
from switchboard_common.kafka import Outgoing
from switchboard_devtools.faults import CapacityOracle
from switchboard_devtools.testing.router_assignment import (
    T0,
    FixedLanguage,
    activity,
    agent,
    deliveries,
)
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.consumers import AgentStateHandler, ConversationHandler
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.model import HOLDING
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.assignment.store import InMemoryAssignmentStore

# A failure is shrunk to its shortest interleaving, which can take minutes.
pytestmark = [pytest.mark.unit, pytest.mark.timeout(900)]

POLICY = parse_policy("queues:\n  - name: general\nsticky: {enabled: false}\n")
CAPACITY = {"a0": 1, "a1": 1}
REPLICAS = 3
REPAIR_AFTER = timedelta(seconds=15)
#: Loop turns that let every runnable coroutine reach its next gate (the store is in
#: memory, so nothing else is awaited).
SETTLE_TURNS = 60


class Crashed(BaseException):
    """The replica died: nothing after this point of its work happens (no handler runs,
    as none would after SIGKILL), hence a ``BaseException``."""


class Gate:
    """Where one incarnation of a replica waits before each store operation and each
    publication until the machine lets it go."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[None]] = []
        self.dead = False
        self.open = False  # the end of the run: every step goes through at once

    async def passage(self) -> None:
        if self.dead:
            raise Crashed
        if self.open:
            return
        ticket = asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        await ticket
        if self.dead:
            raise Crashed

    def let_one_through(self, choice: int) -> None:
        self.waiting.pop(choice % len(self.waiting)).set_result(None)

    def kill(self) -> None:
        self.dead = True
        for ticket in self.waiting:
            ticket.set_exception(Crashed())
        self.waiting.clear()

    def open_wide(self) -> None:
        self.open = True
        for ticket in self.waiting:
            ticket.set_result(None)
        self.waiting.clear()


class GatedStore:
    """The shared store as one replica incarnation sees it: every coroutine method waits
    at the gate first, so each database operation is a step of its own."""

    def __init__(self, shared: InMemoryAssignmentStore, gate: Gate) -> None:
        self._shared = shared
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._shared, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def gated(*args: Any, **kwargs: Any) -> Any:
            await self._gate.passage()
            return await attribute(*args, **kwargs)

        return gated


#: A unit of work a replica is given; redelivered work is run again from its factory.
Work = Callable[[AssignmentEngine, ConversationHandler], Coroutine[Any, Any, object]]


class Replica:
    def __init__(self, machine: CapacityProtocol, index: int) -> None:
        self.machine = machine
        self.index = index
        self.clock = FakeClock(T0)  # outlives incarnations; each replica's own
        self.incarnation = 0
        self.tasks: list[tuple[asyncio.Task[object], Work | None]] = []
        self.start()

    def start(self) -> None:
        self.incarnation += 1
        self.gate = gate = Gate()
        machine = self.machine

        async def publish(items: Sequence[Outgoing]) -> None:
            await gate.passage()
            machine.published([i.event for i in items if isinstance(i.event, AssignmentDecision)])

        self.engine = AssignmentEngine(
            store=GatedStore(machine.store, gate),
            policy=machine.policy,
            clock=self.clock,
            publish=publish,
            detector=FixedLanguage(),
            replica=f"r{self.index}.{self.incarnation}",
        )
        for agent_id, capacity in CAPACITY.items():
            self.engine.directory.apply(agent(agent_id, capacity={Channel.EMAIL: capacity}))
        self.handler = ConversationHandler(self.engine, concurrency=2)
        if self.incarnation > 1:  # a restarted replica fills its views first
            self.give(None, lambda engine, _: engine.load())

    def give(self, work: Work | None, run: Work | None = None) -> None:
        """Start ``work`` (redelivered if this incarnation dies before finishing it);
        ``run`` is work that is not redelivered (timers, views)."""
        job = work or run
        assert job is not None
        task = self.machine.loop.create_task(job(self.engine, self.handler))
        self.tasks.append((task, work))

    def busy(self) -> int:
        return sum(1 for task, _ in self.tasks if not task.done())


class CapacityProtocol(RuleBasedStateMachine):
    policy = POLICY

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = InMemoryAssignmentStore()
        self.loop.run_until_complete(
            self.store.save_agents(
                [agent(a, capacity={Channel.EMAIL: c}) for a, c in CAPACITY.items()]
            )
        )
        self.oracle = CapacityOracle()
        self.moment = itertools.count()  # the order of the public record
        for agent_id, capacity in CAPACITY.items():
            profile = AgentUpserted(
                agent_id=agent_id, display_name=agent_id, capacity={Channel.EMAIL: capacity}
            )
            self.oracle.profile(next(self.moment), profile)
        self.latest: dict[str, AssignmentDecision] = {}  # the public record, per conversation
        self.resolved: set[str] = set()
        self.conversations = 0
        self.replicas = [Replica(self, i) for i in range(REPLICAS)]

    # ------------------------------------------------------------ the public record
    def published(self, events: Sequence[AssignmentDecision]) -> None:
        for event in events:
            self.oracle.decision(next(self.moment), event)
            known = self.latest.get(event.conversation_id)
            if known is None or event.seq > known.seq:
                self.latest[event.conversation_id] = event

    def held_by_agents(self) -> list[str]:
        """Conversations the public record shows with an agent who has them (an accepted
        assignment, not an open offer), not yet resolved: the ones a frontend resolves.
        (Resolving an open offer races the offer's timeout or rejection, which may give
        the conversation to another agent after the resolution with no later event: a
        known gap of the public record, not of capacity, left to the router redesign.)"""
        return sorted(
            c
            for c, e in self.latest.items()
            if e.agent_id is not None and e.offer_expires_at is None and c not in self.resolved
        )

    # ------------------------------------------------------------ running the replicas
    def settle(self) -> None:
        async def turns() -> None:
            for _ in range(SETTLE_TURNS):
                await asyncio.sleep(0)

        self.loop.run_until_complete(turns())
        for replica in self.replicas:
            finished = [(t, w) for t, w in replica.tasks if t.done()]
            replica.tasks = [(t, w) for t, w in replica.tasks if not t.done()]
            for task, work in finished:
                self.outcome(replica, task, work)

    def outcome(self, replica: Replica, task: asyncio.Task[object], work: Work | None) -> None:
        error = task.exception()
        if error is None or isinstance(error, Crashed):
            return
        if is_transient(error) and work is not None:
            replica.give(work)  # the batch is not committed: the consumer tries again
            return
        raise error

    def crash(self, replica: Replica) -> None:
        unfinished = [w for _, w in replica.tasks if w is not None]
        dying, replica.tasks = replica.tasks, []
        replica.gate.kill()
        for task, _ in dying:
            task.cancel()
        self.settle()
        replica.start()
        for work in unfinished:  # another member of the group gets the partition
            self.replicas[(replica.index + 1) % REPLICAS].give(work)

    # ------------------------------------------------------------ rules
    @initialize(
        skews=st.lists(st.sampled_from([0, 20, 300]), min_size=REPLICAS, max_size=REPLICAS),
        writers=st.lists(st.integers(0, REPLICAS - 1), min_size=1, max_size=3),
    )
    def clocks_skew_and_first_customers_write(self, skews: list[int], writers: list[int]) -> None:
        for replica, seconds in zip(self.replicas, skews, strict=True):
            replica.clock.advance(seconds)
        for r in writers:
            self.customers_write(r, count=2, batched=r % 2 == 0)

    @precondition(lambda self: self.conversations < 12)
    @rule(r=st.integers(0, REPLICAS - 1), count=st.integers(1, 3), batched=st.booleans())
    def customers_write(self, r: int, count: int, batched: bool) -> None:
        replica = self.replicas[r]
        ids = [f"c{self.conversations + n}" for n in range(count)]
        self.conversations += count
        arriving = [activity(c, customer_id=f"x{c}", received_at=replica.clock.now()) for c in ids]
        if batched:
            records = deliveries([(a.conversation_id, a) for a in arriving])

            async def batch(_: AssignmentEngine, handler: ConversationHandler) -> object:
                return await handler(records)

            replica.give(batch)
        else:
            for one in arriving:

                async def single(
                    engine: AssignmentEngine, _: ConversationHandler, one: Any = one
                ) -> object:
                    return await engine.on_activity(one)

                replica.give(single)
        self.settle()

    @rule(r=st.integers(0, REPLICAS - 1), pick=st.integers(0, 100))
    def agent_resolves(self, r: int, pick: int) -> None:
        held = self.held_by_agents()
        replica = self.replicas[r]
        if not held or replica.busy() >= 3:
            return
        conversation_id = held[pick % len(held)]
        self.resolved.add(conversation_id)
        # The frontend published the resolution before any router reads it.
        self.oracle.released(next(self.moment), conversation_id)
        records = deliveries(
            [(conversation_id, ConversationResolved(conversation_id=conversation_id, at=T0))]
        )

        async def resolve(_: AssignmentEngine, handler: ConversationHandler) -> object:
            return await handler(records)

        replica.give(resolve)
        self.settle()

    def loop_round(
        self, r: int, action: Callable[[AssignmentEngine], Coroutine[Any, Any, object]]
    ) -> None:
        """One round of one of a replica's loops (not redelivered if it dies)."""
        replica = self.replicas[r]
        if replica.busy() < 3:
            replica.give(None, lambda engine, _: action(engine))
            self.settle()

    @rule(r=st.integers(0, REPLICAS - 1))
    def repair_loop_runs(self, r: int) -> None:
        self.loop_round(r, lambda engine: engine.repair(REPAIR_AFTER))

    @rule(r=st.integers(0, REPLICAS - 1))
    def views_refresh(self, r: int) -> None:
        self.loop_round(r, lambda engine: engine.load())

    @rule(r=st.integers(0, REPLICAS - 1), choice=st.integers(0, 5), steps=st.integers(1, 12))
    def replica_steps(self, r: int, choice: int, steps: int) -> None:
        """One replica runs while the others stand still (a stall, as long as it lasts)."""
        replica = self.replicas[r]
        for _ in range(steps):
            if not replica.gate.waiting:
                break
            replica.gate.let_one_through(choice)
            self.settle()

    @rule(order=st.lists(st.integers(0, REPLICAS - 1), min_size=1, max_size=40))
    def replicas_interleave(self, order: list[int]) -> None:
        """The replicas take turns, one database operation or publication at a time."""
        for r in order:
            gate = self.replicas[r].gate
            if gate.waiting:
                gate.let_one_through(0)
                self.settle()

    @rule(r=st.integers(0, REPLICAS - 1), seconds=st.sampled_from([0.5, 5, 20, 90, 600]))
    def clock_moves(self, r: int, seconds: float) -> None:
        self.replicas[r].clock.advance(seconds)

    @rule(r=st.integers(0, REPLICAS - 1), die=st.integers(0, 3))
    def replica_crashes(self, r: int, die: int) -> None:
        if die == 0:  # rarer than the other rules, so that work gets done in between
            self.crash(self.replicas[r])

    # ------------------------------------------------------------ what must hold
    @invariant()
    def no_agent_above_capacity_on_the_public_record(self) -> None:
        above = self.oracle.replay()
        assert not above, "\n".join(self.oracle.explain(o) for o in above[:3])

    @invariant()
    def no_agent_holds_more_slots_than_capacity(self) -> None:
        load: dict[str, int] = {}
        for slot in self.store.slots.values():
            load[slot.agent_id] = load.get(slot.agent_id, 0) + 1
        assert all(n <= CAPACITY[a] for a, n in load.items()), load

    @invariant()
    def each_conversation_steps_one_number_at_a_time(self) -> None:
        steps: dict[str, list[int]] = {}
        for decision in self.store.decisions.values():
            steps.setdefault(decision.state.conversation_id, []).append(decision.state.seq)
        for conversation_id, seqs in steps.items():
            assert sorted(seqs) == list(range(1, len(seqs) + 1)), (conversation_id, seqs)

    def teardown(self) -> None:
        try:
            self.run_to_the_end()
        finally:
            for replica in self.replicas:
                replica.gate.kill()
            self.loop.run_until_complete(asyncio.sleep(0))
            for replica in self.replicas:
                for task, _ in replica.tasks:
                    task.cancel()
            self.loop.close()

    def run_to_the_end(self) -> None:
        """Every replica finishes its work; then, past every timeout, one repair and a
        read of every conversation: nothing may be left behind."""
        for replica in self.replicas:
            replica.gate.open_wide()
        for _ in range(20):
            self.settle()
            if not any(r.tasks for r in self.replicas):
                break
        assert not any(r.tasks for r in self.replicas), "work that never finishes"
        # Two passes of the repair of the replica whose clock is furthest behind, the grace
        # apart by its own clock: whatever the other clocks stamped on their
        # reservations, skew delays nothing.
        finisher = min(self.replicas, key=lambda r: r.clock.now())
        self.loop.run_until_complete(finisher.engine.repair(REPAIR_AFTER))
        finisher.clock.advance(REPAIR_AFTER.total_seconds() + 1)
        self.loop.run_until_complete(finisher.engine.repair(REPAIR_AFTER))
        for n in range(self.conversations):
            self.loop.run_until_complete(finisher.engine.current(f"c{n}"))
        self.no_agent_above_capacity_on_the_public_record()
        heads = self.store.heads
        for slot in self.store.slots.values():
            head = heads.get(slot.conversation_id)
            holds = head is not None and head.status in HOLDING and slot.slot_id in head.slots
            assert holds, f"{slot.slot_id} is held by no decision: capacity lost"
        missing = [f"c{n}" for n in range(self.conversations) if f"c{n}" not in heads]
        assert not missing, f"conversations never decided: {missing}"


class CapacityProtocolWithOffers(CapacityProtocol):
    """The same, with offers agents must accept within 20 s: an answer races the
    timeout of a replica whose clock may run minutes ahead, and a rejection releases the
    agent on the public record the moment the frontend publishes it."""

    policy = parse_policy(
        "queues:\n  - name: general\nsticky: {enabled: false}\n"
        "offers: {require_acceptance: true, timeout_seconds: 20}\n"
    )

    def offered(self) -> list[AssignmentDecision]:
        """Offers the public record shows open (the frontend may answer them)."""
        return sorted(
            (
                e
                for e in self.latest.values()
                if e.agent_id is not None
                and e.offer_expires_at is not None
                and e.conversation_id not in self.resolved
            ),
            key=lambda e: e.conversation_id,
        )

    @rule(r=st.integers(0, REPLICAS - 1), pick=st.integers(0, 100), accept=st.booleans())
    def agent_answers_an_offer(self, r: int, pick: int, accept: bool) -> None:
        offers = self.offered()
        if not offers:
            return
        offer = offers[pick % len(offers)]
        assert offer.agent_id is not None
        answer: OfferAccepted | OfferRejected
        if accept:
            answer = OfferAccepted(agent_id=offer.agent_id, conversation_id=offer.conversation_id)
        else:
            answer = OfferRejected(agent_id=offer.agent_id, conversation_id=offer.conversation_id)
            self.oracle.released(next(self.moment), offer.conversation_id, offer.agent_id)
        offset = next(self.moment)
        record = Delivery(
            RawRecord(AGENT_EVENTS, 0, offset, offer.agent_id.encode(), b"{}", ()),
            CloudEventAttributes(id=f"answer-{offset}", type="x", source="/t", time=T0),
            answer,
            AGENT_EVENTS,
        )

        async def answered(engine: AssignmentEngine, _: ConversationHandler) -> object:
            return await AgentStateHandler(engine)([record])

        self.replicas[r].give(answered)
        self.settle()

    @rule(r=st.integers(0, REPLICAS - 1))
    def timers_run(self, r: int) -> None:
        self.loop_round(r, lambda engine: engine.tick())


CapacityProtocol.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_capacity_protocol = CapacityProtocol.TestCase
CapacityProtocolWithOffers.TestCase.settings = settings(
    CapacityProtocol.TestCase.settings, max_examples=200
)
test_capacity_protocol_with_offers = CapacityProtocolWithOffers.TestCase
