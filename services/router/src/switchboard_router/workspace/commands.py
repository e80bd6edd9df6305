"""An agent's request in the workspace, as the contract event a Kafka frontend would send.

Pure: a request, the agent its token names and the time in, one ``Outgoing`` out. The
event's ``ce_id`` is ``workspace:<request_id>``, so a retried request is recognisably the
same event to every consumer (they deduplicate by it), and the reply's ``reply_id`` and
the note's ``note_id`` are the request id itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from switchboard_common.contract import (
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    OUTBOUND,
    AgentStatus,
    AgentStatusChanged,
    ContractModel,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    NoteAdded,
    OfferAccepted,
    OfferRejected,
    ReplyRequested,
)
from switchboard_common.contract.events import NOTE_MAX_CHARS
from switchboard_common.kafka import Outgoing
from switchboard_router.timeline.replies import TEXT_LIMITS

#: The client's idempotency key: long enough to be unique, safe in ids and logs.
RequestId = Annotated[str, Field(min_length=8, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]
#: A reply longer than every channel takes can never be delivered: refused here. A
#: reply too long only for its own channel gets a ``failed`` delivery, as from Kafka.
REPLY_MAX_CHARS = max(TEXT_LIMITS.values())


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the text is blank")
    return text


#: A reply's and a note's text: not empty, not all blank, not longer than it can be.
ReplyText = Annotated[
    str, Field(min_length=1, max_length=REPLY_MAX_CHARS), AfterValidator(_not_blank)
]
NoteText = Annotated[
    str, Field(min_length=1, max_length=NOTE_MAX_CHARS), AfterValidator(_not_blank)
]


class _Request(BaseModel):
    # A misspelt field (``to_queu``) is an error, not a silently different request.
    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: RequestId


class PresenceRequest(_Request):
    status: AgentStatus


class AcceptRequest(_Request):
    pass


class RejectRequest(_Request):
    reason: Annotated[str, Field(max_length=1000)] | None = None


class ReplyRequest(_Request):
    text: ReplyText


class NoteRequest(_Request):
    text: NoteText


class StatusRequest(_Request):
    """Resolve or reopen: nothing but the request id."""


class TransferRequest(_Request):
    to_queue: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    to_agent_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Self:
        if (self.to_queue is None) == (self.to_agent_id is None):
            raise ValueError("name exactly one of to_queue and to_agent_id")
        return self


Action = Literal["presence", "accept", "reject", "reply", "note", "resolve", "reopen", "transfer"]
WorkspaceRequest = (
    PresenceRequest
    | AcceptRequest
    | RejectRequest
    | ReplyRequest
    | NoteRequest
    | StatusRequest
    | TransferRequest
)


@dataclass(frozen=True)
class Command:
    """One request of one agent: what it asks, about which conversation (None for
    presence)."""

    action: Action
    agent_id: str
    conversation_id: str | None
    request: WorkspaceRequest

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def digest(self) -> str:
        """What "the same request" means: the action, its target and its body. The agent
        is compared on its own (a different agent is a conflict, not a new request)."""
        canonical = json.dumps(
            {
                "action": self.action,
                "conversation_id": self.conversation_id,
                "body": self.request.model_dump(mode="json"),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def event_id(request_id: str) -> str:
    """The ``ce_id`` of the event a request publishes, however often it is sent."""
    return f"workspace:{request_id}"


def to_event(command: Command, now: datetime) -> Outgoing:
    """The contract event of ``command``, keyed as the contract says (agent events by
    agent, conversation events and replies by conversation)."""
    agent_id, request = command.agent_id, command.request
    event: ContractModel
    if isinstance(request, PresenceRequest):
        event = AgentStatusChanged(agent_id=agent_id, status=request.status, at=now)
        return Outgoing(AGENT_EVENTS, agent_id, event, event_id(request.request_id), now)
    conversation_id = _conversation(command)
    topic = CONVERSATION_EVENTS
    key = conversation_id
    match command.action, request:
        case "accept", AcceptRequest():
            event = OfferAccepted(agent_id=agent_id, conversation_id=conversation_id)
            topic, key = AGENT_EVENTS, agent_id
        case "reject", RejectRequest():
            event = OfferRejected(
                agent_id=agent_id, conversation_id=conversation_id, reason=request.reason
            )
            topic, key = AGENT_EVENTS, agent_id
        case "reply", ReplyRequest():
            event = ReplyRequested(
                reply_id=request.request_id,
                conversation_id=conversation_id,
                agent_id=agent_id,
                text=request.text,
                requested_at=now,
            )
            topic = OUTBOUND
        case "note", NoteRequest():
            event = NoteAdded(
                note_id=request.request_id,
                conversation_id=conversation_id,
                agent_id=agent_id,
                text=request.text,
                at=now,
            )
        case "resolve", StatusRequest():
            event = ConversationResolved(conversation_id=conversation_id, at=now)
        case "reopen", StatusRequest():
            event = ConversationReopened(conversation_id=conversation_id, at=now)
        case "transfer", TransferRequest():
            event = ConversationTransferred(
                conversation_id=conversation_id,
                from_agent_id=agent_id,
                to_queue=request.to_queue,
                to_agent_id=request.to_agent_id,
                at=now,
            )
        case _:
            raise TypeError(f"{command.action} does not take {type(request).__name__}")
    return Outgoing(topic, key, event, event_id(request.request_id), now)


def _conversation(command: Command) -> str:
    if command.conversation_id is None:
        raise TypeError(f"{command.action} needs a conversation")
    return command.conversation_id
