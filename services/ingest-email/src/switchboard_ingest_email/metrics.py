"""Every metric ingest-email exports. Labels are bounded: transport (smtp, imap), reason and
outcome categories, configured mailbox names and tenants; never addresses or ids."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard_common.metrics import PublishMetrics

SIZE_BUCKETS = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
ACCEPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

#: Bounded reasons a message or recipient is refused (the ``reason`` label).
REJECT_REASONS = (
    "unknown_recipient",  # 550 5.1.1: not a configured support address or domain
    "too_large",  # 552: declared SIZE or data over the limit
    "unavailable",  # 451 4.3.0: raw store or Kafka did not answer in time
    "overloaded",  # 451 4.3.2: too many messages in flight for too long
    "too_many_sessions",  # 421 4.3.2: INGEST_EMAIL_MAX_SESSIONS connections open
    "too_many_sessions_per_ip",  # 421 4.7.0: INGEST_EMAIL_MAX_SESSIONS_PER_IP from one address
    "rate_limited",  # 451 4.7.1: over INGEST_EMAIL_MESSAGES_PER_IP_PER_MINUTE
    "too_many_recipients",  # 452 4.5.3: beyond INGEST_EMAIL_MAX_RECIPIENTS
    "memory",  # 451 4.3.1: the message does not fit in the memory budget now
)


@dataclass(frozen=True)
class IngestEmailMetrics:
    """All of ingest-email's metrics, registered on one registry."""

    received: Counter
    rejected: Counter
    received_bytes: Histogram
    parse_errors: Counter
    accept_seconds: Histogram
    in_flight: Gauge
    smtp_sessions: Gauge
    memory_reserved: Gauge
    imap_polls: Counter
    own_replies: Counter
    publish: PublishMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestEmailMetrics:
        return cls(
            # Messages stored and published (then acknowledged), by transport and tenant.
            received=Counter(
                "switchboard_email_messages_received",
                "Messages stored, published and acknowledged, by transport and tenant.",
                ["transport", "tenant"],
                registry=registry,
            ),
            own_replies=Counter(
                "switchboard_email_own_replies",
                "Switchboard's own replies that came back (an address forwarding to "
                "support), taken and not ingested.",
                ["transport"],
                registry=registry,
            ),
            # Messages or recipients refused, by transport and reason (see REJECT_REASONS).
            rejected=Counter(
                "switchboard_email_messages_rejected",
                "Messages or recipients refused, by transport and reason.",
                ["transport", "reason"],
                registry=registry,
            ),
            # Size in bytes of each message received (raw, as stored).
            received_bytes=Histogram(
                "switchboard_email_message_bytes",
                "Raw size of received messages in bytes.",
                ["transport"],
                buckets=SIZE_BUCKETS,
                registry=registry,
            ),
            # Messages published with at least one parse error (malformed MIME, charsets).
            parse_errors=Counter(
                "switchboard_email_parse_errors",
                "Messages published with parse errors, by transport.",
                ["transport"],
                registry=registry,
            ),
            # Seconds from the end of DATA (or the IMAP fetch) to durable: stored + acked.
            accept_seconds=Histogram(
                "switchboard_email_accept_seconds",
                "Seconds to store and publish one message before acknowledging it.",
                ["transport"],
                buckets=ACCEPT_BUCKETS,
                registry=registry,
            ),
            # Messages being stored and published right now.
            in_flight=Gauge(
                "switchboard_email_in_flight",
                "Messages being stored and published right now.",
                registry=registry,
            ),
            # Open SMTP connections (admitted ones; refused ones never count).
            smtp_sessions=Gauge(
                "switchboard_email_smtp_sessions",
                "Open SMTP sessions.",
                registry=registry,
            ),
            # Memory reserved for messages being received, parsed, stored and published.
            memory_reserved=Gauge(
                "switchboard_email_memory_reserved_bytes",
                "Bytes of the memory budget reserved for messages now.",
                registry=registry,
            ),
            # IMAP poll rounds by mailbox (configured name) and outcome (ok, error).
            imap_polls=Counter(
                "switchboard_email_imap_polls",
                "IMAP poll rounds, by configured mailbox name and outcome.",
                ["mailbox", "outcome"],
                registry=registry,
            ),
            # switchboard_events_published / switchboard_publish_seconds, shared with others.
            publish=PublishMetrics.create(registry),
        )
