"""The router's transport shell: every topic, consumer group, loop and HTTP route the
router has is named here; identity, timeline and assignment only hand over handlers.

| group (behind ``SWITCHBOARD_TOPIC_PREFIX``) | reads | handler |
|---|---|---|
| ``router-identity`` | ``support.inbound.v1`` | sender identity → customer, re-keyed |
| ``router-timeline`` | ``switchboard.router.customer-messages.v1`` | thread, store, route |
| ``router-timeline-state`` | ``support.conversation-events.v1`` | status for threading |
| ``router-replies`` | ``support.outbound.v1`` | requested replies, addressed |
| ``router-timeline-activity`` | conversation events, outbound, assignments | agents' work items |
| ``router-assignment`` | conversation events, SLA events | routing decisions |
| ``router-agents`` | ``support.agent-events.v1`` | agents persisted; presence, offers |
| ``router-agents-view.<replica>`` | ``support.agent-events.v1`` | this replica's agents |
| ``router-workspace-live.<replica>`` | assignments, activity, outbound, conv. events | live |

``router-timeline-activity`` also reads the router's own reply deliveries (the texts of
acknowledgements and surveys) and stores items in ``timeline_activity``.

Loops: assignment timers (``ROUTER_ASSIGNMENT_TICK_SECONDS``), refresh/repair/re-match
(``ROUTER_ASSIGNMENT_REFRESH_SECONDS``), queue and agent gauges (``ROUTER_GAUGES_SECONDS``),
due surveys (``ROUTER_SURVEY_TICK_SECONDS``, when the routing policy has ``surveys``),
consumer lag, the live streams' hub. Survey ratings go to ``support.feedback.v1``.
Routes: the timeline read and admin API, ``/queue`` and ``/agents``, the workspace's reads
(``/agents/{agent_id}/conversations``, ``/conversations``), ``/me`` and
``/admin/agents/{agent_id}/tokens`` (sign-in), the workspace's writes (agent events,
conversation events and reply requests) and ``/agents/{agent_id}/events`` (live), the
agent console (``/console``, static), ``/healthz``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI

from switchboard_common.consumer import BatchConsumer, Handler, subscribe_batch
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    CUSTOMER_MESSAGES,
    DEADLETTER,
    FEEDBACK,
    INBOUND,
    OUTBOUND,
    REPLY_DELIVERIES,
    SLA_EVENTS,
)
from switchboard_common.http import instrument, kafka_ready, mongo_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.logging import get_logger
from switchboard_common.metrics import service_registry
from switchboard_common.mongo import database, make_mongo_client
from switchboard_common.progress import ConsumerWatch
from switchboard_common.service import BackgroundTask, Runtime
from switchboard_router import assignment, timeline
from switchboard_router.access import BearerAuth, Keyring, document_security
from switchboard_router.assignment.consumers import LoggedDeadLetters
from switchboard_router.console import console_router
from switchboard_router.context import RouterContext
from switchboard_router.metrics import RouterMetrics
from switchboard_router.settings import RouterSettings
from switchboard_router.sign_in import sign_in_router
from switchboard_router.token_revocations import MongoRevocationStore, RevokedTokens
from switchboard_router.workspace.activity_store import MongoActivityStore
from switchboard_router.workspace.read_api import read_router as workspace_read_router
from switchboard_router.workspace.read_api import workspace_reads
from switchboard_router.workspace.recorder import ActivityRecorder
from switchboard_router.workspace.wiring import WorkspaceWrites, build_writes

log = get_logger(__name__)

#: Every topic the router writes (declared on its broker: the AsyncAPI document's sends).
PUBLISHED_TOPICS = (
    ASSIGNMENTS,
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    CUSTOMER_MESSAGES,
    CONVERSATION_ACTIVITY,
    REPLY_DELIVERIES,
    OUTBOUND,
    FEEDBACK,
    DEADLETTER,
)

#: Consumer groups (behind the deployment's topic prefix, like the topics).
GROUP_IDENTITY = "router-identity"
GROUP_TIMELINE = "router-timeline"
GROUP_STATE = "router-timeline-state"
GROUP_REPLIES = "router-replies"
GROUP_ASSIGNMENT = "router-assignment"
GROUP_AGENTS = "router-agents"
#: The timeline's agent-side items. It reads the router's own decisions and reply
#: deliveries too, as a record of what happened for people: routing never reads them
#: back (replicas learn each other's decisions from the database, ``assignment.engine``).
GROUP_ACTIVITY = "router-timeline-activity"
#: Per-replica groups: ``<name>.<replica id>``, reading from the end of the topic. No
#: group decides on the router's own output: replicas learn each other's decisions from
#: the database (``assignment.engine``); the live group only tells consoles about them.
GROUP_AGENT_VIEW = "router-agents-view"
GROUP_WORKSPACE_LIVE = "router-workspace-live"

#: How often request ids and token revocations past their use are swept (a few a day
#: would do).
SWEEP_SECONDS = 3600.0


@dataclass
class Router:
    """One router process, assembled: what tests reach into."""

    runtime: Runtime
    ctx: RouterContext
    timeline: timeline.Timeline
    assignment: assignment.Assignment
    activity: ActivityRecorder
    workspace: WorkspaceWrites


def build(settings: RouterSettings) -> Router:
    """Assemble the router: clients, subscriptions, loops and the HTTP app."""
    registry = service_registry(settings.service_name)
    broker = make_broker(settings)
    client = make_mongo_client(settings)
    metrics = RouterMetrics.create(registry)
    consumers = ConsumerWatch(
        metrics.consumer,
        stall_after=settings.consumer_stall_seconds,
        interval=settings.consumer_lag_interval_seconds,
    )
    ctx = RouterContext(
        settings=settings,
        broker=broker,
        client=client,
        db=database(client, settings),
        publisher=EventPublisher(
            broker, settings.topics, settings.service_name, publishes=PUBLISHED_TOPICS
        ),
        registry=registry,
        metrics=metrics,
        consumers=consumers,
    )
    routing = assignment.build(ctx)
    reads = workspace_reads(ctx, routing.store, routing.clock)
    activity = MongoActivityStore(ctx.db)
    # The timeline routes what it stores in its own batch: no hop through Kafka between
    # a stored message and its decision.
    people = timeline.build(
        ctx,
        activity=activity,
        route=routing.conversations.route_messages,
        acknowledgements=routing.policy.acknowledgements,
        queue_of=routing.queue_of,
        surveys=routing.policy.surveys,
        conversation_extras=reads.conversation_extras,
        customer_search=reads.search_customers,
    )
    recorder = ActivityRecorder(people.store, activity, ctx.metrics.timeline)
    writes = build_writes(ctx, timeline=people.store, routes=routing.store)
    for subscription in subscriptions(settings, people, routing, recorder, writes):
        _subscribe(ctx, subscription, routing.replica)

    app = FastAPI(
        title="Switchboard router",
        version="1.0",
        description="Read API of the unified timeline, the queue and the agents, and the "
        "agent workspace's writes and live stream. Every route needs `Authorization: "
        "Bearer <token>`: ROUTER_READ_TOKEN for the read routes, ROUTER_ADMIN_TOKEN for "
        "/admin/... and the read routes, an agent token for the read routes and the writes.",
        # The interactive pages cannot send a bearer token; /openapi.json (read token)
        # and docs/openapi/router.json describe the API.
        docs_url=None,
        redoc_url=None,
    )
    agent_tokens = settings.agent_tokens()
    revoked = RevokedTokens(MongoRevocationStore(ctx.db), timeline.utcnow)
    app.add_middleware(
        BearerAuth,
        keyring=Keyring.of(
            read=settings.read_token,
            admin=settings.admin_token,
            agents=agent_tokens,
            revoked=revoked.refuses,
        ),
    )
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return document_security(plain_openapi())

    app.openapi = openapi  # type: ignore[method-assign]
    instrument(app, registry=registry, service=settings.service_name)
    app.include_router(
        ops_router(
            registry=registry,
            checks=[kafka_ready(broker), mongo_ready(client)],
            liveness=[consumers.liveness_check()],
        )
    )
    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
        on_start=[
            people.create_indexes,
            activity.ensure_indexes,
            routing.start,
            reads.ensure_indexes,
            revoked.refresh,
        ],
        background=[
            consumers.run,
            writes.hub.run,
            _every(settings.assignment_tick_seconds, routing.engine.tick, "timers"),
            _every(settings.assignment_refresh_seconds, routing.refresh, "refresh"),
            _every(settings.gauges_seconds, routing.gauges, "gauges"),
            _every(SWEEP_SECONDS, writes.forget_old_requests, "workspace-requests"),
            _every(SWEEP_SECONDS, revoked.forget_old, "revocations-sweep"),
            _every(settings.agent_revocation_refresh_seconds, revoked.refresh, "revocations"),
            *(
                [_every(settings.survey_tick_seconds, people.surveyor.send_due, "surveys")]
                if people.surveyor is not None
                else []
            ),
        ],
    )
    api = [*people.api, routing.api, workspace_read_router(reads, settings), *writes.api]
    for router in [*api, sign_in_router(agent_tokens, revoked, timeline.utcnow)]:
        app.include_router(router)
    app.include_router(console_router())

    async def close_client() -> None:
        await client.close()

    runtime.on_stop.append(close_client)
    return Router(runtime, ctx, people, routing, recorder, writes)


@dataclass(frozen=True)
class Subscription:
    """One consumer group of the router: the topics it reads and the handler it runs."""

    group: str
    topics: tuple[str, ...]
    handler: Handler
    title: str
    description: str
    #: A per-replica view (``<group>.<replica>``): reads from the end and only logs bad
    #: records, because the group that owns the topic dead-letters them once.
    replica_view: bool = False


def subscriptions(
    settings: RouterSettings,
    people: timeline.Timeline,
    routing: assignment.Assignment,
    activity: ActivityRecorder,
    writes: WorkspaceWrites,
) -> list[Subscription]:
    """Every consumer group of the router, with its topics and handler."""

    def titled(group: str, topic: str) -> str:
        return f"{settings.topic_prefix}{group}:{settings.topics(topic)}"

    return [
        Subscription(
            GROUP_IDENTITY,
            (INBOUND,),
            people.identity,
            titled(GROUP_IDENTITY, INBOUND),
            "Identity: sender identity to customer",
        ),
        Subscription(
            GROUP_TIMELINE,
            (CUSTOMER_MESSAGES,),
            people.timeline,
            titled(GROUP_TIMELINE, CUSTOMER_MESSAGES),
            "Timeline: thread, store and route",
        ),
        Subscription(
            GROUP_STATE,
            (CONVERSATION_EVENTS,),
            people.status,
            titled(GROUP_STATE, CONVERSATION_EVENTS),
            "Conversation status for threading",
        ),
        Subscription(
            GROUP_REPLIES,
            (OUTBOUND,),
            people.replies,
            titled(GROUP_REPLIES, OUTBOUND),
            "Requested replies: addressed for the channel's sender, or failed with the reason",
        ),
        Subscription(
            GROUP_ACTIVITY,
            (CONVERSATION_EVENTS, OUTBOUND, ASSIGNMENTS, REPLY_DELIVERIES),
            activity,
            "timeline-activity",
            "Agent-side activity (replies, acknowledgements, surveys, deliveries, "
            "assignments, transfers, resolutions, notes) stored as timeline items",
        ),
        Subscription(
            GROUP_ASSIGNMENT,
            (CONVERSATION_EVENTS, SLA_EVENTS),
            routing.conversations,
            "assignment",
            "Agent work on conversations (resolve, reopen, transfer, reply) and SLA escalation.",
        ),
        Subscription(
            GROUP_AGENTS,
            (AGENT_EVENTS,),
            routing.agents,
            "agents",
            "Persists agents; presence, capacity changes and offer answers.",
        ),
        Subscription(
            GROUP_AGENT_VIEW,
            (AGENT_EVENTS,),
            routing.agents_view,
            "agents-view",
            "This replica's in-memory view of every agent.",
            replica_view=True,
        ),
        Subscription(
            GROUP_WORKSPACE_LIVE,
            (ASSIGNMENTS, CONVERSATION_ACTIVITY, OUTBOUND, CONVERSATION_EVENTS),
            writes.live,
            "workspace-live",
            "Agents' live streams on this replica: offers, assignments, customer messages, "
            "delivery statuses and notes of the conversations they hold.",
            replica_view=True,
        ),
    ]


def _subscribe(ctx: RouterContext, subscription: Subscription, replica: str) -> None:
    settings = ctx.settings
    group_id = settings.topic_prefix + subscription.group
    view = subscription.replica_view
    offset_reset: Literal["latest", "earliest"] = "latest" if view else "earliest"
    subscribe_batch(
        ctx.broker,
        BatchConsumer(
            topics=settings.topics,
            handler=subscription.handler,
            dead_letters=LoggedDeadLetters() if view else ctx.dead_letters(group_id),
            metrics=ctx.metrics.consumer,
        ),
        topics=list(subscription.topics),
        group_id=f"{group_id}.{replica}" if view else group_id,
        name=subscription.group if view else None,
        auto_offset_reset=offset_reset,
        max_records=settings.batch_max_records,
        watch=ctx.consumers,
        title=subscription.title,
        description=subscription.description,
    )


def _every(seconds: float, action: Callable[[], Awaitable[None]], name: str) -> BackgroundTask:
    """A loop running ``action`` every ``seconds`` until cancelled. A failing round
    (database or broker briefly away) is logged and retried next round: timers must
    outlive outages."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - keep the loop alive; next round retries
                log.warning(
                    "router loop round failed",
                    loop=name,
                    error_type=type(error).__name__,
                    error=str(error)[:300],
                )

    return loop
