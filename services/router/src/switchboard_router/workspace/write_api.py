"""The workspace's write API: an agent's presence, offer answers, replies, notes,
resolve, reopen and transfer over HTTP, each published as the contract event a Kafka
frontend would send (``commands``), and answered 202 only once Kafka acknowledged it.

Idempotent by the client's ``request_id``: the first request claims the id with the
event it publishes (``requests_store``); the same request again publishes that same
event again (same ``ce_id``, payload and time: consumers deduplicate) and gets the same
answer, even when the conversation has moved on since; a different request, or another
agent, with that id gets 409. Kafka or the database unavailable: 503, and the client's
retry with the same id publishes the event.
"""

# No `from __future__ import annotations`: FastAPI reads the body models' annotations
# of routes defined inside ``write_router``.

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel
from pymongo.errors import PyMongoError

from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.publishing import PublishUnavailableError
from switchboard_router.access import Caller, Credential, require_self
from switchboard_router.assignment.model import RouteState, RouteStatus
from switchboard_router.timeline.documents import ms
from switchboard_router.workspace.commands import (
    AcceptRequest,
    Action,
    Command,
    NoteRequest,
    PresenceRequest,
    RejectRequest,
    ReplyRequest,
    StatusRequest,
    TransferRequest,
    WorkspaceRequest,
    to_event,
)
from switchboard_router.workspace.requests_store import RequestRecord, RequestStore

log = get_logger(__name__)

Publish = Callable[[Outgoing], Awaitable[None]]
ConversationExists = Callable[[str], Awaitable[bool]]
RouteOf = Callable[[str], Awaitable[RouteState | None]]


class Accepted(BaseModel):
    """The answer to every write: the event Kafka now has."""

    request_id: str
    event_type: str
    event_id: str
    conversation_id: str | None = None


UNKNOWN_CONVERSATION = "no conversation has this id"
REUSED = "this request_id was already used for a different request"
NOT_OFFERED = (
    "this conversation is not offered to you "
    "(the offer was answered, expired or is another agent's)"
)
KAFKA_DOWN = "Kafka did not take the event; retry with the same request_id"
DATABASE_DOWN = "the database is unavailable; retry with the same request_id"

_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "the request_id was used for another request, or the state forbids it"},
    503: {"description": "Kafka or the database unavailable: retry with the same request_id"},
}
_ON_CONVERSATION: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"description": UNKNOWN_CONVERSATION},
}
Check = Callable[[], Awaitable[None]]


def _agent(who: Credential) -> str:
    # The middleware lets only agent tokens write; this keeps a mistake there from
    # publishing an event that names nobody.
    if who.agent_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only an agent token acts in the workspace")
    return who.agent_id


class WriteDesk:
    """Claims, checks and publishes one command at a time (the routes' common part)."""

    def __init__(
        self,
        requests: RequestStore,
        publish: Publish,
        *,
        conversation_exists: ConversationExists,
        route_of: RouteOf,
        clock: Callable[[], datetime],
    ) -> None:
        self.requests = requests
        self.publish = publish
        self.conversation_exists = conversation_exists
        self.route_of = route_of
        self.clock = clock

    async def perform(self, command: Command, check: Check | None = None) -> Accepted:
        digest = command.digest()
        item = None
        try:
            record = await self.requests.get(command.request_id)
            if record is None:
                # Checked only for a new request: a retry is answered as the first was,
                # whatever happened to the conversation since.
                if check is not None:
                    await check()
                # The database keeps milliseconds: a retry's event time equals the first's.
                item = to_event(command, ms(self.clock()))
                fresh = RequestRecord.of(command.request_id, command.agent_id, digest, item)
                record = await self.requests.claim(fresh)
        except PyMongoError as error:
            log.warning("workspace request not stored", error_type=type(error).__name__)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, DATABASE_DOWN) from None
        if record.agent_id != command.agent_id or record.digest != digest:
            raise HTTPException(status.HTTP_409_CONFLICT, REUSED)
        if item is None or record.at != item.time:
            # A retry (or a claim lost to a racing first): the same body (digest) with the
            # stored time and id is the very event first published, rebuilt rather than
            # stored so no customer text is kept.
            item = to_event(command, record.at)
        try:
            await self.publish(item)
        except PublishUnavailableError as error:
            log.warning("workspace event not published", action=command.action, error=str(error))
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, KAFKA_DOWN) from None
        return Accepted(
            request_id=record.request_id,
            event_type=record.event_type,
            event_id=record.event_id,
            conversation_id=command.conversation_id,
        )

    def known(self, conversation_id: str) -> Check:
        async def check() -> None:
            if not await self.conversation_exists(conversation_id):
                raise HTTPException(status.HTTP_404_NOT_FOUND, UNKNOWN_CONVERSATION)

        return check

    def offered(self, conversation_id: str, agent_id: str) -> Check:
        async def check() -> None:
            state = await self.route_of(conversation_id)
            if state is None or state.status != RouteStatus.OFFERED or state.agent_id != agent_id:
                # An offer implies the conversation: its existence is read only to tell
                # an unknown conversation (404) from one not offered to this agent (409).
                await self.known(conversation_id)()
                raise HTTPException(status.HTTP_409_CONFLICT, NOT_OFFERED)

        return check

    async def on_conversation(
        self, action: Action, who: Credential, conversation_id: str, body: WorkspaceRequest
    ) -> Accepted:
        agent_id = _agent(who)
        command = Command(action, agent_id, conversation_id, body)
        if action in ("accept", "reject"):
            return await self.perform(command, self.offered(conversation_id, agent_id))
        return await self.perform(command, self.known(conversation_id))


def write_router(desk: WriteDesk) -> APIRouter:
    router = APIRouter(tags=["workspace"])
    on = desk.on_conversation
    path = "/conversations/{conversation_id}"
    accepted: dict[str, Any] = {
        "status_code": status.HTTP_202_ACCEPTED,
        "response_model": Accepted,
        "response_model_exclude_none": True,
    }

    @router.put("/agents/{agent_id}/presence", responses=_ERRORS, **accepted)
    async def presence(agent_id: str, body: PresenceRequest, who: Caller) -> Accepted:
        """Set the agent's presence (``support.agent.status_changed``)."""
        require_self(who, agent_id)
        return await desk.perform(Command("presence", _agent(who), None, body))

    @router.post(f"{path}/accept", responses=_ON_CONVERSATION, **accepted)
    async def accept(conversation_id: str, body: AcceptRequest, who: Caller) -> Accepted:
        """Accept the conversation offered to this agent (``support.offer.accepted``);
        409 when it is not offered to them now."""
        return await on("accept", who, conversation_id, body)

    @router.post(f"{path}/reject", responses=_ON_CONVERSATION, **accepted)
    async def reject(conversation_id: str, body: RejectRequest, who: Caller) -> Accepted:
        """Reject the conversation offered to this agent (``support.offer.rejected``);
        409 when it is not offered to them now."""
        return await on("reject", who, conversation_id, body)

    @router.post(f"{path}/replies", responses=_ON_CONVERSATION, **accepted)
    async def reply(conversation_id: str, body: ReplyRequest, who: Caller) -> Accepted:
        """Answer the customer (``support.reply.requested``, ``reply_id`` = request_id);
        what became of it follows as ``support.delivery.updated``."""
        return await on("reply", who, conversation_id, body)

    @router.post(f"{path}/notes", responses=_ON_CONVERSATION, **accepted)
    async def note(conversation_id: str, body: NoteRequest, who: Caller) -> Accepted:
        """An internal note, never sent to the customer (``support.note.added``,
        ``note_id`` = request_id)."""
        return await on("note", who, conversation_id, body)

    @router.post(f"{path}/resolve", responses=_ON_CONVERSATION, **accepted)
    async def resolve(conversation_id: str, body: StatusRequest, who: Caller) -> Accepted:
        """Resolve the conversation (``support.conversation.resolved``)."""
        return await on("resolve", who, conversation_id, body)

    @router.post(f"{path}/reopen", responses=_ON_CONVERSATION, **accepted)
    async def reopen(conversation_id: str, body: StatusRequest, who: Caller) -> Accepted:
        """Reopen the conversation (``support.conversation.reopened``)."""
        return await on("reopen", who, conversation_id, body)

    @router.post(f"{path}/transfer", responses=_ON_CONVERSATION, **accepted)
    async def transfer(conversation_id: str, body: TransferRequest, who: Caller) -> Accepted:
        """Transfer to a queue or to a named agent, exactly one of them
        (``support.conversation.transferred``, from this agent)."""
        return await on("transfer", who, conversation_id, body)

    return router
