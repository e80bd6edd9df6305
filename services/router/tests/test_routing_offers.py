"""The router in-process on real Kafka and FerretDB: offers (rejection, timeout), an agent
going offline, SLA escalation, and the queue and agents read API.

Customer messages enter where ingest publishes them (``support.inbound.v1``); each test
reads the conversation the timeline opened from the public activity topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    SLA_EVENTS,
    AgentStatus,
    AgentStatusChanged,
    Channel,
    ConversationAssigned,
    ConversationEscalated,
    ConversationQueued,
    ConversationRequeued,
    OfferRejected,
    SlaBreached,
    SlaMetric,
)
from switchboard_common.contract.events import AssignmentDecision
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    READ_TOKEN,
    TOKEN_ENV,
    agents_online,
    bearer,
    customer_writes,
)
from switchboard_router.app import build
from switchboard_router.settings import RouterSettings

pytestmark = pytest.mark.integration

POLICY = """
classification: {language: {detect: false}}
queues: [{name: general}]
offers: {require_acceptance: true, timeout_seconds: 3}
escalation: {at_risk: raise_priority, breached: overflow}
"""


@pytest.fixture
async def router(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[str]:
    policy = tmp_path / "routing.yaml"
    policy.write_text(POLICY)
    for key, value in {
        **service_env,
        "ROUTER_HTTP_PORT": str(free_port()),
        "ROUTER_POLICY_FILE": str(policy),
        "ROUTER_ASSIGNMENT_TICK_SECONDS": "0.1",
        **TOKEN_ENV,
    }.items():
        monkeypatch.setenv(key, value)
    runtime = build(RouterSettings.load()).runtime
    async with running(runtime) as url:
        yield url


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def decisions(probe: TopicProbe, conversation_id: str) -> list[AssignmentDecision]:
    """The conversation's decisions in step order, each once. A decision may be published
    again (at least once, same ``ce_id``), as a frontend sees it; two different decisions
    for one step would be a bug."""
    by_seq: dict[int, AssignmentDecision] = {}
    for _, event in await probe.read_events(ASSIGNMENTS, timeout=2.0):
        if isinstance(event, AssignmentDecision) and event.conversation_id == conversation_id:
            kept = by_seq.setdefault(event.seq, event)
            assert kept == event, f"two decisions for step {event.seq}: {kept!r}, {event!r}"
    return [by_seq[seq] for seq in sorted(by_seq)]


def steps(events: list[AssignmentDecision]) -> list[tuple[str, int, Any, str | None]]:
    """What an assertion message shows of decisions: type, step, trigger, agent."""
    return [(type(e).__name__, e.seq, e.reason.get("trigger"), e.agent_id) for e in events]


async def online(probe: TopicProbe, url: str, *agent_ids: str) -> None:
    await agents_online(
        probe, url, {agent_id: {} for agent_id in agent_ids}, capacity={Channel.EMAIL: 2}
    )


async def test_a_rejected_offer_is_requeued_and_offered_to_another_agent(
    router: str, probe: TopicProbe
) -> None:
    await online(probe, router, "ana", "bob")
    conversation_id = await customer_writes(probe, "m-c1")
    (offer,) = await eventually(lambda: decisions(probe, conversation_id))
    assert isinstance(offer, ConversationAssigned)
    assert offer.offer_expires_at is not None
    first = offer.agent_id
    assert first in ("ana", "bob")
    await probe.send(
        AGENT_EVENTS, OfferRejected(agent_id=first, conversation_id=conversation_id), key=first
    )

    async def reoffered() -> list[AssignmentDecision] | None:
        events = await decisions(probe, conversation_id)
        return events if len(events) >= 3 else None

    seen = await eventually(reoffered)
    offer_, requeued, second = seen[:3]
    assert isinstance(requeued, ConversationRequeued), steps(seen)
    assert requeued.reason["trigger"] == "rejected"
    assert requeued.waiting_since == offer.waiting_since
    assert isinstance(second, ConversationAssigned), steps(seen)
    assert second.agent_id not in (None, first)
    assert offer_.seq < requeued.seq < second.seq


async def test_a_timed_out_offer_is_requeued_and_not_offered_to_that_agent_again(
    router: str, probe: TopicProbe
) -> None:
    await online(probe, router, "ana")
    conversation_id = await customer_writes(probe, "m-c1")

    async def timed_out() -> list[AssignmentDecision] | None:
        events = await decisions(probe, conversation_id)
        return events if len(events) >= 2 else None

    offer, requeued = await eventually(timed_out)
    assert isinstance(offer, ConversationAssigned)
    assert offer.agent_id == "ana"
    assert isinstance(requeued, ConversationRequeued)
    assert requeued.reason["trigger"] == "timed_out"
    await asyncio.sleep(1.0)
    assert len(await decisions(probe, conversation_id)) == 2  # ana has room but never gets it again
    async with httpx.AsyncClient(base_url=router, headers=bearer(READ_TOKEN)) as http:
        (waiting,) = (await http.get("/queue")).json()["items"]
    assert waiting["conversation_id"] == conversation_id
    assert waiting["excluded_agents"] == ["ana"]
    await online(probe, router, "bob")
    events = await eventually(lambda: _at_least(probe, conversation_id, 3))
    assert events[2].agent_id == "bob"


async def _at_least(probe: TopicProbe, cid: str, n: int) -> list[AssignmentDecision] | None:
    events = await decisions(probe, cid)
    return events if len(events) >= n else None


async def test_an_agent_going_offline_has_unaccepted_offers_requeued_at_once(
    router: str, probe: TopicProbe
) -> None:
    await online(probe, router, "ana")
    conversation_id = await customer_writes(probe, "m-c1")
    await eventually(lambda: decisions(probe, conversation_id))
    await probe.send(
        AGENT_EVENTS, AgentStatusChanged(agent_id="ana", status=AgentStatus.OFFLINE), key="ana"
    )
    offer, requeued = (await eventually(lambda: _at_least(probe, conversation_id, 2)))[:2]
    assert isinstance(requeued, ConversationRequeued)
    assert requeued.reason["trigger"] == "agent_offline"
    assert requeued.waiting_since == offer.waiting_since
    async with httpx.AsyncClient(base_url=router, headers=bearer(READ_TOKEN)) as http:
        agents = (await http.get("/agents")).json()
    assert agents["items"][0]["status"] == "offline"
    assert agents["items"][0]["load"] == {}


async def test_a_breached_sla_moves_a_waiting_conversation_to_overflow(
    router: str, probe: TopicProbe
) -> None:
    conversation_id = await customer_writes(probe, "m-c1")
    (queued,) = await eventually(lambda: decisions(probe, conversation_id))
    assert isinstance(queued, ConversationQueued)
    now = datetime.now(UTC)
    breach = SlaBreached(
        conversation_id=conversation_id,
        metric=SlaMetric.FIRST_RESPONSE,
        policy="default",
        due_at=now,
        at=now,
    )
    await probe.send(SLA_EVENTS, breach, key=conversation_id)
    _, escalated = await eventually(lambda: _at_least(probe, conversation_id, 2))
    assert isinstance(escalated, ConversationEscalated)
    assert escalated.queue == "overflow"
    assert escalated.reason["trigger"] == "sla:breached"
    assert escalated.waiting_since == queued.waiting_since
    async with httpx.AsyncClient(base_url=router, headers=bearer(READ_TOKEN)) as http:
        body = (await http.get("/queue")).json()
        metrics = (await http.get("/metrics")).text
    assert body["next"] is None
    (item,) = body["items"]
    assert (item["position"], item["queue"]) == (1, "overflow")
    assert item["waiting_seconds"] >= 0
    escalations = (
        'switchboard_router_assignments_total{channel="email",outcome="escalated",'
        'priority="normal"} 1.0'
    )
    assert escalations in metrics
