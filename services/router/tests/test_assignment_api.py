"""``GET /queue`` and ``GET /agents`` over the in-memory store: order, positions, waiting
time, cursors, load per channel, and a clear 400 for a bad cursor."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from switchboard_common.contract import Priority
from switchboard_devtools.testing.router_assignment import T0, agent, state
from switchboard_router.assignment.api import assignment_router
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.model import RouteStatus, Slot
from switchboard_router.assignment.store import InMemoryAssignmentStore

pytestmark = pytest.mark.unit


async def client() -> tuple[httpx.AsyncClient, InMemoryAssignmentStore]:
    store = InMemoryAssignmentStore()
    app = FastAPI()
    app.include_router(assignment_router(store, FakeClock(T0 + timedelta(seconds=100))))
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://router"), store


async def test_the_queue_lists_waiting_conversations_in_order_page_by_page() -> None:
    http, store = await client()
    await store.put_head(state("late", waiting_since=T0 + timedelta(seconds=50)))
    await store.put_head(state("early", waiting_since=T0))
    await store.put_head(
        state("vip", priority=Priority.URGENT, waiting_since=T0 + timedelta(seconds=90))
    )
    await store.put_head(state("taken", status=RouteStatus.ASSIGNED, agent_id="a1"))
    first = (await http.get("/queue", params={"limit": 2})).json()
    assert [(i["conversation_id"], i["position"]) for i in first["items"]] == [
        ("vip", 1),
        ("early", 2),
    ]
    assert first["items"][1]["waiting_seconds"] == 100.0
    rest = (await http.get("/queue", params={"limit": 2, "cursor": first["next"]})).json()
    assert [(i["conversation_id"], i["position"]) for i in rest["items"]] == [("late", 3)]
    assert rest["next"] is None
    assert (await http.get("/queue", params={"cursor": "bm9wZQ"})).status_code == 400
    assert (await http.get("/queue", params={"priority": "urgent"})).json()["items"][0][
        "conversation_id"
    ] == "vip"


async def test_agents_show_presence_capacity_and_load_per_channel() -> None:
    http, store = await client()
    await store.save_agents([agent("b"), agent("a")])
    await store.reserve([Slot("a|email|0", "a", "email", "c1", 1, T0)])
    await store.reserve([Slot("a|*|0", "a", "*", "c1", 1, T0)])
    page = (await http.get("/agents", params={"limit": 1})).json()
    (first,) = page["items"]
    assert (first["agent_id"], first["status"], first["load"]) == ("a", "online", {"email": 1})
    assert first["capacity"] == {"email": 3}
    rest = (await http.get("/agents", params={"cursor": page["next"]})).json()
    assert [a["agent_id"] for a in rest["items"]] == ["b"]
    assert rest["next"] is None
