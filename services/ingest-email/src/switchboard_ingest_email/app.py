"""ingest-email's transport shell: everything it listens on, reads and writes is wired here.

- SMTP on ``INGEST_EMAIL_SMTP_PORT`` (``smtp.SmtpServer``) and one IMAP poller per
  configured mailbox (``imap.ImapPoller``), both feeding one ``ingest.Ingestor``;
- writes: the raw store (``email_raw`` / ``email_raw_chunks`` in MongoDB, purged past
  ``INGEST_EMAIL_RAW_RETENTION_DAYS``) and
  ``support.inbound.v1`` (``support.message.received``, key ``email:<sender>``);
- HTTP on ``INGEST_EMAIL_HTTP_PORT``: ``/healthz``, ``/readyz`` (Kafka, MongoDB, SMTP
  listening), ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from switchboard_common.http import ReadinessCheck, kafka_ready, mongo_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.mongo import database, make_mongo_client
from switchboard_common.publishing import DurablePublisher
from switchboard_common.service import Runtime
from switchboard_ingest_email.admission import Admission
from switchboard_ingest_email.imap import ImapPoller
from switchboard_ingest_email.ingest import Ingestor
from switchboard_ingest_email.metrics import IngestEmailMetrics
from switchboard_ingest_email.raw_store import MongoRawStore
from switchboard_ingest_email.settings import IngestEmailSettings
from switchboard_ingest_email.smtp import IngestHandler, SmtpServer


@dataclass(frozen=True)
class IngestEmail:
    """The assembled service: its runtime and the parts tests look at."""

    runtime: Runtime
    smtp: SmtpServer
    store: MongoRawStore
    ingestor: Ingestor
    pollers: tuple[ImapPoller, ...]
    metrics: IngestEmailMetrics
    registry: CollectorRegistry


def build(
    settings: IngestEmailSettings, *, clock: Callable[[], datetime] | None = None
) -> IngestEmail:
    """Assemble the service from its settings (nothing starts until the runtime runs)."""
    clock = clock or (lambda: datetime.now(UTC))
    registry = CollectorRegistry()
    metrics = IngestEmailMetrics.create(registry)
    # Bounds the producer's wait for metadata (Kafka unreachable at send time).
    timeout_ms = int(settings.publish_timeout_seconds * 1000)
    broker = make_broker(settings, request_timeout_ms=timeout_ms)
    client = make_mongo_client(settings)
    store = MongoRawStore(database(client, settings), clock=clock)
    ingestor = Ingestor(
        store=store,
        publisher=DurablePublisher(
            broker,
            EventPublisher(broker, settings.topics, settings.service_name),
            settings.topics,
            timeout=settings.publish_timeout_seconds,
            metrics=metrics.publish,
        ),
        metrics=metrics,
        clock=clock,
        timeout=settings.publish_timeout_seconds,
        max_in_flight=settings.max_in_flight,
    )
    policy = settings.recipient_policy
    admission = Admission(settings.limits)
    metrics.smtp_sessions.set_function(lambda: admission.sessions)
    metrics.memory_reserved.set_function(lambda: admission.reserved_bytes)
    smtp = SmtpServer(IngestHandler(ingestor, policy, metrics, admission), settings)
    pollers = tuple(ImapPoller(box, ingestor, policy, metrics) for box in settings.mailboxes)

    async def smtp_listening() -> bool:
        return smtp.serving

    app = FastAPI(
        title="Switchboard ingest-email",
        version="1.0",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(
        ops_router(
            registry=registry,
            checks=[
                kafka_ready(broker),
                mongo_ready(client),
                ReadinessCheck("smtp", smtp_listening),
            ],
        )
    )

    async def close_client() -> None:
        await client.close()

    async def retention() -> None:
        await store.keep_for(
            timedelta(days=settings.raw_retention_days),
            every=settings.raw_purge_interval_seconds,
        )

    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
        on_stop=[close_client],
        background=[smtp.serve, retention, *(p.run for p in pollers)],
    )
    return IngestEmail(runtime, smtp, store, ingestor, pollers, metrics, registry)
