"""Every metric webchat exports. Labels come from closed sets in this package (error
codes, ``from``), never visitor ids, addresses, origins or text."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from switchboard_common.metrics import PublishMetrics


@dataclass(frozen=True)
class WebchatMetrics:
    """All of webchat's metrics, registered on one registry."""

    accepted: Counter
    refused: Counter
    sockets: Gauge
    connections_refused: Counter
    pushed: Counter
    resends: Counter
    delivered: Counter
    publish: PublishMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebchatMetrics:
        return cls(
            # Visitors' messages acknowledged (Kafka has them), anonymous or vouched.
            accepted=Counter(
                "switchboard_webchat_messages_accepted",
                "Visitor messages published and acknowledged, by verified (true, false).",
                ["verified"],
                registry=registry,
            ),
            # Visitors' messages not taken, by error code (rate_limited, too_long, ...).
            refused=Counter(
                "switchboard_webchat_messages_refused",
                "Visitor messages or frames refused, by reason (the error code).",
                ["reason"],
                registry=registry,
            ),
            # Sockets open in this replica (after the origin check).
            sockets=Gauge(
                "switchboard_webchat_open_sockets",
                "Widget sockets open in this replica.",
                registry=registry,
            ),
            # Sockets closed at once, by reason (origin_not_allowed, bad_token, ...).
            connections_refused=Counter(
                "switchboard_webchat_connections_refused",
                "Sockets closed before their visitor was known, by reason.",
                ["reason"],
                registry=registry,
            ),
            # Replies and acknowledgements written to an open socket, by from.
            pushed=Counter(
                "switchboard_webchat_replies_pushed",
                "Replies pushed to open sockets, by from (agent, switchboard).",
                ["from"],
                registry=registry,
            ),
            # A send whose client_id is already stored: the widget's resend after a lost ack.
            resends=Counter(
                "switchboard_webchat_reconnect_resends",
                "Messages sent again with a client_id already acknowledged.",
                registry=registry,
            ),
            # support.delivery.updated delivered published (the widget showed the reply).
            delivered=Counter(
                "switchboard_webchat_replies_delivered",
                "Replies reported delivered (shown by the widget).",
                registry=registry,
            ),
            publish=PublishMetrics.create(registry),
        )
