"""Assignment's batch path: the customer messages of one consumed batch, routed together.

``AssignmentEngine.on_activity`` decides one conversation in about ten sequential round
trips. ``route_activities`` decides a batch of distinct conversations in a fixed number
of bulk round trips, taking the same steps with the same exclusive inserts:

1. read every head and the decision just past each (``$in``), and the sticky memories
   the batch needs;
2. classify, and match in memory in batch order, reserving slots in this replica's view
   as it goes (``AgentDirectory.take``), so one batch never picks a slot twice;
3. insert every reserved slot (one unordered insert): a slot someone holds loses that
   reservation, exactly as ``reserve`` does;
4. re-read every agent that got a slot (and the slots between its capacity and ceiling)
   and give back the slots that break the capacity in force, as ``_within_capacity``;
5. claim every decision (one unordered insert of ``<conversation_id>:<seq>`` ids);
6. publish every event, awaiting Kafka's acknowledgements once;
7. write every head, re-read the decision past each (the ``settle`` check), remember
   every customer's agent;
8. if any conversation was queued, re-read the load of the agents that could take it
   (``AssignmentEngine.recheck_queued``: slots given back in steps 3 to 5, or freed by
   another replica, may be what it needed).

Wherever the one-at-a-time path would re-read or retry — a head behind its decisions, a
slot insert or a decision claim that lost, a failed capacity check — the conversation
leaves the batch: its slots are given back and it is returned undecided (None) for the
caller to run ``on_activity`` on, the existing path. A lost insert is never proceeded
past, so every slot and every step stays one insert with a unique ``_id`` and no
interleaving of batches, replicas and single decisions can over-assign.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from switchboard_common.contract import ConversationActivity
from switchboard_router.assignment.classify import Classified, activity_reason, classify
from switchboard_router.assignment.engine import MAX_RESERVATIONS, AssignmentEngine
from switchboard_router.assignment.model import (
    HOLDING,
    RouteState,
    RouteStatus,
    Slot,
    above_capacity,
    parse_slot,
)
from switchboard_router.assignment.store import Decision

#: Outcome per conversation id: ``routed``, ``unchanged``, ``not_routed``, or None for a
#: conversation the batch left to ``on_activity``.
Outcomes = dict[str, str | None]


@dataclass
class _Route:
    """One conversation on its way through the batch."""

    base: RouteState
    reason: dict[str, Any]
    agent_id: str | None = None
    slots: list[str] = field(default_factory=list)

    @property
    def conversation_id(self) -> str:
        return self.base.conversation_id


async def route_activities(
    engine: AssignmentEngine, activities: Sequence[ConversationActivity]
) -> Outcomes:
    """Route the customer messages of a batch (see module docs). Returns an outcome per
    conversation; None marks the ones to hand to ``engine.on_activity`` (a conversation
    named twice is decided once here, its later activities are left undecided).

    Raises the store's and Kafka's errors like ``on_activity``; what was done before the
    error is finished by the next reader, as for a crash (``engine`` module docs)."""
    started = time.perf_counter()
    outcomes: Outcomes = {}
    routes = await _prepare(engine, activities, outcomes)
    if not routes:
        return outcomes
    now = engine.clock.now()
    for route in routes:
        _match(engine, route, now)
    routes = await _reserve(engine, routes, outcomes, now)
    routes = await _within_capacity(engine, routes, outcomes)
    async with engine.deciding(r.conversation_id for r in routes):
        winners = await _claim(engine, routes, outcomes, now)
        if not winners:
            return outcomes
        await engine.publish_decisions(winners)
        states = [d.state for d in winners]
        await engine.store.put_heads(states)
        newer = await engine.store.decisions_at({s.conversation_id: s.seq + 1 for s in states})
        for decision in newer.values():  # another replica moved it already: converge
            await engine.settle(decision.state)
    for state in states:
        engine.queue.apply(state)
        if state.status in HOLDING and state.agent_id:
            engine.directory.assigned(state.agent_id, state.decided_at)
    served = [
        (s.customer_id, s.agent_id, now)
        for s in states
        if s.status == RouteStatus.ASSIGNED and s.agent_id
    ]
    if served:
        await engine.store.remember_agents(served)
    for state in states:
        outcomes[state.conversation_id] = "routed"
        engine.observe("queued" if state.status == RouteStatus.WAITING else "assigned", started)
    await engine.recheck_queued(states)
    return outcomes


async def _prepare(
    engine: AssignmentEngine, activities: Sequence[ConversationActivity], outcomes: Outcomes
) -> list[_Route]:
    """Read the batch's current states and sticky memories; the waiting base state of
    every conversation to route (outcomes of the others are set)."""
    by_id: dict[str, ConversationActivity] = {}
    for activity in activities:
        by_id.setdefault(activity.conversation_id, activity)
    store = engine.store
    heads = await store.heads_of(list(by_id))
    ahead = await store.decisions_at({c: (heads[c].seq if c in heads else 0) + 1 for c in by_id})
    todo: list[tuple[ConversationActivity, RouteState | None, Classified, str | None, str]] = []
    for conversation_id, activity in by_id.items():
        if conversation_id in ahead:
            # Its head lags its decisions: on_activity publishes and settles them first.
            outcomes[conversation_id] = None
            continue
        current = heads.get(conversation_id)
        cause = f"message:{activity.message_id}"
        if current is not None and (
            current.applied(cause) or current.status in (RouteStatus.WAITING, *HOLDING)
        ):
            outcomes[conversation_id] = "unchanged"
            continue
        classified = classify(activity, engine.policy, engine.detector)
        if classified is None:
            outcomes[conversation_id] = "not_routed"
            continue
        known = None
        if current is not None and current.status == RouteStatus.AWAITING_CUSTOMER:
            known = current.agent_id
        todo.append((activity, current, classified, known, cause))
    sticky = engine.policy.sticky.enabled
    wanted = list(dict.fromkeys(a.customer_id for a, _, _, known, _ in todo if known is None))
    memories = await store.last_agents(wanted) if sticky and wanted else {}
    routes = []
    for activity, current, classified, known, cause in todo:
        agent = None
        if sticky:
            agent = (
                known
                if known is not None
                else engine.remembered(memories.get(activity.customer_id))
            )
        base = engine.new_waiting(activity, classified, current, agent, cause)
        routes.append(_Route(base, activity_reason(activity, classified)))
    return routes


def _match(engine: AssignmentEngine, route: _Route, now: datetime) -> None:
    """Choose the agent and take its slots in this replica's view (or leave it to
    queue). The view marks them held at once, so the next route sees them taken."""
    weight = engine.policy.capacity.weight(route.base.channel)
    tried: set[str] = set()
    for _ in range(MAX_RESERVATIONS):
        choice = engine.directory.choose(route.base, engine.policy, now, skip=tried)
        if choice is None:
            return
        slots = engine.directory.take(choice.agent_id, route.base.channel, weight)
        if slots is None:
            tried.add(choice.agent_id)
            continue
        route.agent_id, route.slots = choice.agent_id, slots
        route.reason = {**route.reason, **choice.reason}
        return


def _leave(engine: AssignmentEngine, route: _Route, outcomes: Outcomes, conflict: str) -> None:
    engine.count_conflict(conflict)
    outcomes[route.conversation_id] = None


async def _reserve(
    engine: AssignmentEngine, routes: list[_Route], outcomes: Outcomes, now: datetime
) -> list[_Route]:
    """Insert every reserved slot; a reservation that met a held slot leaves the batch
    (the held slot stays marked in the view, the others are free again)."""
    reserving = [r for r in routes if r.slots]
    if not reserving:
        return routes
    conflicts = await engine.store.reserve_many(
        [
            [
                Slot(s, str(r.agent_id), parse_slot(s)[1], r.conversation_id, r.base.seq, now)
                for s in r.slots
            ]
            for r in reserving
        ]
    )
    lost: set[str] = set()
    for route, conflict in zip(reserving, conflicts, strict=True):
        if conflict is not None:
            engine.directory.mark_free([s for s in route.slots if s != conflict])
            _leave(engine, route, outcomes, "slot")
            lost.add(route.conversation_id)
    return [r for r in routes if r.conversation_id not in lost]


async def _within_capacity(
    engine: AssignmentEngine, routes: list[_Route], outcomes: Outcomes
) -> list[_Route]:
    """Re-check every reservation against its agent's stored capacity (after the slot
    inserts, as ``AssignmentEngine._within_capacity``); refused ones give their slots
    back and leave the batch. Conservative within a batch: a slot above the capacity
    that this batch inserted and gives back still counts as held for the check."""
    holding = [r for r in routes if r.slots]
    if not holding:
        return routes
    agents = await engine.store.agents_by_id(sorted({str(r.agent_id) for r in holding}))
    for stored in agents.values():
        engine.directory.apply(stored)
    refused: set[str] = set()
    above: dict[str, list[str]] = {}
    for route in holding:
        agent = agents.get(str(route.agent_id))
        if agent is None:  # not persisted yet (its first event is still in flight)
            continue
        high = above_capacity(agent, route.base.channel, route.slots[0])
        if high is None:
            refused.add(route.conversation_id)
        elif high:
            above[route.conversation_id] = high
    if above:
        held = await engine.store.held_among(sorted({s for high in above.values() for s in high}))
        if held:
            engine.directory.mark_held(held)
            refused.update(c for c, high in above.items() if held.intersection(high))
    if not refused:
        return routes
    for route in holding:
        if route.conversation_id in refused:
            await _give_back(engine, route)
            _leave(engine, route, outcomes, "capacity")
    return [r for r in routes if r.conversation_id not in refused]


async def _claim(
    engine: AssignmentEngine, routes: list[_Route], outcomes: Outcomes, now: datetime
) -> list[Decision]:
    """Claim every conversation's next step; a lost claim gives its slots back and
    leaves the batch (another decision moved the conversation: re-read)."""
    decisions = []
    for route in routes:
        if route.agent_id is not None:
            state = engine.assigned_state(route.base, route.agent_id, route.slots, now)
            decisions.append(Decision(state, "assigned", route.reason, engine.new_token()))
        else:
            state, why = engine.waiting_state(route.base, now)
            reason = {**route.reason, "why": why}
            decisions.append(Decision(state, "queued", reason, engine.new_token()))
    if not decisions:
        return []
    won = await engine.store.claim_many(decisions)
    winners: list[Decision] = []
    for route, decision, ok in zip(routes, decisions, won, strict=True):
        if ok:
            winners.append(decision)
        else:
            if route.slots:
                await _give_back(engine, route)
            _leave(engine, route, outcomes, "decision")
    return winners


async def _give_back(engine: AssignmentEngine, route: _Route) -> None:
    """Release the route's own reservation (never a slot someone reserved since)."""
    await engine.store.release(route.slots, route.conversation_id, route.base.seq)
    engine.directory.mark_free(route.slots)
