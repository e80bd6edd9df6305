"""The workspace's read API through real HTTP, the router in-process on real Kafka and
FerretDB: an agent's inbox, the conversation list with its filters and pages, the
customer search, the routing fields of a conversation, and every refusal (401, 403,
404, 400). Then an SLA monitor beside it: the due time it computes shows in the
conversation and the inbox, and goes once the agent answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard_common.contract import (
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    Channel,
    OfferAccepted,
    ReplySent,
)
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    ADMIN_TOKEN,
    RunningRouter,
    agent_token,
    agents_online,
    bearer,
    customer_writes,
    eventually,
    running_router,
)
from switchboard_devtools.testing.sla_running import monitor
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.integration

ROUTING = """
classification: {language: {detect: false}}
queues: [{name: general}]
offers: {require_acceptance: true, timeout_seconds: 3600}
"""
#: First response in 2 hours, around the clock: a due time the test can compute.
SLA = """
calendars: {always: {always_open: true}}
policies:
  - name: everything
    calendar: always
    targets:
      first_response: {target: 2h, warn_before: 30m}
      next_response: {target: 1h, warn_before: 10m}
      resolution: {target: 3d, warn_before: 1h}
"""


@pytest.fixture
async def router(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[RunningRouter]:
    policy = tmp_path / "routing.yaml"
    policy.write_text(ROUTING)
    async with running_router(
        service_env, routing_policy_file=policy, assignment_tick_seconds=0.1
    ) as handle:
        yield handle


async def answer(http: httpx.AsyncClient, route: str, **params: Any) -> Any:
    response = await http.get(route, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def inbox_of(router: RunningRouter, agent_id: str, count: int) -> list[dict[str, Any]]:
    async def full() -> list[dict[str, Any]] | None:
        body = await answer(router.http, f"/agents/{agent_id}/conversations")
        items: list[dict[str, Any]] = body["items"]
        return items if len(items) == count else None

    found: list[dict[str, Any]] = await eventually(full)
    return found


async def every_page(http: httpx.AsyncClient, route: str, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        body = await answer(http, route, **params, **({"cursor": cursor} if cursor else {}))
        seen += [i["conversation_id"] for i in body["items"]]
        cursor = body["next"]
        if cursor is None:
            return seen


async def test_the_inbox_the_list_the_search_and_the_detail(
    router: RunningRouter, probe: TopicProbe
) -> None:
    http = router.http
    await agents_online(probe, router.url, {"ana": {}}, capacity={Channel.EMAIL: 2})
    first = await customer_writes(probe, "m-1", display_name="Ana Gómez", subject="Invoice")
    (offer,) = await inbox_of(router, "ana", 1)
    await probe.send(AGENT_EVENTS, OfferAccepted(agent_id="ana", conversation_id=first), key="ana")
    second = await customer_writes(probe, "m-2", display_name="Bea Gómez", subject="Refund")
    waiting = await customer_writes(
        probe, "m-3", channel=Channel.WHATSAPP, sender="+34600111222", display_name="Carla"
    )

    async def accepted_and_offered() -> list[dict[str, Any]] | None:
        items = await inbox_of(router, "ana", 2)
        states = [(i["conversation_id"], i["state"]) for i in items]
        return items if states == [(first, "assigned"), (second, "offered")] else None

    held, offered = await eventually(accepted_and_offered)
    assert offer["conversation_id"] == first
    assert held["customer_name"] == "Ana Gómez"
    assert (held["subject"], held["channel"], held["queue"]) == ("Invoice", "email", "general")
    assert (held["priority"], held["agent_id"], held["offered_until"]) == ("normal", "ana", None)
    assert held["sla"] == {}  # no SLA monitor runs here
    assert held["waiting_seconds"] >= 0
    assert held["last_message_at"].endswith("Z")
    until = datetime.fromisoformat(offered["offered_until"])
    assert timedelta(minutes=55) < until - datetime.now(UTC) <= timedelta(hours=1)

    # Pages of one: the same inbox; the cursor of the inbox is no cursor of the list.
    assert await every_page(http, "/agents/ana/conversations", limit=1) == [first, second]
    paged = await answer(http, "/agents/ana/conversations", limit=1)
    assert (await http.get("/conversations", params={"cursor": paged["next"]})).status_code == 400

    # The list: newest first, filtered.
    await eventually(lambda: _listed(http, 3))
    assert await every_page(http, "/conversations", limit=1) == [waiting, second, first]
    assert await every_page(http, "/conversations", status="waiting") == [waiting]
    assert await every_page(http, "/conversations", status="offered,assigned") == [second, first]
    assert await every_page(http, "/conversations", agent="ana") == [second, first]
    assert await every_page(http, "/conversations", channel="whatsapp") == [waiting]
    assert await every_page(http, "/conversations", queue="general") == [waiting, second, first]
    assert await every_page(http, "/conversations", queue="nope", agent="ana") == []
    (carla,) = (await answer(http, "/conversations", status="waiting"))["items"]
    assert (carla["customer_name"], carla["agent_id"], carla["state"]) == ("Carla", None, "waiting")

    # The detail: who holds it, how it is routed, when it is due.
    detail = (await answer(http, f"/conversations/{second}"))["conversation"]
    assert (detail["agent_id"], detail["route_status"]) == ("ana", "offered")
    assert (detail["queue"], detail["priority"]) == ("general", "normal")
    assert detail["offered_until"] == offered["offered_until"]
    assert (detail["sla"], detail["status"], detail["subject"]) == ({}, "open", "Refund")

    # The search: a part of the name in any case, or an identity; the old lookup stays.
    found = await answer(http, "/customers", q="GÓMEZ")
    names = [(i["display_name"], i["matched"]) for i in found["items"]]
    assert sorted(names) == [("Ana Gómez", ["name"]), ("Bea Gómez", ["name"])]
    assert found["next"] is None
    by_phone = (await answer(http, "/customers", q="+34 600 111 222"))["items"]
    assert [(i["display_name"], i["identities"]) for i in by_phone] == [
        ("Carla", ["whatsapp:+34600111222"])
    ]
    page = await answer(http, "/customers", q="gómez", limit=1)
    rest = await answer(http, "/customers", q="gómez", cursor=page["next"])
    assert len(page["items"]) == len(rest["items"]) == 1
    assert rest["next"] is None
    assert page["items"][0]["customer_id"] < rest["items"][0]["customer_id"]
    old = await answer(http, "/customers", identity="email:m-1@example.com")
    assert old["items"][0]["display_name"] == "Ana Gómez"
    # An erased customer is not found by name any more.
    erased = next(i for i in found["items"] if i["display_name"] == "Bea Gómez")
    erasure = await http.post(
        f"/admin/customers/{erased['customer_id']}/erasure",
        json={"reason": "request 7"},
        headers=bearer(ADMIN_TOKEN),
    )
    assert erasure.status_code == 200
    after = await answer(http, "/customers", q="gómez")
    assert [i["display_name"] for i in after["items"]] == ["Ana Gómez"]


async def _listed(http: httpx.AsyncClient, count: int) -> bool:
    return len((await answer(http, "/conversations"))["items"]) == count


async def test_refusals(router: RunningRouter, probe: TopicProbe) -> None:
    await agents_online(probe, router.url, {"ana": {}, "bob": {}}, capacity={Channel.EMAIL: 2})
    ana, bob = bearer(agent_token("ana")), bearer(agent_token("bob"))
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        route = "/agents/ana/conversations"
        assert (await http.get(route)).status_code == 401
        assert (await http.get(route, headers=bearer("wrong"))).status_code == 401
        assert (await http.get(route, headers=ana)).status_code == 200
        mine = await http.get(route, headers=bob)
        assert (mine.status_code, mine.json()) == (
            403,
            {"detail": "an agent token acts for its own agent"},
        )
        assert (await http.get(route, headers=bearer(ADMIN_TOKEN))).status_code == 200
        assert (await http.get("/conversations", headers=ana)).status_code == 200
        assert (await http.get("/conversations")).status_code == 401
        assert (await http.get("/customers", params={"q": "an"})).status_code == 401
    read = router.http
    unknown = await read.get("/agents/nobody/conversations")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no agent nobody"})
    assert (await read.get("/conversations/nope")).status_code == 404
    refusals = {
        "/agents/ana/conversations": [{"cursor": "bm9wZQ"}, {"cursor": "!!"}],
        "/conversations": [
            {"status": "open"},
            {"status": ""},
            {"channel": "fax"},
            {"cursor": "bm9wZQ"},
        ],
        "/customers": [{"q": "a"}, {"q": " a "}, {"q": "ana", "cursor": "bm9wZQ"}, {}],
    }
    for route, cases in refusals.items():
        for params in cases:
            refused = await read.get(route, params=params)
            assert refused.status_code == 400, (route, params, refused.text)
            assert "detail" in refused.json()
    both = await read.get("/customers", params={"q": "ana", "identity": "email:a@example.com"})
    assert both.status_code == 400
    too_many = await read.get("/conversations", params={"limit": 10_000})
    assert too_many.status_code == 422


async def test_an_sla_due_time_from_the_monitor_shows_and_goes_with_the_reply(
    router: RunningRouter,
    probe: TopicProbe,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "sla.yaml"
    policy.write_text(SLA)
    for key, value in {**service_env, "SLA_MONITOR_POLICY_FILE": str(policy)}.items():
        monkeypatch.setenv(key, value)
    # Written a little in the past at a whole millisecond: the due time is exact.
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    async with monitor(ManualClock(at)):
        await agents_online(probe, router.url, {"ana": {}}, capacity={Channel.EMAIL: 2})
        conversation_id = await customer_writes(probe, "m-sla", at=at, subject="Late parcel")
        await probe.send(
            AGENT_EVENTS, OfferAccepted(agent_id="ana", conversation_id=conversation_id), key="ana"
        )
        expected = {
            "first_response": (at + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
            "resolution": (at + timedelta(days=3)).isoformat().replace("+00:00", "Z"),
        }

        async def due_shown() -> dict[str, Any] | None:
            body = await answer(router.http, f"/conversations/{conversation_id}")
            conversation: dict[str, Any] = body["conversation"]
            ready = conversation["sla"] == expected and conversation["route_status"] == "assigned"
            return conversation if ready else None

        await eventually(due_shown)
        (item,) = await inbox_of(router, "ana", 1)
        assert (item["conversation_id"], item["sla"]) == (conversation_id, expected)

        # The agent answers: first response stops, so its due time goes.
        reply = ReplySent(
            conversation_id=conversation_id, agent_id="ana", sent_at=at + timedelta(minutes=1)
        )
        await probe.send(CONVERSATION_EVENTS, reply, key=conversation_id)

        async def answered() -> bool:
            body = await answer(router.http, f"/conversations/{conversation_id}")
            return bool(body["conversation"]["sla"] == {"resolution": expected["resolution"]})

        await eventually(answered)
