"""Read API of assignment: ``GET /queue`` and ``GET /agents``.

Both read the database (the authority), not a replica's view, so every replica answers
the same. Lists are ``{"items": [...], "next": <cursor or null>}``; the cursor is opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from switchboard_common.contract import Channel, Priority
from switchboard_router.assignment.clock import Clock
from switchboard_router.assignment.matcher import queue_key
from switchboard_router.assignment.model import RouteStatus
from switchboard_router.assignment.store import AssignmentStore


def _encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _decode(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise HTTPException(status_code=400, detail="invalid cursor") from None


def assignment_router(store: AssignmentStore, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["assignment"])

    @router.get("/queue")
    async def queue(
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: str | None = None,
        queue: str | None = None,
        channel: Channel | None = None,
        priority: Priority | None = None,
    ) -> dict[str, Any]:
        """Waiting conversations in queue order (priority, then waiting time), each with
        its position (1 = next to be served) and how long it has waited."""
        now = clock.now()
        waiting = sorted(await store.routes([RouteStatus.WAITING]), key=queue_key)
        start = 0
        if cursor is not None:
            after = _decode(cursor)
            try:
                rank, since, cid = after
                key = (int(rank), datetime.fromisoformat(str(since)), str(cid))
            except (TypeError, ValueError):
                raise HTTPException(status_code=400, detail="invalid cursor") from None
            start = next((i for i, s in enumerate(waiting) if queue_key(s) > key), len(waiting))
        items: list[dict[str, Any]] = []
        last: tuple[int, datetime, str] | None = None
        more = False
        for position, state in enumerate(waiting[start:], start=start + 1):
            if queue is not None and state.queue != queue:
                continue
            if channel is not None and state.channel != channel:
                continue
            if priority is not None and state.priority != priority:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(
                {
                    "conversation_id": state.conversation_id,
                    "customer_id": state.customer_id,
                    "position": position,
                    "queue": state.queue,
                    "channel": str(state.channel),
                    "priority": str(state.priority),
                    "required_skills": sorted(state.skills),
                    "waiting_since": state.waiting_since.isoformat(),
                    "waiting_seconds": round((now - state.waiting_since).total_seconds(), 3),
                    "excluded_agents": list(state.excluded_agents),
                    "seq": state.seq,
                }
            )
            last = queue_key(state)
        next_cursor = None
        if more and last is not None:
            next_cursor = _encode([last[0], last[1].isoformat(), last[2]])
        return {"items": items, "next": next_cursor}

    @router.get("/agents")
    async def agents(
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Agents by id with presence, capacity and current load per channel."""
        after = None if cursor is None else str(_decode(cursor))
        page = await store.agents_page(after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        wanted = {a.agent_id for a in page}
        load: dict[str, dict[str, int]] = {}
        for slot in await store.held_slots():
            if slot.agent_id in wanted and slot.channel != "*":
                per_agent = load.setdefault(slot.agent_id, {})
                per_agent[slot.channel] = per_agent.get(slot.channel, 0) + 1
        items = [
            {
                "agent_id": a.agent_id,
                "display_name": a.display_name,
                "status": str(a.status),
                "status_since": None if a.status_since is None else a.status_since.isoformat(),
                "capacity": {str(c): n for c, n in a.capacity.items()},
                "total_capacity": a.total_capacity,
                "load": load.get(a.agent_id, {}),
                "skills": dict(a.skills),
                "languages": sorted(a.languages),
                "tenant": a.tenant,
            }
            for a in page
        ]
        return {"items": items, "next": _encode(page[-1].agent_id) if more and page else None}

    return router
