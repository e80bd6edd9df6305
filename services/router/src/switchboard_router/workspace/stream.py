"""``GET /agents/{agent_id}/events``: an agent's live updates as Server-Sent Events.

The stream opens with ``ready`` (fetch or refetch the inbox now: nothing after this
point is missed), then carries this replica's ``LiveHub`` updates for the agent, and a
comment line every ``heartbeat`` seconds so proxies keep the connection open. It ends
with ``reset`` when it fell behind or the router stops: reconnect and refetch.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations.

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from switchboard_router.access import Caller, require_self
from switchboard_router.workspace.live import READY, RESET, LiveHub, LiveUpdate

HEARTBEAT = b": keep-alive\n\n"


def encode(update: LiveUpdate) -> bytes:
    """One SSE event: its name and its data as one line of JSON."""
    data = json.dumps(update.data, separators=(",", ":"), sort_keys=True)
    return f"event: {update.event}\ndata: {data}\n\n".encode()


def stream_router(hub: LiveHub, *, heartbeat: float) -> APIRouter:
    router = APIRouter(tags=["workspace"])

    @router.get(
        "/agents/{agent_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "events: ready, offer, assigned, unassigned, message, "
                "delivery, note, conversation, reset; data is JSON with type and "
                "conversation_id",
            }
        },
    )
    async def events(agent_id: str, who: Caller) -> StreamingResponse:
        """The agent's live updates (Server-Sent Events). Read with ``fetch()`` so the
        bearer token stays in the header; an agent token only for its own agent."""
        require_self(who, agent_id)
        # Subscribed before ``ready`` is sent: an update between the client's refetch
        # and its first read is queued, not lost.
        stream = hub.open(agent_id)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield encode(LiveUpdate(READY, {"type": READY, "agent_id": agent_id}))
                while True:
                    update = await hub.next(stream, heartbeat)
                    if update is None:
                        yield HEARTBEAT
                        continue
                    yield encode(update)
                    if update.event == RESET:
                        return
            finally:
                hub.close(stream)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
