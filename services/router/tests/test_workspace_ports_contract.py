"""The workspace's read ports, in memory (unit) and on the real MongoDB-wire server
(integration), held to one suite: route lists with filters and keyset pages, the SLA
monitor's published due times, and customers by display name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from switchboard_common.contract import Channel, Priority
from switchboard_common.mongo import Document
from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_devtools.testing.router_assignment import T0, state
from switchboard_router.assignment.model import RouteStatus
from switchboard_router.assignment.store import InMemoryAssignmentStore, MongoAssignmentStore
from switchboard_router.timeline.memory import InMemoryIdentityStore
from switchboard_router.timeline.mongo import MongoIdentityStore
from switchboard_router.timeline.ports import CustomerRecord, IdentityStore
from switchboard_router.workspace.customers import (
    CustomerNames,
    InMemoryCustomerNames,
    MongoCustomerNames,
)
from switchboard_router.workspace.routes import (
    InMemoryRouteReads,
    MongoRouteReads,
    RouteOrder,
    RouteQuery,
    RouteReads,
    route_key,
)
from switchboard_router.workspace.sla_due import (
    SLA_CONVERSATIONS,
    InMemorySlaDueTimes,
    MongoSlaDueTimes,
    SlaDueTimes,
)

DUE = {"first_response": T0 + timedelta(hours=1), "resolution": T0 + timedelta(days=1)}


@dataclass
class Ports:
    assignment: InMemoryAssignmentStore | MongoAssignmentStore
    routes: RouteReads
    identities: IdentityStore
    names: CustomerNames
    sla: SlaDueTimes
    #: Stores the SLA monitor's record of a conversation (as its adapter writes it).
    publish_due: Callable[[str, Document], Awaitable[None]]


@pytest.fixture(params=STORES)
async def ports(request: pytest.FixtureRequest) -> AsyncIterator[Ports]:
    if request.param == "memory":
        store = InMemoryAssignmentStore()
        identities = InMemoryIdentityStore()
        sla = InMemorySlaDueTimes()

        async def remember(conversation_id: str, document: Document) -> None:
            if "due" in document:
                sla.due[conversation_id] = document["due"]

        yield Ports(
            store,
            InMemoryRouteReads(store),
            identities,
            InMemoryCustomerNames(identities),
            sla,
            remember,
        )
        return
    async with real_database(request) as db:
        mongo = MongoAssignmentStore(db)
        mongo_identities = MongoIdentityStore(db)
        routes = MongoRouteReads(mongo.routes_)
        await routes.ensure_indexes()

        async def insert(conversation_id: str, document: Document) -> None:
            await db[SLA_CONVERSATIONS].insert_one({"_id": conversation_id, **document})

        yield Ports(
            mongo,
            routes,
            mongo_identities,
            MongoCustomerNames(mongo_identities.customers),
            MongoSlaDueTimes(db),
            insert,
        )


async def heads(ports: Ports) -> None:
    minute = timedelta(minutes=1)
    await ports.assignment.put_heads(
        [
            state("c-wait", waiting_since=T0),
            state("c-vip", priority=Priority.URGENT, waiting_since=T0 + 5 * minute),
            state(
                "c-ana-1", status=RouteStatus.ASSIGNED, agent_id="ana", waiting_since=T0 + minute
            ),
            state(
                "c-ana-2",
                status=RouteStatus.OFFERED,
                agent_id="ana",
                waiting_since=T0 + 2 * minute,
                offer_expires_at=T0 + 3 * minute,
            ),
            state(
                "c-ana-3",
                status=RouteStatus.AWAITING_CUSTOMER,
                agent_id="ana",
                channel=Channel.WHATSAPP,
                waiting_since=T0 + 2 * minute,
            ),
            state(
                "c-bob", status=RouteStatus.ASSIGNED, agent_id="bob", waiting_since=T0 + 3 * minute
            ),
            state(
                "c-done",
                status=RouteStatus.RESOLVED,
                agent_id="ana",
                queue="billing",
                waiting_since=T0 + 4 * minute,
            ),
        ]
    )


async def every_page(ports: Ports, query: RouteQuery, order: RouteOrder, limit: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await ports.routes.page(query, order, after, limit)
        seen += [s.conversation_id for s in page]
        if len(page) < limit:
            return seen
        after = route_key(page[-1])


async def test_routes_are_listed_in_queue_order_and_newest_first(ports: Ports) -> None:
    await heads(ports)
    everything = RouteQuery()
    assert await every_page(ports, everything, RouteOrder.QUEUE, 100) == [
        "c-vip",
        "c-wait",
        "c-ana-1",
        "c-ana-2",
        "c-ana-3",
        "c-bob",
        "c-done",
    ]
    assert await every_page(ports, everything, RouteOrder.RECENT, 100) == [
        "c-vip",
        "c-done",
        "c-bob",
        "c-ana-3",
        "c-ana-2",
        "c-ana-1",
        "c-wait",
    ]
    # Page by page (ties on waiting_since included) gives the same lists.
    for order in RouteOrder:
        for limit in (1, 2, 3):
            assert await every_page(ports, everything, order, limit) == await every_page(
                ports, everything, order, 100
            )


async def test_routes_are_filtered_by_status_agent_queue_and_channel(ports: Ports) -> None:
    await heads(ports)
    inbox = RouteQuery(
        statuses=frozenset(
            {RouteStatus.OFFERED, RouteStatus.ASSIGNED, RouteStatus.AWAITING_CUSTOMER}
        ),
        agent_id="ana",
    )
    assert await every_page(ports, inbox, RouteOrder.QUEUE, 2) == ["c-ana-1", "c-ana-2", "c-ana-3"]
    waiting = RouteQuery(statuses=frozenset({RouteStatus.WAITING}))
    assert await every_page(ports, waiting, RouteOrder.RECENT, 10) == ["c-vip", "c-wait"]
    assert await every_page(ports, RouteQuery(queue="billing"), RouteOrder.QUEUE, 10) == ["c-done"]
    whatsapp = RouteQuery(channel="whatsapp")
    assert await every_page(ports, whatsapp, RouteOrder.QUEUE, 10) == ["c-ana-3"]
    (offered,) = await ports.routes.page(
        RouteQuery(statuses=frozenset({RouteStatus.OFFERED})), RouteOrder.QUEUE, None, 10
    )
    assert offered.offer_expires_at == T0 + timedelta(minutes=3)
    assert await ports.routes.page(RouteQuery(agent_id="nobody"), RouteOrder.QUEUE, None, 10) == []


async def test_due_times_are_read_by_conversation_and_only_for_running_clocks(ports: Ports) -> None:
    publish = ports.publish_due
    await publish("c-1", {"due": DUE, "clocks": [], "active": True})
    await publish("c-paused", {"due": {}, "active": True})
    await publish("c-old", {"active": True})  # written before the field existed
    await publish("c-odd", {"due": {"first_response": T0, "surprise": T0}})
    found = await ports.sla.due_times(["c-1", "c-paused", "c-old", "c-odd", "c-unknown"])
    assert found == {"c-1": DUE, "c-odd": {"first_response": T0}}
    assert await ports.sla.due_times([]) == {}


async def test_customers_are_found_by_any_part_of_their_name_in_any_case(ports: Ports) -> None:
    customers = [
        CustomerRecord("cu-1", T0, "Ana Gómez"),
        CustomerRecord("cu-2", T0, "ANA MARTÍN"),
        CustomerRecord("cu-3", T0, "Bea (ana) Ruiz"),
        CustomerRecord("cu-4", T0, "Carla"),
        CustomerRecord("cu-5", T0, None),
        CustomerRecord("cu-6", T0, "Mariana"),
    ]
    await ports.identities.create_customers(customers)
    await ports.identities.erase_customers(["cu-6"], "er-1", T0)
    names = ports.names
    assert await names.search("ana", None, 10) == ["cu-1", "cu-2", "cu-3"]
    assert await names.search("ana", "cu-1", 1) == ["cu-2"]
    assert await names.search("GÓMEZ", None, 10) == ["cu-1"]
    # Regular expression characters are text: "(ana)" is found, "a.a" is not a pattern.
    assert await names.search("(ana)", None, 10) == ["cu-3"]
    assert await names.search("a.a", None, 10) == []
    assert await names.search("mariana", None, 10) == []  # erased: no name any more
