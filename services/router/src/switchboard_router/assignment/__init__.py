"""The router's assignment by skill, priority and capacity.

Reads ``switchboard.router.conversation-activity.v1`` (from the timeline),
``support.conversation-events.v1``, ``support.sla-events.v1`` and
``support.agent-events.v1``; writes ``support.assignments.v1``. See
``services/router/README.md`` ("Assignment") for the design.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from switchboard_common.consumer import BatchConsumer, subscribe_batch
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    SLA_EVENTS,
    Priority,
)
from switchboard_common.logging import get_logger
from switchboard_common.settings import SettingsError
from switchboard_router.assignment.api import assignment_router
from switchboard_router.assignment.classify import Py3LangIdDetector
from switchboard_router.assignment.clock import Clock, SystemClock
from switchboard_router.assignment.consumers import (
    AgentStateHandler,
    AgentViewHandler,
    ConversationHandler,
    DecisionViewHandler,
    LoggedDeadLetters,
)
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.policy import PolicyError, load_policy
from switchboard_router.assignment.store import MongoAssignmentStore
from switchboard_router.metrics import AssignmentMetrics
from switchboard_router.stage import RouterContext, StageParts

log = get_logger(__name__)

#: Consumer groups (behind the deployment's topic prefix, like the topics).
GROUP_ASSIGNMENT = "router-assignment"
GROUP_AGENTS = "router-agents"
#: Per-replica groups: ``<name>.<replica id>``, reading from the end of the topic.
GROUP_AGENT_VIEW = "router-agents-view"
GROUP_DECISION_VIEW = "router-decisions-view"


def wire(ctx: RouterContext, *, clock: Clock | None = None) -> StageParts:
    """Wire assignment on the shared clients. Raises ``SettingsError`` for a bad policy."""
    settings = ctx.settings
    try:
        policy = load_policy(settings.routing_policy_file)
    except PolicyError as error:
        raise SettingsError(f"router: ROUTER_POLICY_FILE: {error}") from None
    clock = clock or SystemClock()
    store = MongoAssignmentStore(ctx.db)
    replica = settings.replica_id or uuid.uuid4().hex[:12]

    async def publish(items: Any) -> None:
        await ctx.publisher.publish_all(items)

    metrics = ctx.metrics.assignment
    engine = AssignmentEngine(
        store=store,
        policy=policy,
        clock=clock,
        publish=publish,
        detector=Py3LangIdDetector(),
        metrics=metrics,
        replica=replica,
    )
    prefix = settings.topic_prefix
    topics = settings.topics

    def consumer(handler: Any, group: str, *, view: bool = False) -> BatchConsumer:
        return BatchConsumer(
            topics=topics,
            handler=handler,
            dead_letters=LoggedDeadLetters() if view else ctx.dead_letters(group),
            metrics=ctx.metrics.consumer,
        )

    subscribe_batch(
        ctx.broker,
        consumer(ConversationHandler(engine, settings.assignment_concurrency), GROUP_ASSIGNMENT),
        topics=[CONVERSATION_ACTIVITY, CONVERSATION_EVENTS, SLA_EVENTS],
        group_id=prefix + GROUP_ASSIGNMENT,
        max_records=settings.batch_max_records,
        watch=ctx.consumers,
        title="assignment",
        description="Routes conversations: activity, agent work on them, SLA escalation.",
    )
    subscribe_batch(
        ctx.broker,
        consumer(AgentStateHandler(engine), GROUP_AGENTS),
        topics=[AGENT_EVENTS],
        group_id=prefix + GROUP_AGENTS,
        max_records=settings.batch_max_records,
        watch=ctx.consumers,
        title="agents",
        description="Persists agents; presence, capacity changes and offer answers.",
    )
    subscribe_batch(
        ctx.broker,
        consumer(AgentViewHandler(engine.directory), GROUP_AGENT_VIEW, view=True),
        topics=[AGENT_EVENTS],
        group_id=f"{prefix}{GROUP_AGENT_VIEW}.{replica}",
        name=GROUP_AGENT_VIEW,
        auto_offset_reset="latest",
        max_records=settings.batch_max_records,
        watch=ctx.consumers,
        title="agents-view",
        description="This replica's in-memory view of every agent.",
    )
    subscribe_batch(
        ctx.broker,
        consumer(DecisionViewHandler(engine), GROUP_DECISION_VIEW, view=True),
        topics=[ASSIGNMENTS],
        group_id=f"{prefix}{GROUP_DECISION_VIEW}.{replica}",
        name=GROUP_DECISION_VIEW,
        auto_offset_reset="latest",
        max_records=settings.batch_max_records,
        watch=ctx.consumers,
        title="decisions-view",
        description="This replica's in-memory view of the queue and the offers.",
    )

    async def start() -> None:
        await store.ensure_indexes()
        await engine.load()

    async def timers() -> None:
        await _every(settings.assignment_tick_seconds, engine.tick, "timers")

    async def refresh() -> None:
        grace = timedelta(seconds=settings.assignment_repair_after_seconds)

        async def once() -> None:
            await engine.load()
            await engine.repair(grace)
            await engine.rematch()

        await _every(settings.assignment_refresh_seconds, once, "refresh")

    async def gauges() -> None:
        await _every(1.0, lambda: _update_gauges(engine, metrics, clock), "gauges")

    return StageParts(
        routers=[assignment_router(store, clock)],
        on_start=[start],
        background=[timers, refresh, gauges],
        extras={"engine": engine, "store": store, "policy": policy, "replica": replica},
    )


async def _every(seconds: float, action: Callable[[], Awaitable[None]], name: str) -> None:
    """Run ``action`` every ``seconds`` until cancelled. A failing round (database or
    broker briefly away) is logged and retried next round: timers must outlive outages."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - keep the loop alive; the next round retries
            log.warning(
                "assignment loop round failed",
                loop=name,
                error_type=type(error).__name__,
                error=str(error)[:300],
            )


async def _update_gauges(
    engine: AssignmentEngine, metrics: AssignmentMetrics, clock: Clock
) -> None:
    now = clock.now()
    depth: dict[tuple[str, str], int] = {}
    oldest: dict[tuple[str, str], float] = {}
    for queue in engine.policy.queue_names:
        for priority in Priority:
            depth[(queue, str(priority))] = 0
            oldest[(queue, str(priority))] = 0.0
    for state in engine.queue.waiting.values():
        key = (state.queue, str(state.priority))
        depth[key] = depth.get(key, 0) + 1
        oldest[key] = max(oldest.get(key, 0.0), (now - state.waiting_since).total_seconds())
    for key, value in depth.items():
        metrics.queue_depth.labels(*key).set(value)
        metrics.queue_oldest_age.labels(*key).set(oldest[key])
    for channel, (load, capacity, online) in engine.directory.totals().items():
        metrics.agent_load.labels(channel).set(load)
        metrics.agent_capacity.labels(channel).set(capacity)
        metrics.agents_online.labels(channel).set(online)
