"""Identity resolution and the unified timeline, the router's first two steps: the
handlers the shell (``switchboard_router.app``) subscribes, the read and admin API.
See ``services/router/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter

from switchboard_common.settings import SettingsError
from switchboard_router.acknowledgements import Acknowledgements
from switchboard_router.context import RouterContext
from switchboard_router.settings import RouterSettings
from switchboard_router.surveys import Surveys
from switchboard_router.timeline.admin import CustomerDirectory
from switchboard_router.timeline.api import (
    ConversationExtras,
    CustomerSearch,
    admin_router,
    read_router,
)
from switchboard_router.timeline.apply import QueueOf, Route, TimelineStage
from switchboard_router.timeline.mongo import MongoIdentityStore, MongoTimelineStore, ensure_indexes
from switchboard_router.timeline.raw_mail import MongoRawMail
from switchboard_router.timeline.replies import AcknowledgementPolicy, ReplyPlanner
from switchboard_router.timeline.resolve import IdentityResolver, IdentityStage
from switchboard_router.timeline.status import StatusForwarder
from switchboard_router.timeline.survey_store import MongoSurveyStore
from switchboard_router.timeline.surveyor import Surveyor
from switchboard_router.timeline.surveys import SurveyPolicy
from switchboard_router.timeline.threading import Policy

if TYPE_CHECKING:  # the workspace's store is handed in; imported for types only
    from switchboard_router.workspace.activity_store import ActivityStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Timeline:
    """Identity resolution and the timeline on the shared clients."""

    ctx: RouterContext
    #: Sender identity → customer; re-keys each message by customer.
    identity: IdentityStage
    #: Threads and stores each customer's messages in order; publishes activity and
    #: hands it to routing.
    timeline: TimelineStage
    #: Frontends' resolve/reopen, forwarded in order with the customer's messages.
    status: StatusForwarder
    #: Frontends' requested replies, addressed for the service that speaks the channel.
    replies: ReplyPlanner
    identities: MongoIdentityStore
    store: MongoTimelineStore
    directory: CustomerDirectory
    api: Sequence[APIRouter]
    #: Surveys after resolutions (None: the routing policy has none); ``send_due`` is
    #: the shell's loop.
    surveyor: Surveyor | None = None

    async def create_indexes(self) -> None:
        await ensure_indexes(self.ctx.db)
        if self.surveyor is not None:
            await self.surveyor.store.ensure_indexes()


#: The settings the routing policy's ``acknowledgements`` section replaces.
ACKNOWLEDGEMENT_SETTINGS = (
    "acknowledge_channels",
    "acknowledgement_text",
    "acknowledgement_window",
)


def acknowledgement_policy(
    settings: RouterSettings, section: Acknowledgements | None
) -> AcknowledgementPolicy | None:
    """The policy's rules when it has them, else the settings' channels and text; both at
    once would leave one of them silently ignored, so that is refused."""
    if section is not None:
        overridden = [
            f"ROUTER_{name.upper()}"
            for name in ACKNOWLEDGEMENT_SETTINGS
            if name in settings.model_fields_set
        ]
        if overridden:
            raise SettingsError(
                "router: the routing policy's acknowledgements replace "
                f"{', '.join(overridden)}; set one or the other"
            )
    try:
        if section is not None:
            return AcknowledgementPolicy.of(section)
        if not settings.acknowledged_channels:
            return None
        return AcknowledgementPolicy.of_channels(
            settings.acknowledged_channels,
            settings.acknowledgement_text,
            settings.acknowledgement_window,
        )
    except ValueError as error:
        raise SettingsError(f"router: acknowledgements: {error}") from None


def survey_policy(section: Surveys | None) -> SurveyPolicy | None:
    """The policy's surveys, checked against the channels' text limits at start."""
    if section is None:
        return None
    try:
        return SurveyPolicy.of(section)
    except ValueError as error:
        raise SettingsError(f"router: surveys: {error}") from None


def build(
    ctx: RouterContext,
    *,
    activity: ActivityStore,
    route: Route | None = None,
    acknowledgements: Acknowledgements | None = None,
    queue_of: QueueOf | None = None,
    surveys: Surveys | None = None,
    conversation_extras: ConversationExtras,
    customer_search: CustomerSearch,
) -> Timeline:
    """Identity resolution, the timeline, the status forwarder and the read and admin API
    on the shared clients; ``route`` takes the customer messages each batch stored;
    ``acknowledgements`` is the routing policy's section (None: the settings decide),
    ``surveys`` its surveys (None: none); ``activity`` holds the agent-side items the read
    API merges into the timeline and erasure redacts; ``conversation_extras`` and
    ``customer_search`` are the workspace's parts of the read API."""
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
    surveying = survey_policy(surveys)
    surveyor = None
    if surveying is not None:
        surveyor = Surveyor(
            MongoSurveyStore(ctx.db),
            timeline,
            ctx.publisher,
            policy=surveying,
            threading=policy,
            clock=utcnow,
            metrics=metrics,
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
        route=route,
        cache_size=settings.timeline_cache_size,
        acknowledgements=acknowledgement_policy(settings, acknowledgements),
        queue_of=queue_of,
        surveyor=surveyor,
    )
    forwarder = StatusForwarder(timeline, ctx.publisher, metrics)
    directory = CustomerDirectory(
        identities,
        timeline,
        ctx.publisher,
        raw_mail=raw_mail,
        activity=activity,
        clock=utcnow,
        metrics=metrics,
    )
    return Timeline(
        ctx=ctx,
        identity=identity_stage,
        timeline=timeline_stage,
        status=forwarder,
        replies=ReplyPlanner(timeline, ctx.publisher, clock=utcnow),
        identities=identities,
        store=timeline,
        directory=directory,
        api=[
            read_router(
                directory,
                timeline,
                settings,
                activity,
                extras=conversation_extras,
                search=customer_search,
            ),
            admin_router(directory),
        ],
        surveyor=surveyor,
    )
