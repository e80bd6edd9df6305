"""GDPR erasure on real Kafka and FerretDB: personal data goes, an audit record stays,
and the same person writing again starts a fresh customer."""

from __future__ import annotations

import json
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


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env) as handle:
        yield handle


async def send(probe: TopicProbe, *messages: MessageReceived) -> None:
    for message in messages:
        await probe.send(INBOUND, message, key=identity_of(message))


async def timeline(router: RunningRouter, customer_id: str, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        items = await router.timeline(customer_id)
        return items if len(items) >= count else None

    items: list[dict[str, Any]] = await eventually(enough)
    return items


async def test_erasure_removes_personal_data_and_the_next_message_starts_afresh(
    router: RunningRouter, probe: TopicProbe
) -> None:
    await send(
        probe,
        inbound(
            "e-1",
            sender="ana@example.com",
            subject="My address is Calle Mayor 1",
            text="Please send it to Calle Mayor 1, Madrid",
            display_name="Ana Pérez",
            at=T0,
        ),
        inbound("w-1", channel=Channel.WHATSAPP, sender="+34600111222", at=T0 + timedelta(hours=1)),
    )
    ana = await eventually(lambda: router.customer_of("email:ana@example.com"))
    phone = await eventually(lambda: router.customer_of("whatsapp:+34600111222"))
    linked = await router.http.post(
        f"/admin/customers/{ana['customer_id']}/profile",
        json={"actor": "crm", "external_id": "crm-5", "phones": ["+34600111222"]},
        headers=router.admin,
    )
    assert linked.status_code == 200, linked.text
    before = await timeline(router, ana["customer_id"], 2)
    assert before[0]["text"].startswith("Please send it")

    response = await router.http.post(
        f"/admin/customers/{phone['customer_id']}/erasure",
        json={"actor": "dpo@example.com", "reason": "data subject request 2026-041"},
        headers=router.admin,
    )
    assert response.status_code == 200, response.text
    audit = response.json()
    assert audit["customer_id"] == ana["customer_id"]  # the whole (merged) customer
    assert sorted(audit["members"]) == sorted([ana["customer_id"], phone["customer_id"]])
    assert audit["by"] == "dpo@example.com"
    assert audit["counts"]["identities"] == 2
    assert audit["counts"]["messages"] == 2
    assert audit["counts"]["profile_keys"] == 2
    assert audit["completed_at"] is not None
    as_text = json.dumps(audit)
    for personal in ("ana@", "600111222", "Calle", "Pérez", "crm-5"):
        assert personal not in as_text
    stored = await router.http.get(f"/admin/erasures/{audit['erasure_id']}", headers=router.admin)
    assert stored.json() == audit

    assert await router.customer_of("email:ana@example.com") is None
    assert await router.customer_of("whatsapp:+34600111222") is None
    erased = await router.http.get(f"/customers/{ana['customer_id']}")
    body = erased.json()
    assert body["erased"] is True
    assert body["display_name"] is None
    assert body["identities"] == []
    assert body["profile"]["external_id"] is None
    skeletons = await router.timeline(ana["customer_id"])
    assert [i["message_id"] for i in skeletons] == ["e-1", "w-1"]
    for item in skeletons:
        assert item["text"] == ""
        assert item["subject"] is None
        assert item["sender"] is None
        assert item["identity"] is None
        assert item["raw_ref"] is None
        assert item["erased"] is True
    conversation = await router.conversation(skeletons[0]["conversation_id"])
    assert conversation["conversation"]["subject"] is None
    assert conversation["conversation"]["identity"] is None

    # The same person writes again: a new customer, nothing of the old one attached.
    await send(
        probe,
        inbound("e-2", sender="ana@example.com", subject="Hello again", at=T0 + timedelta(days=1)),
    )
    fresh = await eventually(lambda: router.customer_of("email:ana@example.com"))
    assert fresh["customer_id"] not in audit["members"]
    assert fresh["members"] == []
    items = await timeline(router, fresh["customer_id"], 1)
    assert [i["message_id"] for i in items] == ["e-2"]
    assert items[0]["conversation_start"] is True
    assert [i["message_id"] for i in await router.timeline(ana["customer_id"])] == ["e-1", "w-1"]
