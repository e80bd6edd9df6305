"""Every metric ingest-social exports. Labels are bounded: provider (whatsapp,
messenger, instagram, x, telegram, or ``meta`` before a Meta webhook's product is
known), outcome, reason and message kind from closed sets in this package — never ids,
accounts or personal data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter

from switchboard_common.metrics import PublishMetrics


class Outcome(StrEnum):
    """How a webhook request ended (the ``outcome`` label)."""

    ACCEPTED = "accepted"  # 200: at least one message published and acknowledged by Kafka
    IGNORED = "ignored"  # 200: verified, nothing to publish (statuses, echoes, unknown kinds)
    BAD_SIGNATURE = "bad_signature"  # 401/403: signature or secret token missing or wrong
    INVALID = "invalid"  # 400: not JSON, or not a valid payload of the provider
    TOO_LARGE = "too_large"  # 413: body over INGEST_SOCIAL_MAX_BODY_BYTES
    UNAVAILABLE = "unavailable"  # 503: Kafka unreachable or slower than the publish timeout


@dataclass(frozen=True)
class IngestSocialMetrics:
    """All of ingest-social's metrics, registered on one registry."""

    requests: Counter
    handshakes: Counter
    published: Counter
    dropped: Counter
    publish: PublishMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestSocialMetrics:
        return cls(
            # Webhook POSTs by provider and outcome (see Outcome).
            requests=Counter(
                "switchboard_ingest_social_requests",
                "Webhook requests, by provider and outcome.",
                ["provider", "outcome"],
                registry=registry,
            ),
            # Handshakes and CRC checks, by provider and outcome (ok, rejected, rate_limited).
            handshakes=Counter(
                "switchboard_ingest_social_handshakes",
                "Meta subscription handshakes and X CRC checks, by provider and outcome.",
                ["provider", "outcome"],
                registry=registry,
            ),
            # Messages acknowledged by Kafka on support.inbound.v1, by channel and kind.
            published=Counter(
                "switchboard_ingest_social_messages_published",
                "Messages published to support.inbound.v1, by channel and kind.",
                ["channel", "kind"],
                registry=registry,
            ),
            # Webhook items not published, by provider and reason (status, echo, ...).
            dropped=Counter(
                "switchboard_ingest_social_items_dropped",
                "Webhook items counted and dropped, by provider and reason.",
                ["provider", "reason"],
                registry=registry,
            ),
            # switchboard_events_published / switchboard_publish_seconds (publish latency).
            publish=PublishMetrics.create(registry),
        )
