"""Group ``router-timeline-state``: conversation status for threading, in order.

Frontends publish ``support.conversation.resolved``/``reopened`` keyed by conversation;
threading needs them in order with the customer's messages, which are keyed by customer.
This consumer looks up the conversation's customer and re-publishes the change as
``ConversationStatusChanged`` on ``switchboard.router.customer-messages.v1``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    CUSTOMER_MESSAGES,
    ConversationReopened,
    ConversationResolved,
    ConversationStatusChanged,
)
from switchboard_common.kafka import Outgoing
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.ports import TimelineStore
from switchboard_router.timeline.resolve import Publisher

#: Conversations whose customer is remembered (a conversation never changes customer).
KNOWN_CONVERSATIONS = 100_000


class StatusForwarder:
    """The batch handler of group ``router-timeline-state``: resolve/reopen events of
    ``support.conversation-events.v1`` onto the owning customer's stream.

    An event for a conversation the timeline never stored is dead-lettered (it cannot be
    ordered with any customer's messages); other event types are not about threading.
    """

    def __init__(self, store: TimelineStore, publisher: Publisher, metrics: TimelineMetrics):
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._customers: OrderedDict[str, str] = OrderedDict()

    async def _customer_of(self, conversation_id: str) -> str | None:
        customer_id = self._customers.get(conversation_id)
        if customer_id is None:
            document = await self._store.get_conversation(conversation_id)
            if document is None:
                return None
            customer_id = str(document["customer_id"])
            self._customers[conversation_id] = customer_id
            while len(self._customers) > KNOWN_CONVERSATIONS:
                self._customers.popitem(last=False)
        return customer_id

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        outgoing: list[Outgoing] = []
        rejected: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            event = delivery.event
            if not isinstance(event, ConversationResolved | ConversationReopened):
                continue
            status: Literal["resolved", "reopened"] = (
                "resolved" if isinstance(event, ConversationResolved) else "reopened"
            )
            customer_id = await self._customer_of(event.conversation_id)
            if customer_id is None:
                self._metrics.status_changes.labels(status, "unknown").inc()
                rejected.append((delivery, "unknown conversation: the timeline never stored it"))
                continue
            self._metrics.status_changes.labels(status, "forwarded").inc()
            outgoing.append(
                Outgoing(
                    topic=CUSTOMER_MESSAGES,
                    key=customer_id,
                    event=ConversationStatusChanged(
                        customer_id=customer_id,
                        conversation_id=event.conversation_id,
                        status=status,
                        at=event.at,
                    ),
                    event_id=f"{delivery.attributes.id}:status",
                )
            )
        await self._publisher.publish_all(outgoing)
        return rejected
