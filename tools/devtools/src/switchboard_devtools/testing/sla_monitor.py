"""Builders of the events the monitor consumes, for tests (here and end-to-end)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from switchboard_common.contract import (
    Channel,
    ConversationActivity,
    ConversationAssigned,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    FeedbackKind,
    FeedbackReceived,
    Priority,
    ReplySent,
)
from switchboard_sla_monitor.policy import PolicySet, build_policies


def activity(
    conversation_id: str,
    message_id: str,
    at: datetime,
    *,
    kind: Literal["opened", "reopened", "message"] = "message",
    channel: Channel = Channel.EMAIL,
    customer_id: str = "cust-1",
    auto_submitted: bool = False,
    expects_reply: bool = True,
    customer_tier: str | None = None,
    tenant: str | None = None,
    previous_conversation_id: str | None = None,
) -> ConversationActivity:
    """A customer message on a conversation, as the router publishes it."""
    return ConversationActivity(
        conversation_id=conversation_id,
        customer_id=customer_id,
        channel=channel,
        kind=kind,
        message_id=message_id,
        received_at=at,
        auto_submitted=auto_submitted,
        expects_reply=expects_reply,
        customer_tier=customer_tier,
        tenant=tenant,
        previous_conversation_id=previous_conversation_id,
    )


def assigned(
    conversation_id: str,
    at: datetime,
    *,
    seq: int = 1,
    priority: Priority = Priority.NORMAL,
    queue: str = "general",
    channel: Channel = Channel.EMAIL,
    agent_id: str | None = "agent-1",
    waiting_since: datetime | None = None,
    customer_id: str = "cust-1",
) -> ConversationAssigned:
    """A routing decision."""
    return ConversationAssigned(
        conversation_id=conversation_id,
        customer_id=customer_id,
        channel=channel,
        priority=priority,
        agent_id=agent_id,
        queue=queue,
        seq=seq,
        decided_at=at,
        waiting_since=waiting_since,
    )


def reply(
    conversation_id: str, at: datetime, *, agent_id: str = "agent-1", awaiting: bool = False
) -> ReplySent:
    return ReplySent(
        conversation_id=conversation_id, agent_id=agent_id, sent_at=at, awaiting_customer=awaiting
    )


def resolved(conversation_id: str, at: datetime) -> ConversationResolved:
    return ConversationResolved(conversation_id=conversation_id, at=at)


def reopened(conversation_id: str, at: datetime) -> ConversationReopened:
    return ConversationReopened(conversation_id=conversation_id, at=at)


def transferred(
    conversation_id: str, at: datetime, *, from_agent: str = "agent-1", to_agent: str = "agent-2"
) -> ConversationTransferred:
    return ConversationTransferred(
        conversation_id=conversation_id, from_agent_id=from_agent, to_agent_id=to_agent, at=at
    )


def feedback(
    conversation_id: str,
    kind: FeedbackKind | str,
    score: int,
    at: datetime,
    *,
    feedback_id: str | None = None,
) -> FeedbackReceived:
    """A customer's rating (CSAT 1-5, NPS 0-10)."""
    return FeedbackReceived(
        conversation_id=conversation_id,
        kind=FeedbackKind(kind),
        score=score,
        at=at,
        feedback_id=feedback_id,
        source="survey_reply",
    )


def simple_policies(
    first: str = "1h",
    next_: str = "2h",
    resolution: str = "8h",
    warn: str = "10m",
    *,
    urgent_first: str = "15m",
    calendar: dict[str, Any] | None = None,
) -> PolicySet:
    """Two policies on one calendar (24/7 unless given): urgent, and everything else."""

    def targets(first_response: str) -> dict[str, Any]:
        return {
            "first_response": {"target": first_response, "warn_before": warn},
            "next_response": {"target": next_, "warn_before": warn},
            "resolution": {"target": resolution, "warn_before": warn},
        }

    return build_policies(
        {
            "calendars": {"main": calendar or {"always_open": True}},
            "policies": [
                {
                    "name": "urgent",
                    "match": {"priority": ["urgent"]},
                    "calendar": "main",
                    "targets": targets(urgent_first),
                },
                {"name": "standard", "calendar": "main", "targets": targets(first)},
            ],
        }
    )
