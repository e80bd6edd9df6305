"""Closed vocabularies of the public contract (CONTRACT.md)."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """Where a customer message came from."""

    EMAIL = "email"
    WHATSAPP = "whatsapp"
    MESSENGER = "messenger"
    INSTAGRAM = "instagram"
    X = "x"
    TELEGRAM = "telegram"
    WEBCHAT = "webchat"  # the chat widget on the shop's own pages


class SenderKind(StrEnum):
    """How a sender is identified on its channel."""

    EMAIL = "email"
    PHONE = "phone"  # E.164, e.g. +34600111222
    PSID = "psid"  # Messenger page-scoped id
    IGSID = "igsid"  # Instagram-scoped id
    X_USER_ID = "x_user_id"
    TELEGRAM_USER_ID = "telegram_user_id"
    #: A web chat visitor the embedding site has not vouched for (a vouched one is ``email``).
    WEBCHAT_VISITOR = "webchat_visitor"


class Priority(StrEnum):
    """Conversation priority, most urgent first."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for urgent up to 3 for low: sort ascending to serve the most urgent first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class AgentStatus(StrEnum):
    """Agent presence. Only online agents receive work."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


class SlaMetric(StrEnum):
    """What an SLA target measures."""

    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class DeliveryStatus(StrEnum):
    """Where a reply to a customer stands (``support.delivery.updated``)."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class FeedbackKind(StrEnum):
    """What a customer's rating measures: CSAT (1-5, how satisfied with this
    conversation) or NPS (0-10, how likely to recommend)."""

    CSAT = "csat"
    NPS = "nps"

    @property
    def scores(self) -> range:
        """The scores this kind takes."""
        return range(1, 6) if self is FeedbackKind.CSAT else range(11)
