"""ingest-social's shell: the one place that wires settings, Kafka, HTTP and metrics.

Writes ``support.inbound.v1`` (``support.message.received``, keyed by sender identity,
CloudEvents id = ``message_id``). Serves the webhooks under ``/webhooks/...`` plus
``/healthz``, ``/readyz`` (Kafka reachable; the database too when replies are on) and
``/metrics``.

With a send token (WhatsApp, a Messenger/Instagram page, an X account, a Telegram bot),
agent replies:
group ``ingest-social-replies`` reads ``switchboard.router.reply-deliveries.v1`` (orders
of those channels), sends them through the providers' APIs (``replies.SocialSenders`` under
the shared dispatcher, records in ``social_replies``) and writes
``support.outbound.v1``, ``support.conversation-events.v1`` and refusals to
``support.deadletter.v1``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from pydantic.json_schema import models_json_schema

from switchboard_common.contract import INBOUND, REPLY_DELIVERIES, Channel
from switchboard_common.http import ReadinessCheck, instrument, kafka_ready, mongo_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.logging import get_logger
from switchboard_common.metrics import service_registry
from switchboard_common.mongo import database, make_mongo_client
from switchboard_common.outbound_records import ReplyRecords
from switchboard_common.outbound_shell import REPLY_PUBLISHES, ReplyConsumer, subscribe_replies
from switchboard_common.publishing import DurablePublisher
from switchboard_common.service import BackgroundTask, Runtime
from switchboard_ingest_social.accounts import AccountDirectory, load_directory
from switchboard_ingest_social.metrics import IngestSocialMetrics
from switchboard_ingest_social.normalise import MetaEnvelope
from switchboard_ingest_social.normalise.messaging import MessagingWebhook
from switchboard_ingest_social.normalise.telegram import TelegramUpdate
from switchboard_ingest_social.normalise.whatsapp import WhatsAppWebhook
from switchboard_ingest_social.normalise.x import XWebhook
from switchboard_ingest_social.publishing import InboundPublisher
from switchboard_ingest_social.ratelimit import RateLimiter
from switchboard_ingest_social.replies import (
    REPLIES,
    MessengerSender,
    SocialSenders,
    StatusReporter,
    TelegramSender,
    WhatsAppSender,
    XSender,
)
from switchboard_ingest_social.settings import IngestSocialSettings
from switchboard_ingest_social.webhooks import WebhookApi, webhook_router

log = get_logger(__name__)

#: The consumer group that sends agent replies (behind ``SWITCHBOARD_TOPIC_PREFIX``).
GROUP_REPLIES = "ingest-social-replies"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IngestSocial:
    """What ``build`` assembled (tests look inside)."""

    settings: IngestSocialSettings
    directory: AccountDirectory
    registry: CollectorRegistry
    metrics: IngestSocialMetrics
    app: FastAPI


def directory_from(settings: IngestSocialSettings) -> AccountDirectory:
    """The account directory of these settings (reads the accounts file once)."""
    secrets = {}
    for channel in Channel:
        secret = {
            Channel.WHATSAPP: settings.meta_app_secret,
            Channel.MESSENGER: settings.meta_app_secret,
            Channel.INSTAGRAM: settings.meta_app_secret,
            Channel.X: settings.x_consumer_secret,
            Channel.TELEGRAM: settings.telegram_secret_token,
        }.get(channel)
        if secret is not None:
            secrets[channel] = secret
    return load_directory(settings.accounts_file, secrets, unknown=settings.unknown_accounts)


def build(
    settings: IngestSocialSettings, *, clock: Callable[[], datetime] = _utcnow
) -> tuple[Runtime, IngestSocial]:
    """Assemble the service. Raises ``AccountsFileError`` for a bad accounts file."""
    if settings.meta_verify_token is None:  # load() guarantees it; this narrows the type
        raise ValueError("META_VERIFY_TOKEN is not set")
    directory = directory_from(settings)
    registry = service_registry(settings.service_name)
    metrics = IngestSocialMetrics.create(registry)
    broker = make_broker(settings)
    # Webhooks publish customer messages and, with replies on, their statuses; the
    # replies' consumer publishes statuses, support.reply.sent and dead letters.
    events = EventPublisher(
        broker, settings.topics, settings.service_name, publishes=[INBOUND, *REPLY_PUBLISHES]
    )
    durable = DurablePublisher(
        broker,
        events,
        settings.topics,
        timeout=settings.publish_timeout_seconds,
        metrics=metrics.publish,
    )
    publisher = InboundPublisher(durable, metrics)
    http = httpx.AsyncClient(timeout=settings.send_timeout_seconds)
    senders = social_senders(settings, directory, http)
    client = make_mongo_client(settings) if senders.channels else None
    records = ReplyRecords(database(client, settings), REPLIES) if client else None
    api = WebhookApi(
        directory=directory,
        verify_token=settings.meta_verify_token.get_secret_value().encode(),
        publisher=publisher,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        crc_limiter=RateLimiter(
            per_client_per_minute=settings.crc_per_client_per_minute,
            per_minute=settings.crc_per_minute,
            clock=time.monotonic,
        ),
        clock=clock,
        statuses=StatusReporter(records, durable.publish, clock) if records else None,
    )
    app = FastAPI(
        title="Switchboard ingest-social",
        version="1.0",
        description=(
            "Verified webhooks of WhatsApp (Cloud API), Messenger, Instagram, X (Account "
            "Activity API) and Telegram (Bot API), normalised onto support.inbound.v1."
        ),
    )
    checks: list[ReadinessCheck] = [kafka_ready(broker)]
    liveness: list[ReadinessCheck] = []
    background: list[BackgroundTask] = []
    on_start: list[Callable[[], Awaitable[None]]] = []
    on_stop: list[Callable[[], Awaitable[None]]] = []
    if records is not None:
        # Messenger's receipts by watermark find replies by recipient and time.
        on_start.append(records.create_indexes)
    if client is not None:
        _, watch = subscribe_replies(
            ReplyConsumer(
                group=GROUP_REPLIES,
                topic=REPLY_DELIVERIES,
                collection=REPLIES,
                description="Agent replies on the social channels, once per reply_id.",
                max_records=settings.replies_batch_max_records,
                backoff=settings.outbound_retry_seconds,
            ),
            senders,
            settings=settings,
            broker=broker,
            db=database(client, settings),
            registry=registry,
            clock=clock,
            publisher=events,
        )
        checks.append(mongo_ready(client))
        liveness.append(watch.liveness_check())
        background.append(watch.run)

        async def close_client() -> None:
            await client.close()

        on_stop.append(close_client)
    else:
        log.warning("no social send token: social replies wait until one is set")
    on_stop.append(http.aclose)
    instrument(app, registry=registry, service=settings.service_name)
    app.include_router(webhook_router(api))
    app.include_router(ops_router(registry=registry, checks=checks, liveness=liveness))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
        background=background,
        on_start=on_start,
        on_stop=on_stop,
    )
    return runtime, IngestSocial(settings, directory, registry, metrics, app)


def social_senders(
    settings: IngestSocialSettings, directory: AccountDirectory, http: httpx.AsyncClient
) -> SocialSenders:
    """A sender for each channel with a token (the deployment's or an account's)."""
    whatsapp_default = settings.whatsapp_access_token
    whatsapp_tokens = directory.send_tokens(Channel.WHATSAPP)
    whatsapp = None
    if whatsapp_default is not None or whatsapp_tokens:
        whatsapp = WhatsAppSender(
            base_url=settings.meta_graph_api_url,
            version=settings.meta_graph_api_version,
            tokens=whatsapp_tokens,
            default_token=whatsapp_default.get_secret_value() if whatsapp_default else None,
            client=http,
        )
    bot_default = settings.telegram_bot_token
    bots = directory.send_tokens(Channel.TELEGRAM)
    telegram = None
    if bot_default is not None or bots:
        default = bot_default.get_secret_value() if bot_default else None
        if default is not None:
            # The deployment's bot also answers under its own id (``?bot=<id>`` webhooks).
            bots.setdefault(default.split(":", 1)[0], default)
        telegram = TelegramSender(
            base_url=settings.telegram_api_url, tokens=bots, default_token=default, client=http
        )
    page_default = settings.meta_page_access_token
    pages = {
        **directory.send_tokens(Channel.MESSENGER),
        **directory.send_tokens(Channel.INSTAGRAM),
    }
    messenger = None
    if page_default is not None or pages:
        messenger = MessengerSender(
            base_url=settings.meta_graph_api_url,
            version=settings.meta_graph_api_version,
            tokens=pages,
            default_token=page_default.get_secret_value() if page_default else None,
            client=http,
        )
    x_default = settings.x_access_token
    x_accounts = directory.send_tokens(Channel.X)
    x = None
    if x_default is not None or x_accounts:
        x = XSender(
            base_url=settings.x_api_url,
            tokens=x_accounts,
            default_token=x_default.get_secret_value() if x_default else None,
            client=http,
            consumer=(settings.x_consumer_key, settings.x_consumer_secret.get_secret_value())
            if settings.x_consumer_key and settings.x_consumer_secret
            else None,
        )
    return SocialSenders(whatsapp=whatsapp, telegram=telegram, messenger=messenger, x=x)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the providers' payload schemas as request bodies.

    The webhook handlers read the raw body (signatures are over bytes), so FastAPI
    cannot derive these schemas from the handlers' signatures.
    """
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _, definitions = models_json_schema(
        [
            (WhatsAppWebhook, "validation"),
            (MessagingWebhook, "validation"),
            (MetaEnvelope, "validation"),
            (XWebhook, "validation"),
            (TelegramUpdate, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))
    schemas["MetaWebhook"] = {
        "description": "A Meta webhook: WhatsApp, Messenger/Instagram, or another object "
        "(accepted and ignored).",
        "anyOf": [
            {"$ref": "#/components/schemas/WhatsAppWebhook"},
            {"$ref": "#/components/schemas/MessagingWebhook"},
            {"$ref": "#/components/schemas/MetaEnvelope"},
        ],
    }
    app.openapi_schema = document
    return document
