"""Identity resolution and the unified timeline, the router's first two steps.

Reads ``support.inbound.v1`` (group ``router-identity``), writes and reads
``switchboard.router.customer-messages.v1`` (group ``router-timeline``), reads
``support.conversation-events.v1`` (group ``router-timeline-state``) and writes
``switchboard.router.conversation-activity.v1``. Consumer groups carry the deployment's
topic prefix, like the topics. See ``services/router/README.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from switchboard_common.consumer import BatchConsumer, Handler, subscribe_batch
from switchboard_common.contract import CONVERSATION_EVENTS, CUSTOMER_MESSAGES, INBOUND
from switchboard_router.stage import RouterContext, StageParts
from switchboard_router.timeline.admin import CustomerDirectory
from switchboard_router.timeline.api import admin_router, read_router
from switchboard_router.timeline.apply import TimelineStage
from switchboard_router.timeline.mongo import MongoIdentityStore, MongoTimelineStore, ensure_indexes
from switchboard_router.timeline.raw_mail import MongoRawMail
from switchboard_router.timeline.resolve import IdentityResolver, IdentityStage
from switchboard_router.timeline.status import StatusForwarder
from switchboard_router.timeline.threading import Policy

GROUP_IDENTITY = "router-identity"
GROUP_TIMELINE = "router-timeline"
GROUP_STATE = "router-timeline-state"


def utcnow() -> datetime:
    return datetime.now(UTC)


def wire(ctx: RouterContext) -> StageParts:
    """Wire identity resolution, the timeline, the status forwarder, the read and admin
    API on the shared clients; indexes are created before the broker starts."""
    settings = ctx.settings
    metrics = ctx.metrics.timeline
    identities = MongoIdentityStore(ctx.db)
    timeline = MongoTimelineStore(ctx.db)
    raw_mail = MongoRawMail(ctx.db)
    policy = Policy(
        reopen_window=settings.reopen_window,
        social_inactivity_window=settings.social_inactivity_window,
        email_subject_window=settings.email_subject_window,
        email_split_by_sender=settings.email_split_by_sender,
    )
    resolver = IdentityResolver(
        identities,
        clock=utcnow,
        metrics=metrics,
        ttl=settings.identity_cache_seconds,
        size=settings.identity_cache_size,
    )
    identity_stage = IdentityStage(resolver, ctx.publisher, clock=utcnow)
    timeline_stage = TimelineStage(
        timeline,
        ctx.publisher,
        resolver,
        raw_mail=raw_mail,
        policy=policy,
        clock=utcnow,
        metrics=metrics,
        cache_size=settings.timeline_cache_size,
    )
    forwarder = StatusForwarder(timeline, ctx.publisher, metrics)
    consumers: list[tuple[Handler, str, str, str]] = [
        (identity_stage, INBOUND, GROUP_IDENTITY, "Identity: sender identity to customer"),
        (timeline_stage, CUSTOMER_MESSAGES, GROUP_TIMELINE, "Timeline: thread and store"),
        (forwarder, CONVERSATION_EVENTS, GROUP_STATE, "Conversation status for threading"),
    ]
    for handler, topic, group, title in consumers:
        group_id = settings.topic_prefix + group
        subscribe_batch(
            ctx.broker,
            BatchConsumer(
                topics=settings.topics,
                handler=handler,
                dead_letters=ctx.dead_letters(group_id),
                metrics=ctx.metrics.consumer,
            ),
            topics=[topic],
            group_id=group_id,
            max_records=settings.batch_max_records,
            watch=ctx.consumers,
            title=f"{group_id}:{settings.topics(topic)}",
            description=title,
        )
    directory = CustomerDirectory(
        identities, timeline, ctx.publisher, raw_mail=raw_mail, clock=utcnow, metrics=metrics
    )

    async def create_indexes() -> None:
        await ensure_indexes(ctx.db)

    return StageParts(
        routers=[read_router(directory, timeline, settings), admin_router(directory)],
        on_start=[create_indexes],
        extras={
            "identities": identities,
            "timeline": timeline,
            "directory": directory,
            "timeline_stage": timeline_stage,
        },
    )
