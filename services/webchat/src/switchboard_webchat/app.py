"""webchat's shell: the one place that wires settings, Kafka, the database, HTTP and
metrics.

Serves ``/chat/widget.js``, ``/chat/demo``, the widget's WebSocket ``/chat/socket`` plus
``/healthz``, ``/readyz`` (Kafka and the database reachable) and ``/metrics``.

Writes visitors' messages to ``support.inbound.v1`` (``support.message.received``, keyed
by sender identity, CloudEvents id = ``message_id``) and, when the widget has shown a
reply, ``support.delivery.updated`` ``delivered`` to ``support.outbound.v1``.

Replies: group ``webchat-replies`` reads ``switchboard.router.reply-deliveries.v1``
(orders on webchat), stores each in its visitor's mailbox (``webchat_mailbox``, records
in ``webchat_replies``) and writes ``support.outbound.v1``,
``support.conversation-events.v1`` and refusals to ``support.deadletter.v1``. Every
replica pushes new mailbox entries to its open sockets (``hub``). With
``WEBCHAT_EMAIL_FALLBACK_SECONDS``, a vouched visitor's reply not shown in time is also
ordered by email on ``switchboard.router.reply-deliveries.v1`` (``fallback``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from switchboard_common.contract import INBOUND, REPLY_DELIVERIES
from switchboard_common.http import instrument, kafka_ready, mongo_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.metrics import service_registry
from switchboard_common.mongo import database, make_mongo_client
from switchboard_common.outbound_shell import REPLY_PUBLISHES, ReplyConsumer, subscribe_replies
from switchboard_common.publishing import DurablePublisher
from switchboard_common.service import BackgroundTask, Runtime
from switchboard_webchat.chat import ChatPolicy, ChatSockets
from switchboard_webchat.fallback import EmailFallback
from switchboard_webchat.hub import Hub
from switchboard_webchat.limits import ConnectionCounter, SendLimiter
from switchboard_webchat.mailbox import Mailboxes
from switchboard_webchat.metrics import WebchatMetrics
from switchboard_webchat.replies import WebchatSender
from switchboard_webchat.routes import chat_router
from switchboard_webchat.settings import WebchatSettings

#: The consumer group that stores replies (behind ``SWITCHBOARD_TOPIC_PREFIX``).
GROUP_REPLIES = "webchat-replies"
#: The reply records of the shared dispatcher, one per reply_id.
REPLIES = "webchat_replies"
#: The visitors' mailboxes (and ``webchat_mailbox_seq``, their seq slots,
#: ``webchat_mailbox_by_seq``, ``webchat_mailbox_top`` and ``webchat_mailbox_claims``).
MAILBOX = "webchat_mailbox"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Webchat:
    """What ``build`` assembled (tests look inside)."""

    settings: WebchatSettings
    registry: CollectorRegistry
    metrics: WebchatMetrics
    mailboxes: Mailboxes
    hub: Hub
    app: FastAPI
    #: The email copies of unseen replies (None unless WEBCHAT_EMAIL_FALLBACK_SECONDS).
    fallback: EmailFallback | None = None


def build(
    settings: WebchatSettings, *, clock: Callable[[], datetime] = _utcnow
) -> tuple[Runtime, Webchat]:
    """Assemble the service (``load()`` guarantees the secrets)."""
    if settings.token_secret is None or settings.identity_secret is None:
        raise ValueError("WEBCHAT_TOKEN_SECRET and WEBCHAT_IDENTITY_SECRET must be set")
    registry = service_registry(settings.service_name)
    metrics = WebchatMetrics.create(registry)
    broker = make_broker(settings)
    # Sockets publish messages and delivered statuses; the replies' consumer publishes
    # statuses, support.reply.sent and dead letters.
    fallback_on = settings.email_fallback_seconds is not None
    # With the email fallback on, copies of unseen replies go to the email channel's
    # sender as orders of their own.
    copies = [REPLY_DELIVERIES] if fallback_on else []
    events = EventPublisher(
        broker,
        settings.topics,
        settings.service_name,
        publishes=[INBOUND, *copies, *REPLY_PUBLISHES],
    )
    durable = DurablePublisher(
        broker,
        events,
        settings.topics,
        timeout=settings.publish_timeout_seconds,
        metrics=metrics.publish,
    )
    client = make_mongo_client(settings)
    db = database(client, settings)
    mailboxes = Mailboxes(db, MAILBOX)
    hub = Hub(mailboxes, metrics, interval=settings.poll_interval_seconds)
    sender = WebchatSender(
        mailboxes,
        site=settings.site_id,
        stored=hub.deliver,
        clock=clock,
        email_fallback=timedelta(seconds=settings.email_fallback_seconds)
        if settings.email_fallback_seconds is not None
        else None,
    )
    background: list[BackgroundTask] = [hub.run]
    fallback = None
    if settings.email_fallback_seconds is not None and settings.email_fallback_from:
        fallback = EmailFallback(
            mailboxes,
            durable,
            sender=settings.email_fallback_from,
            interval=settings.poll_interval_seconds,
            clock=clock,
        )
        background.append(fallback.run)
    _, watch = subscribe_replies(
        ReplyConsumer(
            group=GROUP_REPLIES,
            topic=REPLY_DELIVERIES,
            collection=REPLIES,
            description="Agent replies to web chat visitors, stored in their mailboxes once "
            "per reply_id.",
            max_records=settings.replies_batch_max_records,
            backoff=settings.outbound_retry_seconds,
        ),
        sender,
        settings=settings,
        broker=broker,
        db=db,
        registry=registry,
        clock=clock,
        publisher=events,
    )
    sockets = ChatSockets(
        ChatPolicy(
            site=settings.site_id,
            origins=frozenset(settings.allowed_origins),
            token_secret=settings.token_secret.get_secret_value().encode(),
            identity_secret=settings.identity_secret.get_secret_value().encode(),
            max_chars=settings.max_message_chars,
            hello_timeout=settings.hello_timeout_seconds,
        ),
        hub=hub,
        mailboxes=mailboxes,
        publisher=durable,
        limiter=SendLimiter(
            visitor_burst=settings.visitor_burst,
            visitor_per_second=settings.visitor_per_second,
            ip_burst=settings.ip_burst,
            ip_per_second=settings.ip_per_second,
        ),
        connections=ConnectionCounter(settings.max_connections_per_ip),
        metrics=metrics,
        clock=clock,
        monotonic=time.monotonic,
    )
    app = FastAPI(
        title="Switchboard webchat",
        version="1.0",
        description="The chat widget shops embed on their own pages, its demo page and "
        "its WebSocket (/chat/socket: see the service's README for the protocol).",
    )
    instrument(app, registry=registry, service=settings.service_name)
    app.include_router(chat_router(sockets))
    app.include_router(
        ops_router(
            registry=registry,
            checks=[kafka_ready(broker), mongo_ready(client)],
            liveness=[watch.liveness_check()],
        )
    )

    async def close_client() -> None:
        await client.close()

    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
        on_start=[mailboxes.create_indexes],
        on_stop=[close_client],
        background=[watch.run, *background],
        # The sans-I/O websockets implementation, with frames capped: a browser's chat
        # message is a few KiB, and uvicorn would otherwise read up to 16 MiB.
        http_options={"ws": "websockets-sansio", "ws_max_size": settings.max_frame_bytes},
    )
    return runtime, Webchat(settings, registry, metrics, mailboxes, hub, app, fallback)
