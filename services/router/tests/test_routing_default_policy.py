"""The shipped routing policy on real Kafka and FerretDB: a topic guessed from keywords
makes a skilled agent preferred, never required, so mail about orders reaches agents
who have other skills; a requirement an operator configures still holds work back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from switchboard_common.contract import (
    ASSIGNMENTS,
    Channel,
    ConversationAssigned,
    ConversationQueued,
)
from switchboard_common.contract.events import AssignmentDecision
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import eventually
from switchboard_devtools.testing.router_timeline import (
    TOKEN_ENV,
    agents_online,
    customer_writes,
    customers_write,
    inbound,
)
from switchboard_router.app import build
from switchboard_router.settings import RouterSettings

pytestmark = pytest.mark.integration

#: Skills the team configured; nobody has the `orders` skill the shipped topic names.
TEAM = {"bea": {"billing": 5}, "sam": {"shipping": 5}, "kim": {"billing": 3, "shipping": 3}}

#: An operator's policy making the topic a hard requirement.
ORDERS_REQUIRED = """
classification:
  topics: [{name: orders, keywords: [order], skills: {orders: 1}}]
queues: [{name: general, target: {conversation_skills: all}}]
"""

RouterFactory = Callable[[str | None], AbstractAsyncContextManager[str]]


@pytest.fixture
def router(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> RouterFactory:
    """Start the router in-process with the given policy (None: the shipped one)."""

    @asynccontextmanager
    async def start(policy: str | None) -> AsyncIterator[str]:
        started = {**service_env, **TOKEN_ENV, "ROUTER_HTTP_PORT": str(free_port())}
        for key, value in started.items():
            monkeypatch.setenv(key, value)
        if policy is None:
            monkeypatch.delenv("ROUTER_POLICY_FILE", raising=False)
        else:
            path = tmp_path / "routing.yaml"
            path.write_text(policy)
            monkeypatch.setenv("ROUTER_POLICY_FILE", str(path))
        runtime = build(RouterSettings.load()).runtime
        async with running(runtime) as url:
            yield url

    return start


async def where_is_my_order(probe: TopicProbe, count: int) -> list[str]:
    """``count`` customers mail the same question; their conversations."""
    now = datetime.now(UTC)
    return await customers_write(
        probe,
        [
            inbound(
                f"order-{n}",
                sender=f"customer-{n}@example.com",
                at=now,
                subject="Where is my order?",
                text="Hello, where is my order? It has not arrived yet.",
            )
            for n in range(count)
        ],
    )


async def latest_decisions(probe: TopicProbe) -> dict[str, AssignmentDecision]:
    """The newest decision of each conversation published so far."""
    latest: dict[str, AssignmentDecision] = {}
    for _, event in await probe.read_events(ASSIGNMENTS, timeout=2.0):
        if isinstance(event, AssignmentDecision):
            seen = latest.get(event.conversation_id)
            if seen is None or event.seq > seen.seq:
                latest[event.conversation_id] = event
    return latest


async def test_orders_mail_reaches_agents_without_an_orders_skill(
    router: RouterFactory, probe: TopicProbe
) -> None:
    async with router(None) as url:
        await agents_online(probe, url, TEAM, capacity={Channel.EMAIL: 5})
        conversations = await where_is_my_order(probe, 10)

        async def all_assigned() -> dict[str, AssignmentDecision] | None:
            latest = await latest_decisions(probe)
            done = all(isinstance(latest.get(c), ConversationAssigned) for c in conversations)
            return latest if done else None

        latest = await eventually(all_assigned, what="ten order emails assigned")
    for conversation_id in conversations:
        decision = latest[conversation_id]
        assert decision.agent_id in TEAM
        assert decision.queue == "general"
        # The topic was recognised; it made nobody ineligible.
        classification, required = decision.reason["classification"], decision.reason["required"]
        assert isinstance(classification, dict)
        assert isinstance(required, dict)
        assert classification["topics"] == ["orders"]
        assert "orders" not in required


async def test_a_skill_the_operator_requires_keeps_the_mail_queued_for_a_qualified_agent(
    router: RouterFactory, probe: TopicProbe
) -> None:
    async with router(ORDERS_REQUIRED) as url:
        await agents_online(probe, url, TEAM, capacity={Channel.EMAIL: 5})
        conversations = await where_is_my_order(probe, 3)

        async def decided() -> dict[str, AssignmentDecision] | None:
            latest = await latest_decisions(probe)
            return latest if all(c in latest for c in conversations) else None

        first = await eventually(decided, what="a decision for each order email")
        for conversation_id in conversations:
            # Three agents with free slots online, none with the required skill.
            assert isinstance(first[conversation_id], ConversationQueued)
            assert "orders" in first[conversation_id].required_skills

        await agents_online(probe, url, {"olu": {"orders": 2}}, capacity={Channel.EMAIL: 5})

        async def all_with_olu() -> dict[str, AssignmentDecision] | None:
            latest = await latest_decisions(probe)
            done = all(latest[c].agent_id == "olu" for c in conversations)
            return latest if done else None

        await eventually(all_with_olu, what="the order emails assigned to the qualified agent")


async def test_a_returning_customer_goes_back_to_the_agent_who_served_them(
    router: RouterFactory, probe: TopicProbe
) -> None:
    """Sticky routing through the real path: the timeline names the customer's earlier
    conversations and routing finds who served them in their heads."""
    async with router(None) as url:
        await agents_online(
            probe, url, {"ann": {"billing": 3}, "bob": {"billing": 3}}, capacity={Channel.EMAIL: 5}
        )
        now = datetime.now(UTC)
        first = await customer_writes(
            probe, "refund-1", sender="ana@example.com", subject="Refund", at=now
        )

        async def decided(conversation_id: str) -> AssignmentDecision | None:
            decision = (await latest_decisions(probe)).get(conversation_id)
            return decision if isinstance(decision, ConversationAssigned) else None

        served = await eventually(lambda: decided(first), what="the first conversation assigned")
        # Another customer first: the agent who served Ana is now the busier one.
        other = await customer_writes(probe, "refund-2", subject="Refund", at=now)
        await eventually(lambda: decided(other), what="the other customer's conversation")
        later = await customer_writes(
            probe, "invoice-1", sender="ana@example.com", subject="Invoice copy", at=now
        )
        assert later != first  # another subject: a conversation of its own
        again = await eventually(lambda: decided(later), what="Ana's second conversation")
    assert again.agent_id == served.agent_id
    assert again.reason["sticky"] is True
