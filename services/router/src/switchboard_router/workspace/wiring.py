"""The workspace's writes and live stream on the router's shared clients: what the shell
(``switchboard_router.app``) serves, subscribes and runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter

from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.publishing import DurablePublisher
from switchboard_router.assignment.store import AssignmentStore
from switchboard_router.context import RouterContext
from switchboard_router.timeline import utcnow
from switchboard_router.timeline.ports import TimelineStore
from switchboard_router.workspace.live import LiveFeed, LiveHub
from switchboard_router.workspace.requests_store import MongoRequestStore
from switchboard_router.workspace.stream import stream_router
from switchboard_router.workspace.write_api import WriteDesk, write_router

log = get_logger(__name__)


@dataclass
class WorkspaceWrites:
    """The write routes and the live stream: routers, the consumer handler, the hub, and
    the sweep of request ids past retention."""

    api: Sequence[APIRouter]
    live: LiveFeed
    hub: LiveHub
    forget_old_requests: Callable[[], Awaitable[None]]


def build_writes(
    ctx: RouterContext, *, timeline: TimelineStore, routes: AssignmentStore
) -> WorkspaceWrites:
    settings = ctx.settings
    # Every request's retry publishes again (remember=0): the record of a request id
    # cannot tell a refused send from an acknowledged one, and consumers deduplicate.
    durable = DurablePublisher(
        ctx.broker,
        ctx.publisher,
        settings.topics,
        timeout=settings.workspace_publish_timeout_seconds,
        remember=0,
    )

    async def publish(item: Outgoing) -> None:
        await durable.publish([item])

    async def conversation_exists(conversation_id: str) -> bool:
        return await timeline.get_conversation(conversation_id) is not None

    hub = LiveHub(settings.live_queue_size, ctx.metrics.live)
    requests = MongoRequestStore(ctx.db)
    retention = timedelta(days=settings.workspace_request_retention_days)

    async def forget_old_requests() -> None:
        forgotten = await requests.forget_before(utcnow() - retention)
        if forgotten:
            log.info("workspace request ids past retention forgotten", requests=forgotten)

    desk = WriteDesk(
        requests,
        publish,
        conversation_exists=conversation_exists,
        route_of=routes.head,
        clock=utcnow,
    )
    return WorkspaceWrites(
        api=[write_router(desk), stream_router(hub, heartbeat=settings.live_heartbeat_seconds)],
        live=LiveFeed(hub, routes.heads_of),
        hub=hub,
        forget_old_requests=forget_old_requests,
    )
