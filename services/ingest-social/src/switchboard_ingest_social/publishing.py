"""Publishing a webhook's messages: all acknowledged by Kafka, or a 503.

The mechanics (reachability gate, deadline, no duplicate from the provider's retry) are
the shared ``switchboard_common.publishing.DurablePublisher``; this adds the
per-channel counts of what was published.
"""

from __future__ import annotations

from collections.abc import Sequence

from switchboard_common.contract import INBOUND
from switchboard_common.kafka import Outgoing
from switchboard_common.publishing import DurablePublisher, PublishUnavailableError
from switchboard_ingest_social.metrics import IngestSocialMetrics
from switchboard_ingest_social.normalise import Inbound

#: The webhook answers 503 when this is raised.
KafkaUnavailableError = PublishUnavailableError


class InboundPublisher:
    """Publishes normalised messages to ``support.inbound.v1`` within a deadline."""

    def __init__(self, durable: DurablePublisher, metrics: IngestSocialMetrics) -> None:
        self._durable = durable
        self._metrics = metrics

    async def publish(self, messages: Sequence[Inbound]) -> None:
        """Return once Kafka acknowledged every message; raise ``KafkaUnavailableError``
        (answer 503) otherwise. A redelivered webhook gives the same key, ``message_id``
        and CloudEvents id, and is not published twice by this process."""
        await self._durable.publish(
            [Outgoing(INBOUND, m.key, m.message, event_id=m.message.message_id) for m in messages]
        )
        for message in messages:
            self._metrics.published.labels(
                channel=message.message.channel.value, kind=message.message.kind
            ).inc()
