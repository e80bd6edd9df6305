from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from switchboard_common.contract import (
    EVENT_TYPES,
    TOPICS,
    AgentUpserted,
    Channel,
    ConversationAssigned,
    ConversationTransferred,
    FeedbackKind,
    FeedbackReceived,
    MessageReceived,
    Priority,
    TopicNames,
)
from switchboard_common.contract.events import model_json_schema
from switchboard_devkit.testing.builders import message

pytestmark = pytest.mark.unit


def test_every_contract_event_type_is_registered_once() -> None:
    expected = {
        "support.message.received",
        "support.conversation.queued",
        "support.conversation.assigned",
        "support.conversation.requeued",
        "support.conversation.escalated",
        "support.agent.upserted",
        "support.agent.status_changed",
        "support.offer.accepted",
        "support.offer.rejected",
        "support.reply.sent",
        "support.conversation.resolved",
        "support.conversation.reopened",
        "support.conversation.transferred",
        "support.note.added",
        "support.sla.at_risk",
        "support.sla.breached",
        "support.deadletter",
        "support.reply.requested",
        "support.delivery.updated",
        "support.feedback.received",
        # Public since the SLA monitor reads it; named when it was the router's own.
        "switchboard.router.conversation_activity",
    }
    assert set(EVENT_TYPES) == expected
    assert sum(len(t.types) for t in TOPICS) == len(expected)


def test_topic_names_are_the_contract_names_without_prefix() -> None:
    names = TopicNames()
    assert names.inbound == "support.inbound.v1"
    assert names.assignments == "support.assignments.v1"
    assert names.deadletter == "support.deadletter.v1"
    prefixed = TopicNames("t123.")
    assert prefixed.inbound == "t123.support.inbound.v1"
    assert prefixed.contract_name("t123.support.inbound.v1") == "support.inbound.v1"
    with pytest.raises(KeyError):
        prefixed("support.unknown.v1")


def test_message_round_trips_through_json() -> None:
    original = message()
    parsed = MessageReceived.model_validate_json(original.model_dump_json())
    assert parsed == original
    assert parsed.received_at.tzinfo is not None


def test_unknown_fields_are_ignored_so_producers_may_add_fields() -> None:
    payload = json.loads(message().model_dump_json())
    payload["added_in_a_later_version"] = {"anything": 1}
    parsed = MessageReceived.model_validate_json(json.dumps(payload))
    assert not hasattr(parsed, "added_in_a_later_version")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel", "fax"),
        ("received_at", "2026-03-02T09:30:00"),  # no zone: ambiguous, refused
        ("text", None),
        ("message_id", ""),
        ("sender", {"kind": "carrier_pigeon", "value": "x"}),
        ("auto_submitted", "yes"),  # strict: no string-to-bool coercion
    ],
)
def test_invalid_messages_are_refused(field: str, value: object) -> None:
    payload = json.loads(message().model_dump_json())
    payload[field] = value
    with pytest.raises(ValidationError):
        MessageReceived.model_validate_json(json.dumps(payload))


def test_skill_levels_and_capacities_are_bounded() -> None:
    ok = AgentUpserted.model_validate_json(
        json.dumps(
            {
                "agent_id": "a1",
                "display_name": "Ana",
                "skills": {"billing": 10, "spanish": 1},
                "capacity": {"email": 5, "whatsapp": 3},
                "languages": ["es", "en"],
            }
        )
    )
    assert ok.capacity[Channel.WHATSAPP] == 3
    with pytest.raises(ValidationError):
        AgentUpserted.model_validate_json(
            json.dumps({"agent_id": "a1", "display_name": "x", "skills": {"billing": 11}})
        )
    with pytest.raises(ValidationError):
        AgentUpserted.model_validate_json(
            json.dumps({"agent_id": "a1", "display_name": "x", "capacity": {"fax": 1}})
        )


def test_transfer_needs_exactly_one_target() -> None:
    base = {"conversation_id": "c1", "from_agent_id": "a1"}
    assert ConversationTransferred.model_validate({**base, "to_queue": "billing"}).to_queue
    with pytest.raises(ValidationError, match="exactly one"):
        ConversationTransferred.model_validate(base)
    with pytest.raises(ValidationError, match="exactly one"):
        ConversationTransferred.model_validate({**base, "to_queue": "q", "to_agent_id": "a2"})


def test_assignment_payload_carries_the_decision_inputs() -> None:
    decided = ConversationAssigned(
        conversation_id="c1",
        customer_id="cu1",
        channel=Channel.WHATSAPP,
        priority=Priority.URGENT,
        agent_id="a1",
        queue="vip",
        required_skills=["billing"],
        seq=3,
        decided_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
        reason={"score": 0.82, "candidates": 4, "skill_fit": {"billing": 7}},
    )
    again = ConversationAssigned.model_validate_json(decided.model_dump_json())
    assert again.reason["candidates"] == 4
    assert ConversationAssigned.ce_type == "support.conversation.assigned"


def test_priority_rank_orders_most_urgent_first() -> None:
    ordered = sorted(Priority, key=lambda p: p.rank)
    assert ordered == [Priority.URGENT, Priority.HIGH, Priority.NORMAL, Priority.LOW]


@pytest.mark.parametrize("ce_type", sorted(EVENT_TYPES))
def test_every_payload_has_a_json_schema(ce_type: str) -> None:
    schema = model_json_schema(EVENT_TYPES[ce_type])
    assert schema["type"] == "object"
    assert schema["properties"]


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [(FeedbackKind.CSAT, (1, 5), (0, 6)), (FeedbackKind.NPS, (0, 10), (-1, 11))],
)
def test_feedback_scores_are_those_of_their_kind(
    kind: FeedbackKind, good: tuple[int, ...], bad: tuple[int, ...]
) -> None:
    at = datetime(2026, 12, 4, tzinfo=UTC)
    for score in good:
        assert FeedbackReceived(conversation_id="c", kind=kind, score=score, at=at).score == score
    for score in bad:
        with pytest.raises(ValidationError, match=f"a {kind.value} score is"):
            FeedbackReceived(conversation_id="c", kind=kind, score=score, at=at)
