"""One customer across channels on real Kafka and FerretDB: linking by profile, merge
refusal on conflicting external ids, and an unmerge that restores both timelines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from switchboard_common.contract import INBOUND, Channel, MessageReceived
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    RunningRouter,
    eventually,
    inbound,
    running_router,
)
from switchboard_router.timeline.identity import identity_of

pytestmark = pytest.mark.integration

ANA_EMAIL = "email:ana@example.com"
ANA_PHONE = "whatsapp:+34600111222"


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env) as handle:
        yield handle


async def send(probe: TopicProbe, *messages: MessageReceived) -> None:
    for message in messages:
        await probe.send(INBOUND, message, key=identity_of(message))


def email(message_id: str, minutes: int, sender: str = "ana@example.com") -> MessageReceived:
    return inbound(message_id, sender=sender, subject="Parcel", at=T0 + timedelta(minutes=minutes))


def whatsapp(message_id: str, minutes: int, phone: str = "+34600111222") -> MessageReceived:
    return inbound(
        message_id, channel=Channel.WHATSAPP, sender=phone, at=T0 + timedelta(minutes=minutes)
    )


async def customer(router: RunningRouter, identity: str) -> dict[str, Any]:
    found: dict[str, Any] = await eventually(lambda: router.customer_of(identity))
    return found


async def settled(router: RunningRouter, customer_id: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        items = await router.timeline(customer_id)
        return items if len(items) >= count else None

    items: list[dict[str, Any]] = await eventually(enough)
    return items


async def admin(router: RunningRouter, path: str, body: dict[str, Any]) -> Any:
    return await router.http.post(path, json=body, headers=router.admin)


async def test_a_profile_phone_merges_the_whatsapp_customer_into_the_email_one(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await send(probe, email("e-1", 0), whatsapp("w-1", 1), email("e-2", 2), whatsapp("w-2", 3))
    by_email = await customer(router, ANA_EMAIL)
    by_phone = await customer(router, ANA_PHONE)
    assert by_email["customer_id"] != by_phone["customer_id"]
    await settled(router, by_email["customer_id"], 2)
    await settled(router, by_phone["customer_id"], 2)

    response = await admin(
        router,
        f"/admin/customers/{by_email['customer_id']}/profile",
        {
            "actor": "ops@example.com",
            "verified_emails": ["Ana@Example.com"],
            "phones": ["+34 600 111 222"],
            "tier": "vip",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == by_email["customer_id"]
    (merge,) = body["merges"]
    assert merge["survivor"] == by_email["customer_id"]
    assert merge["absorbed"] == by_phone["customer_id"]
    assert merge["reason"] == "phone"
    assert merge["ids"] == ["phone:+34600111222"]
    assert merge["by"] == "ops@example.com"
    assert merge["state"] == "active"

    merged = await customer(router, ANA_PHONE)
    assert merged["customer_id"] == by_email["customer_id"]
    assert merged["members"] == [by_phone["customer_id"]]
    assert {i["identity"] for i in merged["identities"]} == {ANA_EMAIL, ANA_PHONE}
    assert merged["profile"]["tier"] == "vip"
    items = await router.timeline(by_email["customer_id"])
    assert [i["message_id"] for i in items] == ["e-1", "w-1", "e-2", "w-2"]
    assert [i["channel"] for i in items] == ["email", "whatsapp", "email", "whatsapp"]
    absorbed = await router.http.get(f"/customers/{by_phone['customer_id']}")
    assert absorbed.json()["merged_into"] == by_email["customer_id"]


async def test_a_shared_verified_email_links_a_new_identity_and_merges_an_old_one(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await send(probe, whatsapp("w-1", 0))
    owner = await customer(router, ANA_PHONE)
    # The CRM knows this WhatsApp customer's emails before any mail arrived from one of
    # them, and after another one already made a customer of its own.
    await send(probe, email("e-old", 1, sender="ana@old.example"))
    old = await customer(router, "email:ana@old.example")
    response = await admin(
        router,
        f"/admin/customers/{owner['customer_id']}/profile",
        {
            "actor": "crm-sync",
            "external_id": "crm-77",
            "verified_emails": ["ana@example.com", "ana@old.example"],
        },
    )
    assert response.status_code == 200, response.text
    assert [(m["absorbed"], m["reason"]) for m in response.json()["merges"]] == [
        (old["customer_id"], "verified_email")
    ]
    await send(probe, email("e-new", 2))
    linked = await customer(router, ANA_EMAIL)
    assert linked["customer_id"] == owner["customer_id"]
    (record,) = [i for i in linked["identities"] if i["identity"] == ANA_EMAIL]
    assert record["linked_by"] == "verified_email"
    assert record["customer_id"] == owner["customer_id"]  # filed under the owner itself
    items = await settled(router, owner["customer_id"], 3)
    assert [i["message_id"] for i in items] == ["w-1", "e-old", "e-new"]


async def test_customers_whose_external_ids_disagree_are_not_merged(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await send(probe, email("e-1", 0), whatsapp("w-1", 1))
    a = await customer(router, ANA_EMAIL)
    b = await customer(router, ANA_PHONE)
    for target, crm in ((a, "crm-1"), (b, "crm-2")):
        response = await admin(
            router,
            f"/admin/customers/{target['customer_id']}/profile",
            {"actor": "crm-sync", "external_id": crm},
        )
        assert response.status_code == 200, response.text

    refused = await admin(
        router,
        "/admin/merges",
        {
            "actor": "agent-7",
            "survivor_customer_id": a["customer_id"],
            "absorbed_customer_id": b["customer_id"],
            "note": "looks like the same person",
        },
    )
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail["reason"] == "external ids disagree"
    assert detail["merge"]["state"] == "refused"
    # A profile claiming the other customer's phone is refused for that customer too.
    response = await admin(
        router,
        f"/admin/customers/{a['customer_id']}/profile",
        {"actor": "crm-sync", "phones": ["+34600111222"]},
    )
    assert response.status_code == 200
    assert response.json()["merges"] == []
    assert [r["customer_id"] for r in response.json()["refused"]] == [b["customer_id"]]
    history = await router.http.get(
        "/admin/merges", params={"customer_id": a["customer_id"]}, headers=router.admin
    )
    assert [m["state"] for m in history.json()["items"]] == ["refused"]
    assert (await customer(router, ANA_PHONE))["customer_id"] == b["customer_id"]


async def test_unmerge_restores_both_timelines_exactly(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await send(probe, email("e-1", 0), email("e-2", 1), whatsapp("w-1", 2))
    a = await customer(router, ANA_EMAIL)
    b = await customer(router, ANA_PHONE)
    before_a = await settled(router, a["customer_id"], 2)
    before_b = await settled(router, b["customer_id"], 1)

    response = await admin(
        router,
        "/admin/merges",
        {
            "actor": "agent-7",
            "survivor_customer_id": a["customer_id"],
            "absorbed_customer_id": b["customer_id"],
        },
    )
    assert response.status_code == 201, response.text
    merge = response.json()
    assert merge["reason"] == "manual"
    # While merged the customer writes on both channels.
    await send(probe, whatsapp("w-2", 10), email("e-3", 11))
    together = await settled(router, a["customer_id"], 5)
    assert [i["message_id"] for i in together] == ["e-1", "e-2", "w-1", "w-2", "e-3"]

    undo = await admin(router, f"/admin/merges/{merge['merge_id']}/undo", {"actor": "agent-9"})
    assert undo.status_code == 200, undo.text
    assert undo.json()["state"] == "undone"
    assert undo.json()["undone_by"] == "agent-9"
    after_a = await router.timeline(a["customer_id"])
    after_b = await router.timeline(b["customer_id"])
    by_id = {i["message_id"]: i for i in together}
    assert after_a == [*before_a, by_id["e-3"]]
    assert after_b == [*before_b, by_id["w-2"]]
    assert (await customer(router, ANA_PHONE))["customer_id"] == b["customer_id"]
    again = await admin(router, f"/admin/merges/{merge['merge_id']}/undo", {"actor": "agent-9"})
    assert again.status_code == 409


async def test_admin_endpoints_want_the_token(
    router: RunningRouter, service_env: dict[str, str]
) -> None:
    anonymous = await router.http.post(
        "/admin/merges",
        json={"actor": "x", "survivor_customer_id": "a", "absorbed_customer_id": "b"},
    )
    assert anonymous.status_code == 401
    missing = await router.http.post(
        "/admin/merges",
        json={"actor": "x", "survivor_customer_id": "cu-nope", "absorbed_customer_id": "cu-b"},
        headers=router.admin,
    )
    assert missing.status_code == 404
    bad = await router.http.get("/customers", params={"identity": "sms:+34600111222"})
    assert bad.status_code == 400
    assert "identity must be" in bad.json()["detail"]
    assert (await router.http.get("/customers/cu-nope/timeline")).status_code == 404
    assert (await router.http.get("/conversations/cv-nope")).status_code == 404
    cursor = await router.http.get("/customers/cu-nope/timeline", params={"limit": 100000})
    assert cursor.status_code == 422
    async with running_router(service_env, admin_token=None) as closed:
        disabled = await closed.http.get("/admin/merges/mg-1", headers=closed.admin)
        assert disabled.status_code == 403
