"""The timeline read API and the customer admin endpoints (FastAPI routers).

Read (JSON; lists are ``{"items": [...], "next": <cursor or null>}``):

- ``GET /customers?identity=<kind>:<value>`` — the customer an identity belongs to;
  ``GET /customers?q=`` searches (``switchboard_router.workspace.read_api``);
- ``GET /customers/{customer_id}`` — one customer with identities, merges and profile;
- ``GET /customers/{customer_id}/timeline`` — the complete timeline of the customer (and
  of the customers merged into it) across channels in time order: typed items, customer
  messages (``message``, with conversation boundaries: each says whether it opened or
  reopened its conversation) and agent-side activity (``workspace.activity``);
  ``conversations`` summarises the conversations on the page;
- ``GET /conversations/{conversation_id}`` — one conversation, its state and its items
  (plus its agent, routing state and SLA due times, from the workspace).

Admin (the admin token only; see ``switchboard_router.access``). Audit records name the
credential that asked (``token:admin``), never a name from the request body:

- ``POST /admin/customers/{customer_id}/profile`` — link a CRM profile (merges by rule);
- ``POST /admin/merges``, ``GET /admin/merges?customer_id=``, ``GET /admin/merges/{id}``,
  ``POST /admin/merges/{id}/undo`` — manual merge and unmerge;
- ``POST /admin/customers/{customer_id}/erasure``, ``GET /admin/erasures/{id}`` — GDPR.
"""

# No `from __future__ import annotations`: FastAPI must see the page-size bounds, which
# come from the settings, when the routes are defined.

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from switchboard_common.mongo import Document
from switchboard_router.access import ADMIN_PREFIX, Caller
from switchboard_router.settings import RouterSettings
from switchboard_router.timeline.admin import (
    CustomerConflictError,
    CustomerDirectory,
    CustomerNotFoundError,
    CustomerView,
)
from switchboard_router.timeline.documents import CursorError, decode_cursor, json_ready
from switchboard_router.timeline.identity import IdentityError, parse_identity
from switchboard_router.timeline.linking import Profile
from switchboard_router.timeline.ports import ErasureRecord, MergeRecord, Page, TimelineStore
from switchboard_router.workspace.activity import item_view
from switchboard_router.workspace.timeline_page import TimelinePage, merge_page

if TYPE_CHECKING:  # the workspace's store is handed in; imported for types only
    from switchboard_router.workspace.activity_store import ActivityStore

_T = TypeVar("_T")
#: What the workspace adds to a conversation's answer (routing, SLA due), by its id.
ConversationExtras = Callable[[str], Awaitable[dict[str, Any]]]
#: The workspace's customer search: (``q``, limit, cursor) → a list answer.
CustomerSearch = Callable[[str, int, str | None], Awaitable[dict[str, Any]]]

#: Internal fields of stored documents that the API does not show.
_HIDDEN_MESSAGE = {"_id", "rule", "claim"}
_HIDDEN_CONVERSATION = {"_id", "sender", "thread", "subject_key"}


# --------------------------------------------------------------------------- shaping


def message_view(document: Document) -> dict[str, Any]:
    """A customer message as a timeline item: ``item_id``, ``type``, ``at`` (its
    ``received_at``) first, then every field a message had before items were typed."""
    view = json_ready({k: v for k, v in document.items() if k not in _HIDDEN_MESSAGE})
    head = {"item_id": document["_id"], "type": "message", "at": view.get("received_at")}
    view = {**head, "message_id": document["_id"], **view}
    view["threading_rule"] = document.get("rule")
    view["conversation_start"] = document.get("placement") in ("opened", "reopened")
    return view


def conversation_view(document: Document) -> dict[str, Any]:
    view = json_ready({k: v for k, v in document.items() if k not in _HIDDEN_CONVERSATION})
    return {"conversation_id": document["_id"], **view}


def customer_view(view: CustomerView) -> dict[str, Any]:
    customer = view.customer
    return {
        "customer_id": customer.customer_id,
        "created_at": json_ready({"t": customer.created_at})["t"],
        "display_name": customer.display_name,
        "merged_into": view.merged_into,
        "members": list(view.members),
        "identities": [
            {
                "identity": i.identity,
                "customer_id": i.customer_id,
                "linked_by": i.linked_by,
                "created_at": json_ready({"t": i.created_at})["t"],
            }
            for i in view.identities
        ],
        "profile": dataclasses.asdict(customer.profile),
        "erased": customer.erased_at is not None,
    }


def record_view(record: MergeRecord | ErasureRecord) -> dict[str, Any]:
    return json_ready(dataclasses.asdict(record))


def _page(cursor: str | None, limit: int) -> Page:
    try:
        after = decode_cursor(cursor) if cursor else None
    except CursorError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    return Page(after=after, limit=limit + 1)


def _views(page: TimelinePage) -> list[dict[str, Any]]:
    return [
        message_view(e.document) if e.is_message else item_view(e.document) for e in page.entries
    ]


# --------------------------------------------------------------------------- read routes


def read_router(
    directory: CustomerDirectory,
    timeline: TimelineStore,
    settings: RouterSettings,
    activity: "ActivityStore",
    *,
    extras: ConversationExtras,
    search: CustomerSearch,
) -> APIRouter:
    router = APIRouter(tags=["timeline"])
    default, largest = settings.timeline_page_size, settings.timeline_page_max
    Limit = Annotated[int, Query(ge=1, le=largest, description="items per page")]  # noqa: N806 - a type alias
    Cursor = Annotated[str | None, Query(description="the `next` of the previous page")]  # noqa: N806 - a type alias

    @router.get("/customers")
    async def find_customer(
        identity: Annotated[str | None, Query(description="e.g. email:ana@example.com")] = None,
        q: Annotated[
            str | None,
            Query(description="search: part of a display name, or an identity (2+ characters)"),
        ] = None,
        limit: Limit = default,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """The customer a sender identity belongs to (after merges), or with ``q`` the
        customers whose display name or identity it matches."""
        if q is not None and identity is None:
            return await search(q, limit, cursor)
        if identity is None or q is not None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "give identity or q")
        try:
            canonical = parse_identity(identity)
        except IdentityError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        view = await directory.find(canonical)
        return {"items": [customer_view(view)] if view else [], "next": None}

    @router.get("/customers/{customer_id}")
    async def get_customer(customer_id: str) -> dict[str, Any]:
        view = await directory.view(customer_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no customer {customer_id}")
        return customer_view(view)

    @router.get("/customers/{customer_id}/timeline")
    async def get_timeline(
        customer_id: str, limit: Limit = default, cursor: Cursor = None
    ) -> dict[str, Any]:
        """Every item across all channels in time order: customer messages (with
        conversation boundaries) and agent-side activity, typed."""
        view = await directory.view(customer_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no customer {customer_id}")
        customers, position = [customer_id, *view.members], _page(cursor, limit)
        messages, items = await asyncio.gather(
            timeline.timeline(customers, position), activity.items(customers, position)
        )
        page = merge_page(messages, items, limit)
        conversations = await timeline.get_conversations(
            sorted({e.document["conversation_id"] for e in page.entries})
        )
        return {
            "customer_id": customer_id,
            "merged_into": view.merged_into,
            "items": _views(page),
            "next": page.next,
            "conversations": {k: conversation_view(v) for k, v in conversations.items()},
        }

    @router.get("/conversations/{conversation_id}")
    async def get_conversation(
        conversation_id: str, limit: Limit = default, cursor: Cursor = None
    ) -> dict[str, Any]:
        """One conversation: its state and its items (messages and activity) in time
        order."""
        document = await timeline.get_conversation(conversation_id)
        if document is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no conversation {conversation_id}")
        position = _page(cursor, limit)
        messages, items, count, more = await asyncio.gather(
            timeline.conversation_messages(conversation_id, position),
            activity.conversation_items(conversation_id, position),
            timeline.count_messages(conversation_id),
            extras(conversation_id),
        )
        page = merge_page(messages, items, limit)
        conversation = {**conversation_view(document), "message_count": count, **more}
        return {
            "conversation": conversation,
            "items": _views(page),
            "next": page.next,
        }

    return router


# --------------------------------------------------------------------------- admin routes


class ProfileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, description="recorded with any merge")
    external_id: str | None = None
    verified_emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)
    tier: str | None = None


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = None
    survivor_customer_id: str = Field(min_length=1)
    absorbed_customer_id: str = Field(min_length=1)


class UndoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = None


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, description="e.g. the data subject's request id")


def admin_router(directory: CustomerDirectory) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"])

    @router.post("/customers/{customer_id}/profile")
    async def link_profile(
        customer_id: str, request: ProfileRequest, who: Caller
    ) -> dict[str, Any]:
        """Add a CRM profile; merges whoever it shows to be the same person."""
        try:
            profile = Profile.normalised(
                external_id=request.external_id,
                verified_emails=request.verified_emails,
                phones=request.phones,
                tier=request.tier,
            )
        except IdentityError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        outcome = await _guard(
            directory.link_profile(customer_id, profile, actor=who.name, note=request.note)
        )
        return {
            "customer_id": outcome.customer_id,
            "profile": dataclasses.asdict(outcome.profile),
            "merges": [record_view(m) for m in outcome.merges],
            "refused": [dataclasses.asdict(r) for r in outcome.refusals],
        }

    @router.post("/merges", status_code=status.HTTP_201_CREATED)
    async def merge(request: MergeRequest, who: Caller) -> dict[str, Any]:
        record = await _guard(
            directory.merge(
                request.survivor_customer_id,
                request.absorbed_customer_id,
                actor=who.name,
                note=request.note,
            )
        )
        return record_view(record)

    @router.get("/merges")
    async def list_merges(customer_id: str) -> dict[str, Any]:
        return {
            "items": [record_view(m) for m in await directory.merges(customer_id)],
            "next": None,
        }

    @router.get("/merges/{merge_id}")
    async def get_merge(merge_id: str) -> dict[str, Any]:
        return record_view(await _guard(directory.merge_record(merge_id)))

    @router.post("/merges/{merge_id}/undo")
    async def undo_merge(merge_id: str, request: UndoRequest, who: Caller) -> dict[str, Any]:
        record = await _guard(directory.unmerge(merge_id, actor=who.name, note=request.note))
        return record_view(record)

    @router.post("/customers/{customer_id}/erasure")
    async def erase(customer_id: str, request: ErasureRequest, who: Caller) -> dict[str, Any]:
        """Erase the customer's personal data (GDPR) and record an audit entry."""
        record = await _guard(directory.erase(customer_id, actor=who.name, reason=request.reason))
        return record_view(record)

    @router.get("/erasures/{erasure_id}")
    async def get_erasure(erasure_id: str) -> dict[str, Any]:
        return record_view(await _guard(directory.erasure_record(erasure_id)))

    return router


async def _guard(call: Awaitable[_T]) -> _T:
    """Await a directory call, turning its errors into HTTP answers."""
    try:
        return await call
    except CustomerNotFoundError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    except CustomerConflictError as error:
        detail: dict[str, Any] = {"reason": error.reason}
        if error.record is not None:
            detail["merge"] = record_view(error.record)
        raise HTTPException(status.HTTP_409_CONFLICT, detail) from error
