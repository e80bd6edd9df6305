"""The router's assignment by skill, priority and capacity: the engine and the handlers
the shell (``switchboard_router.app``) subscribes, with its timer and refresh rounds.

See ``services/router/README.md`` ("Assignment") for the design.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter

from switchboard_common.agent_groups import AgentGroupsError, load_agent_groups
from switchboard_common.contract import ConversationActivity, Priority
from switchboard_common.settings import SettingsError
from switchboard_router.assignment.api import assignment_router
from switchboard_router.assignment.classify import Py3LangIdDetector, classify, queue_for
from switchboard_router.assignment.clock import Clock, SystemClock
from switchboard_router.assignment.consumers import (
    AgentStateHandler,
    AgentViewHandler,
    ConversationHandler,
)
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.figures import AgentFigures
from switchboard_router.assignment.policy import PolicyError, RoutingPolicy, load_policy
from switchboard_router.assignment.store import MongoAssignmentStore
from switchboard_router.context import RouterContext
from switchboard_router.metrics import AssignmentMetrics


@dataclass
class Assignment:
    """Assignment on the shared clients: what the shell subscribes, runs and serves."""

    engine: AssignmentEngine
    store: MongoAssignmentStore
    policy: RoutingPolicy
    clock: Clock
    conversations: ConversationHandler
    agents: AgentStateHandler
    agents_view: AgentViewHandler
    api: APIRouter
    repair_after: timedelta

    def queue_of(self, activity: ConversationActivity) -> tuple[str, str | None]:
        """The queue a conversation's message goes to and its language, as deciding
        classifies it (a message nobody waits on is never routed: the overflow queue,
        no language)."""
        classified = classify(activity, self.policy, self.engine.detector)
        if classified is None:
            return self.policy.overflow.name, None
        return queue_for(activity, classified, self.policy).name, classified.language

    @property
    def replica(self) -> str:
        """Names this replica's own consumer group (``<group>.<replica>``)."""
        return self.engine.replica

    async def start(self) -> None:
        """Before the broker starts: indexes, then this replica's views."""
        await self.store.ensure_indexes()
        await self.engine.load()

    async def refresh(self) -> None:
        """Views re-read from the database, crashed replicas' slots repaired, and a
        re-match pass behind the event-driven path."""
        await self.engine.load()
        await self.engine.repair(self.repair_after)
        await self.engine.rematch()

    async def gauges(self) -> None:
        await update_gauges(self.engine)


def build(ctx: RouterContext, *, clock: Clock | None = None) -> Assignment:
    """Assignment on the shared clients. Raises ``SettingsError`` for a bad policy."""
    settings = ctx.settings
    try:
        policy = load_policy(settings.routing_policy_file)
    except PolicyError as error:
        raise SettingsError(f"router: ROUTER_POLICY_FILE: {error}") from None
    try:
        groups = load_agent_groups(settings.agent_groups_file)
    except AgentGroupsError as error:
        raise SettingsError(f"router: SWITCHBOARD_AGENT_GROUPS_FILE: {error}") from None
    clock = clock or SystemClock()
    store = MongoAssignmentStore(ctx.db)

    async def publish(items: Any) -> None:
        await ctx.publisher.publish_all(items)

    engine = AssignmentEngine(
        store=store,
        policy=policy,
        clock=clock,
        publish=publish,
        detector=Py3LangIdDetector(),
        metrics=ctx.metrics.assignment,
        figures=AgentFigures(ctx.metrics.agents, groups),
        replica=settings.replica_id or uuid.uuid4().hex[:12],
    )
    return Assignment(
        engine=engine,
        store=store,
        policy=policy,
        clock=clock,
        conversations=ConversationHandler(engine, settings.assignment_concurrency),
        agents=AgentStateHandler(engine),
        agents_view=AgentViewHandler(engine.directory),
        api=assignment_router(store, clock),
        repair_after=timedelta(seconds=settings.assignment_repair_after_seconds),
    )


async def update_gauges(engine: AssignmentEngine) -> None:
    """Queue and load gauges from the database, so every replica reports the same
    deployment (two aggregations, and one indexed read per non-empty queue and
    priority); agents' presence and capacity from this replica's agent view, per
    channel and per agent group."""
    metrics = engine.metrics
    if metrics is None:
        return
    queues = await engine.store.queue_summary()
    held = await engine.store.load_summary()
    _set_gauges(engine, metrics, engine.clock.now(), queues, held)


def _set_gauges(
    engine: AssignmentEngine,
    metrics: AssignmentMetrics,
    now: datetime,
    queues: Sequence[tuple[str, str, int, datetime]],
    held: Mapping[tuple[str, str], int],
) -> None:
    depth: dict[tuple[str, str], int] = {}
    oldest: dict[tuple[str, str], float] = {}
    for queue in engine.policy.queue_names:
        for priority in Priority:
            depth[(queue, str(priority))] = 0
            oldest[(queue, str(priority))] = 0.0
    for queue, level, count, since in queues:
        depth[(queue, level)] = count
        oldest[(queue, level)] = max(0.0, (now - since).total_seconds())
    for key, value in depth.items():
        metrics.queue_depth.labels(*key).set(value)
        metrics.queue_oldest_age.labels(*key).set(oldest[key])
    for channel, (load, capacity, online) in engine.directory.totals(held).items():
        metrics.agent_load.labels(channel).set(load)
        metrics.agent_capacity.labels(channel).set(capacity)
        metrics.agents_online.labels(channel).set(online)
    figures = engine.executor.figures
    if figures is not None:
        figures.show_occupancy(engine.directory.online_agents(), held)
