"""ingest-social's shell: the one place that wires settings, Kafka, HTTP and metrics.

Reads nothing from Kafka. Writes ``support.inbound.v1`` (``support.message.received``,
keyed by sender identity, CloudEvents id = ``message_id``). Serves the webhooks under
``/webhooks/...`` plus ``/healthz``, ``/readyz`` (Kafka reachable) and ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from pydantic.json_schema import models_json_schema

from switchboard_common.contract import Channel
from switchboard_common.http import kafka_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.publishing import DurablePublisher
from switchboard_common.service import Runtime
from switchboard_ingest_social.accounts import AccountDirectory, load_directory
from switchboard_ingest_social.metrics import IngestSocialMetrics
from switchboard_ingest_social.normalise import MetaEnvelope
from switchboard_ingest_social.normalise.messaging import MessagingWebhook
from switchboard_ingest_social.normalise.telegram import TelegramUpdate
from switchboard_ingest_social.normalise.whatsapp import WhatsAppWebhook
from switchboard_ingest_social.normalise.x import XWebhook
from switchboard_ingest_social.publishing import InboundPublisher
from switchboard_ingest_social.ratelimit import RateLimiter
from switchboard_ingest_social.settings import IngestSocialSettings
from switchboard_ingest_social.webhooks import WebhookApi, webhook_router


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
    registry = CollectorRegistry()
    metrics = IngestSocialMetrics.create(registry)
    broker = make_broker(settings)
    publisher = InboundPublisher(
        DurablePublisher(
            broker,
            EventPublisher(broker, settings.topics, settings.service_name),
            settings.topics,
            timeout=settings.publish_timeout_seconds,
            metrics=metrics.publish,
        ),
        metrics,
    )
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
    )
    app = FastAPI(
        title="Switchboard ingest-social",
        version="1.0",
        description=(
            "Verified webhooks of WhatsApp (Cloud API), Messenger, Instagram, X (Account "
            "Activity API) and Telegram (Bot API), normalised onto support.inbound.v1."
        ),
    )
    app.include_router(webhook_router(api))
    app.include_router(ops_router(registry=registry, checks=[kafka_ready(broker)]))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
    )
    return runtime, IngestSocial(settings, directory, registry, metrics, app)


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
