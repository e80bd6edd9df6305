"""The workspace's read API: an agent's inbox, the conversation list, the customer
search and what ``GET /conversations/{id}`` adds to its conversation.

- ``GET /agents/{agent_id}/conversations`` — conversations offered to or held by the
  agent (offered, assigned, awaiting the customer), most urgent first;
- ``GET /conversations?status=&queue=&agent=&channel=`` — every conversation routing
  knows, newest first, filtered;
- ``GET /customers?q=`` (served by the timeline's ``/customers`` route, which hands
  ``q`` here) — customers by display name or sender identity;
- ``conversation_extras`` — agent, routing state and SLA due times of one conversation.

Every answer costs a fixed number of round trips, whatever the page holds: one bounded
list query, then one ``_id`` ``$in`` read per other collection (timeline conversations,
customers, SLA due times), the three concurrently. Nothing is read per conversation.
"""

# No `from __future__ import annotations`: FastAPI must see the page-size bounds, which
# come from the settings, when the routes are defined.

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from switchboard_router.access import Caller, require_self
from switchboard_router.assignment.clock import Clock
from switchboard_router.assignment.model import RouteState
from switchboard_router.assignment.store import AssignmentStore, MongoAssignmentStore
from switchboard_router.context import RouterContext
from switchboard_router.settings import RouterSettings
from switchboard_router.timeline.mongo import MongoIdentityStore, MongoTimelineStore
from switchboard_router.timeline.ports import IdentityRecord, IdentityStore, TimelineStore
from switchboard_router.timeline.resolve import follow_merges
from switchboard_router.workspace.customers import CustomerNames, MongoCustomerNames
from switchboard_router.workspace.routes import (
    MongoRouteReads,
    RouteOrder,
    RouteQuery,
    RouteReads,
    route_key,
)
from switchboard_router.workspace.shaping import (
    INBOX,
    QueryError,
    conversation_item,
    customer_cursor,
    customer_hit,
    customer_names,
    customer_position,
    identity_candidates,
    parse_channel,
    parse_statuses,
    route_cursor,
    route_position,
    routing_fields,
    search_text,
)
from switchboard_router.workspace.sla_due import MongoSlaDueTimes, SlaDueTimes


def _bad(error: QueryError) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, str(error))


@dataclass(frozen=True)
class WorkspaceReads:
    """The read side of the workspace over the router's stores."""

    routes: RouteReads
    assignment: AssignmentStore
    timeline: TimelineStore
    identities: IdentityStore
    names: CustomerNames
    sla: SlaDueTimes
    clock: Clock

    async def ensure_indexes(self) -> None:
        await self.routes.ensure_indexes()

    async def page(
        self, query: RouteQuery, order: RouteOrder, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """One page of heads as list items, with the cursor of the next page."""
        try:
            after = route_position(order, cursor)
        except QueryError as error:
            raise _bad(error) from error
        states = await self.routes.page(query, order, after, limit + 1)
        page, more = states[:limit], len(states) > limit
        items = await self._items(page)
        following = route_cursor(order, route_key(page[-1])) if more and page else None
        return {"items": items, "next": following}

    async def _items(self, states: Sequence[RouteState]) -> list[dict[str, Any]]:
        ids = [s.conversation_id for s in states]
        conversations, due = await asyncio.gather(
            self.timeline.get_conversations(ids), self.sla.due_times(ids)
        )
        customers = await self.identities.get_customers(customer_names(states, conversations))
        names = {key: record.display_name for key, record in customers.items()}
        now = self.clock.now()
        return [
            conversation_item(
                s, conversations.get(s.conversation_id), names, due.get(s.conversation_id), now
            )
            for s in states
        ]

    async def conversation_extras(self, conversation_id: str) -> dict[str, Any]:
        """The fields ``GET /conversations/{id}`` adds to its ``conversation``."""
        head, due = await asyncio.gather(
            self.assignment.head(conversation_id), self.sla.due_times([conversation_id])
        )
        return routing_fields(head, due.get(conversation_id))

    async def search_customers(self, q: str, limit: int, cursor: str | None) -> dict[str, Any]:
        """Customers whose display name holds ``q`` or who own the identity it names,
        by customer id."""
        try:
            text, after = search_text(q), customer_position(cursor)
        except QueryError as error:
            raise _bad(error) from error
        owned, named = await asyncio.gather(
            self.identities.get_identities(identity_candidates(text)),
            self.names.search(text, after, limit + 1),
        )
        matched: dict[str, set[str]] = {}
        for record in owned.values():
            if after is None or record.customer_id > after:
                matched.setdefault(record.customer_id, set()).add("identity")
        for customer_id in named:
            matched.setdefault(customer_id, set()).add("name")
        # The identity matches are few and all past ``after``; the name matches are the
        # first ``limit + 1`` past it: together they hold this page exactly.
        ordered = sorted(matched)
        page, more = ordered[:limit], len(ordered) > limit
        customers, identities, merged = await asyncio.gather(
            self.identities.get_customers(page),
            self.identities.identities_of(page) if page else _nothing(),
            self._merged_into(page),
        )
        owned_by: dict[str, list[str]] = {}
        for identity in identities:
            owned_by.setdefault(identity.customer_id, []).append(identity.identity)
        items = [
            customer_hit(
                customer_id,
                customers[customer_id].display_name if customer_id in customers else None,
                owned_by.get(customer_id, []),
                merged.get(customer_id),
                sorted(matched[customer_id]),
            )
            for customer_id in page
        ]
        return {"items": items, "next": customer_cursor(page[-1]) if more and page else None}

    async def _merged_into(self, customer_ids: Sequence[str]) -> dict[str, str]:
        """Customer → the root it is merged into (for those merged)."""
        roots = await follow_merges(self.identities, customer_ids)
        return {c: r for c, r in roots.items() if r != c}


def workspace_reads(
    ctx: RouterContext, assignment: MongoAssignmentStore, clock: Clock
) -> WorkspaceReads:
    """The read side on the router's database: the stores' own collections, and the SLA
    monitor's published due times."""
    identities = MongoIdentityStore(ctx.db)
    return WorkspaceReads(
        routes=MongoRouteReads(assignment.routes_),
        assignment=assignment,
        timeline=MongoTimelineStore(ctx.db),
        identities=identities,
        names=MongoCustomerNames(identities.customers),
        sla=MongoSlaDueTimes(ctx.db),
        clock=clock,
    )


async def _nothing() -> list[IdentityRecord]:
    return []


def read_router(reads: WorkspaceReads, settings: RouterSettings) -> APIRouter:
    router = APIRouter(tags=["workspace"])
    default, largest = settings.timeline_page_size, settings.timeline_page_max
    Limit = Annotated[int, Query(ge=1, le=largest, description="items per page")]  # noqa: N806 - a type alias
    Cursor = Annotated[str | None, Query(description="the `next` of the previous page")]  # noqa: N806 - a type alias

    @router.get("/agents/{agent_id}/conversations")
    async def inbox(
        agent_id: str, who: Caller, limit: Limit = default, cursor: Cursor = None
    ) -> dict[str, Any]:
        """The agent's inbox: conversations offered to them, assigned to them or
        awaiting their customer, most urgent first (priority, then waiting time)."""
        require_self(who, agent_id)
        if await reads.assignment.agent(agent_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agent {agent_id}")
        query = RouteQuery(statuses=INBOX, agent_id=agent_id)
        return await reads.page(query, RouteOrder.QUEUE, limit, cursor)

    @router.get("/conversations")
    async def conversations(
        *,
        status_: Annotated[
            str | None,
            Query(
                alias="status",
                description="waiting, offered, assigned, awaiting_customer or resolved "
                "(several: comma-separated)",
            ),
        ] = None,
        queue: Annotated[str | None, Query(description="a queue of the routing policy")] = None,
        agent: Annotated[str | None, Query(description="the agent holding it")] = None,
        channel: Annotated[str | None, Query(description="e.g. email, whatsapp")] = None,
        limit: Limit = default,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Conversations as routing has them, newest first (by when they started
        waiting), filtered by routing state, queue, agent and channel."""
        try:
            query = RouteQuery(
                statuses=parse_statuses(status_),
                agent_id=agent,
                queue=queue,
                channel=parse_channel(channel),
            )
        except QueryError as error:
            raise _bad(error) from error
        return await reads.page(query, RouteOrder.RECENT, limit, cursor)

    return router
