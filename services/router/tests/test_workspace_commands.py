"""An agent's workspace request as the contract event a Kafka frontend would send: the
topic, key, payload and ``ce_id`` of each, and which requests are refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from switchboard_common.contract import (
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    OUTBOUND,
    AgentStatus,
    AgentStatusChanged,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    NoteAdded,
    OfferAccepted,
    OfferRejected,
    ReplyRequested,
)
from switchboard_devkit.testing.builders import T0
from switchboard_router.timeline.replies import TEXT_LIMITS
from switchboard_router.workspace.commands import (
    AcceptRequest,
    Command,
    NoteRequest,
    PresenceRequest,
    RejectRequest,
    ReplyRequest,
    StatusRequest,
    TransferRequest,
    event_id,
    to_event,
)

pytestmark = pytest.mark.unit

RID = "req-0001"


def test_presence_is_a_status_change_keyed_by_the_agent() -> None:
    command = Command(
        "presence", "ana", None, PresenceRequest(request_id=RID, status=AgentStatus.AWAY)
    )
    item = to_event(command, T0)
    assert (item.topic, item.key, item.event_id, item.time) == (
        AGENT_EVENTS,
        "ana",
        "workspace:req-0001",
        T0,
    )
    assert item.event == AgentStatusChanged(agent_id="ana", status=AgentStatus.AWAY, at=T0)


CASES: list[tuple[Command, str, str, Any]] = [
    (
        Command("accept", "ana", "c-1", AcceptRequest(request_id=RID)),
        AGENT_EVENTS,
        "ana",
        OfferAccepted(agent_id="ana", conversation_id="c-1"),
    ),
    (
        Command("reject", "ana", "c-1", RejectRequest(request_id=RID, reason="not my area")),
        AGENT_EVENTS,
        "ana",
        OfferRejected(agent_id="ana", conversation_id="c-1", reason="not my area"),
    ),
    (
        Command("reply", "ana", "c-1", ReplyRequest(request_id=RID, text="Hello")),
        OUTBOUND,
        "c-1",
        ReplyRequested(
            reply_id=RID, conversation_id="c-1", agent_id="ana", text="Hello", requested_at=T0
        ),
    ),
    (
        Command("note", "ana", "c-1", NoteRequest(request_id=RID, text="VIP")),
        CONVERSATION_EVENTS,
        "c-1",
        NoteAdded(note_id=RID, conversation_id="c-1", agent_id="ana", text="VIP", at=T0),
    ),
    (
        Command("resolve", "ana", "c-1", StatusRequest(request_id=RID)),
        CONVERSATION_EVENTS,
        "c-1",
        ConversationResolved(conversation_id="c-1", at=T0),
    ),
    (
        Command("reopen", "ana", "c-1", StatusRequest(request_id=RID)),
        CONVERSATION_EVENTS,
        "c-1",
        ConversationReopened(conversation_id="c-1", at=T0),
    ),
    (
        Command("transfer", "ana", "c-1", TransferRequest(request_id=RID, to_queue="billing")),
        CONVERSATION_EVENTS,
        "c-1",
        ConversationTransferred(
            conversation_id="c-1", from_agent_id="ana", to_queue="billing", at=T0
        ),
    ),
    (
        Command("transfer", "ana", "c-1", TransferRequest(request_id=RID, to_agent_id="bob")),
        CONVERSATION_EVENTS,
        "c-1",
        ConversationTransferred(
            conversation_id="c-1", from_agent_id="ana", to_agent_id="bob", at=T0
        ),
    ),
]


@pytest.mark.parametrize(("command", "topic", "key", "event"), CASES)
def test_each_request_is_its_contract_event(
    command: Command, topic: str, key: str, event: Any
) -> None:
    item = to_event(command, T0)
    assert (item.topic, item.key, item.event) == (topic, key, event)
    assert item.event_id == event_id(RID) == "workspace:req-0001"
    # Pure: the same request gives the same event.
    assert to_event(command, T0) == item


def test_a_conversation_request_without_a_conversation_is_a_bug() -> None:
    with pytest.raises(TypeError):
        to_event(Command("note", "ana", None, NoteRequest(request_id=RID, text="x")), T0)
    with pytest.raises(TypeError):
        to_event(Command("reply", "ana", "c-1", NoteRequest(request_id=RID, text="x")), T0)


def test_the_digest_is_the_request_not_the_agent() -> None:
    note = Command("note", "ana", "c-1", NoteRequest(request_id=RID, text="VIP"))
    same = Command("note", "bob", "c-1", NoteRequest(request_id=RID, text="VIP"))
    assert note.digest() == same.digest()
    changed = [
        Command("note", "ana", "c-1", NoteRequest(request_id=RID, text="VIP!")),
        Command("note", "ana", "c-2", NoteRequest(request_id=RID, text="VIP")),
        Command("reply", "ana", "c-1", ReplyRequest(request_id=RID, text="VIP")),
    ]
    assert len({note.digest(), *(c.digest() for c in changed)}) == 4


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (StatusRequest, {"request_id": "short"}),
        (StatusRequest, {"request_id": "has space 123"}),
        (StatusRequest, {"request_id": "x" * 101}),
        (StatusRequest, {"request_id": RID, "extra": 1}),
        (PresenceRequest, {"request_id": RID, "status": "asleep"}),
        (ReplyRequest, {"request_id": RID, "text": ""}),
        (ReplyRequest, {"request_id": RID, "text": "  \n "}),
        (ReplyRequest, {"request_id": RID, "text": "x" * (max(TEXT_LIMITS.values()) + 1)}),
        (NoteRequest, {"request_id": RID, "text": " "}),
        (TransferRequest, {"request_id": RID}),
        (TransferRequest, {"request_id": RID, "to_queue": "q", "to_agent_id": "bob"}),
    ],
)
def test_malformed_requests_are_refused(model: type[Any], body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(body)


def test_the_longest_reply_any_channel_takes_is_accepted() -> None:
    longest = "x" * max(TEXT_LIMITS.values())
    assert ReplyRequest(request_id="a.b:c-d_123", text=longest).text == longest
