"""The workspace's read answers without a server: query values, cursors, items, and
``WorkspaceReads`` over the in-memory stores (inbox, list, detail fields, search)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from fastapi import HTTPException

from switchboard_common.contract import Channel, Priority
from switchboard_devtools.testing.router_assignment import T0, agent, state
from switchboard_router.assignment.clock import FakeClock
from switchboard_router.assignment.model import RouteStatus
from switchboard_router.assignment.store import InMemoryAssignmentStore
from switchboard_router.timeline.memory import InMemoryIdentityStore, InMemoryTimelineStore
from switchboard_router.timeline.ports import CustomerRecord, IdentityRecord, Membership
from switchboard_router.workspace.customers import InMemoryCustomerNames
from switchboard_router.workspace.read_api import WorkspaceReads
from switchboard_router.workspace.routes import InMemoryRouteReads, RouteOrder, RouteQuery
from switchboard_router.workspace.shaping import (
    INBOX,
    QueryError,
    conversation_item,
    identity_candidates,
    name_matches,
    parse_channel,
    parse_statuses,
    route_cursor,
    route_position,
    routing_fields,
    search_text,
)
from switchboard_router.workspace.sla_due import InMemorySlaDueTimes

pytestmark = pytest.mark.unit

NOW = T0 + timedelta(minutes=10)
DUE = {"first_response": T0 + timedelta(hours=1)}


def test_status_and_channel_values_are_checked() -> None:
    assert parse_statuses(None) is None
    assert parse_statuses("offered") == frozenset({RouteStatus.OFFERED})
    assert parse_statuses("offered, assigned") == frozenset(
        {RouteStatus.OFFERED, RouteStatus.ASSIGNED}
    )
    for wrong in ("open", "", ",", "assigned,open"):
        with pytest.raises(QueryError, match="status must be among"):
            parse_statuses(wrong)
    assert parse_channel("whatsapp") == "whatsapp"
    with pytest.raises(QueryError):
        parse_channel("fax")


def test_cursors_round_trip_and_anything_else_is_refused() -> None:
    key = (2, T0, "conv-1")
    for order in RouteOrder:
        assert route_position(order, route_cursor(order, key)) == key
    assert route_position(RouteOrder.QUEUE, None) is None
    inbox_cursor = route_cursor(RouteOrder.QUEUE, key)
    for wrong in ("nope", "bm9wZQ", "W10", inbox_cursor[:-3]):
        with pytest.raises(QueryError, match="invalid cursor"):
            route_position(RouteOrder.QUEUE, wrong)
    with pytest.raises(QueryError):  # a cursor of another list
        route_position(RouteOrder.RECENT, inbox_cursor)


def test_search_text_and_the_identities_it_may_name() -> None:
    assert search_text("  an ") == "an"
    for wrong in ("", " a ", "x" * 201):
        with pytest.raises(QueryError):
            search_text(wrong)
    assert identity_candidates("Ana@Example.com") == ["email:ana@example.com"]
    assert identity_candidates("+34 600 111 222") == ["whatsapp:+34600111222"]
    assert identity_candidates("whatsapp:+34600111222") == ["whatsapp:+34600111222"]
    # A bare number may be a phone (WhatsApp) or an X user id: both are looked up.
    assert identity_candidates("34600111222") == ["whatsapp:+34600111222", "x:34600111222"]
    assert identity_candidates("123456") == ["x:123456"]
    assert identity_candidates("Ana Gómez") == []
    assert name_matches("Ana GÓMEZ", "gómez")
    assert not name_matches(None, "an")
    assert not name_matches("Bea", "ana")


def test_an_item_shows_routing_timeline_customer_and_sla() -> None:
    offered = state(
        "c1",
        status=RouteStatus.OFFERED,
        agent_id="ana",
        customer_id="root",
        offer_expires_at=T0 + timedelta(minutes=15),
    )
    stored = {"customer_id": "member", "subject": "Invoice", "last_message_at": T0}
    item = conversation_item(offered, stored, {"root": None, "member": "Ana"}, DUE, NOW)
    assert item == {
        "conversation_id": "c1",
        "customer_id": "root",
        "customer_name": "Ana",  # the root has no name: the one it is filed under
        "channel": "email",
        "priority": "normal",
        "queue": "general",
        "state": "offered",
        "agent_id": "ana",
        "offered_until": "2026-03-02T09:15:00Z",
        "waiting_since": "2026-03-02T09:00:00Z",
        "waiting_seconds": 600.0,
        "subject": "Invoice",
        "last_message_at": "2026-03-02T09:00:00Z",
        "sla": {"first_response": "2026-03-02T10:00:00Z"},
    }
    # Assigned: the offer's deadline is history, not shown.
    assigned = state(
        "c1", status=RouteStatus.ASSIGNED, agent_id="ana", offer_expires_at=T0 + timedelta(1)
    )
    shown = conversation_item(assigned, None, {}, None, NOW)
    assert (shown["offered_until"], shown["subject"], shown["sla"]) == (None, None, {})


def test_the_detail_fields_are_null_before_routing_decided_anything() -> None:
    assert routing_fields(None, None) == {
        "agent_id": None,
        "route_status": None,
        "queue": None,
        "priority": None,
        "offered_until": None,
        "waiting_since": None,
        "sla": {},
    }
    fields = routing_fields(state("c1", status=RouteStatus.ASSIGNED, agent_id="bob"), DUE)
    assert (fields["agent_id"], fields["route_status"], fields["sla"]) == (
        "bob",
        "assigned",
        {"first_response": "2026-03-02T10:00:00Z"},
    )


async def reads() -> tuple[WorkspaceReads, InMemoryAssignmentStore, InMemoryIdentityStore]:
    store = InMemoryAssignmentStore()
    identities = InMemoryIdentityStore()
    workspace = WorkspaceReads(
        routes=InMemoryRouteReads(store),
        assignment=store,
        timeline=InMemoryTimelineStore(),
        identities=identities,
        names=InMemoryCustomerNames(identities),
        sla=InMemorySlaDueTimes({"c-ana": {"first_response": DUE["first_response"]}}),
        clock=FakeClock(NOW),
    )
    await store.save_agents([agent("ana")])
    await store.put_heads(
        [
            state("c-ana", status=RouteStatus.ASSIGNED, agent_id="ana", customer_id="cu-1"),
            state(
                "c-vip",
                status=RouteStatus.OFFERED,
                agent_id="ana",
                priority=Priority.HIGH,
                waiting_since=T0 + timedelta(minutes=1),
            ),
            state("c-wait", channel=Channel.WHATSAPP, waiting_since=T0 + timedelta(minutes=2)),
        ]
    )
    return workspace, store, identities


async def test_a_page_is_items_with_a_cursor_to_the_rest() -> None:
    workspace, _, _ = await reads()
    inbox = RouteQuery(statuses=INBOX, agent_id="ana")
    first = await workspace.page(inbox, RouteOrder.QUEUE, 1, None)
    assert [i["conversation_id"] for i in first["items"]] == ["c-vip"]
    rest = await workspace.page(inbox, RouteOrder.QUEUE, 1, first["next"])
    assert [(i["conversation_id"], i["sla"]) for i in rest["items"]] == [
        ("c-ana", {"first_response": "2026-03-02T10:00:00Z"})
    ]
    assert rest["next"] is None
    listed = await workspace.page(RouteQuery(), RouteOrder.RECENT, 10, None)
    assert [i["conversation_id"] for i in listed["items"]] == ["c-wait", "c-vip", "c-ana"]
    with pytest.raises(HTTPException) as refused:
        await workspace.page(RouteQuery(), RouteOrder.RECENT, 10, first["next"])
    assert refused.value.status_code == 400


async def test_customers_are_searched_by_name_and_identity_with_merges_shown() -> None:
    workspace, _, identities = await reads()
    await identities.create_customers(
        [
            CustomerRecord("cu-1", T0, "Ana Gómez"),
            CustomerRecord("cu-2", T0, "Bea"),
            CustomerRecord("cu-3", T0, "ana (old account)"),
        ]
    )
    await identities.claim_identity(IdentityRecord("email:bea@example.com", "cu-2", "new", T0))
    await identities.claim_membership(Membership("cu-3", "cu-1", "mg-1", T0))
    found = await workspace.search_customers("ANA", 10, None)
    assert [(i["customer_id"], i["merged_into"], i["matched"]) for i in found["items"]] == [
        ("cu-1", None, ["name"]),
        ("cu-3", "cu-1", ["name"]),
    ]
    (bea,) = (await workspace.search_customers("Bea@example.com", 10, None))["items"]
    assert (bea["customer_id"], bea["identities"], bea["matched"]) == (
        "cu-2",
        ["email:bea@example.com"],
        ["identity"],
    )
    first = await workspace.search_customers("an", 1, None)
    assert [i["customer_id"] for i in first["items"]] == ["cu-1"]
    rest = await workspace.search_customers("an", 1, first["next"])
    assert ([i["customer_id"] for i in rest["items"]], rest["next"]) == (["cu-3"], None)
    await identities.erase_customers(["cu-1", "cu-3"], "er-1", T0)
    assert (await workspace.search_customers("ana", 10, None))["items"] == []
    for bad_q, bad_cursor in (("a", None), ("ana", "bm9wZQ")):
        with pytest.raises(HTTPException) as refused:
            await workspace.search_customers(bad_q, 10, bad_cursor)
        assert refused.value.status_code == 400


async def test_a_search_hit_names_the_root_of_a_long_merge_chain() -> None:
    workspace, _, identities = await reads()
    chain = [f"cu-{n}" for n in range(6)]  # cu-0 merged into cu-1, ... into cu-5
    await identities.create_customers([CustomerRecord(c, T0, f"Ana {c}") for c in chain])
    for absorbed, survivor in itertools.pairwise(chain):
        await identities.claim_membership(Membership(absorbed, survivor, f"mg-{absorbed}", T0))
    found = await workspace.search_customers("ana cu-0", 10, None)
    assert [(i["customer_id"], i["merged_into"]) for i in found["items"]] == [("cu-0", "cu-5")]
