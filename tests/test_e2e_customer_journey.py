"""A customer's journey through the running system: mail and WhatsApp in, one timeline,
assignments out, SLA events and metrics — every service a separate process."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchboard_common.contract import (
    SLA_EVENTS,
    Channel,
    ConversationAssigned,
    ConversationQueued,
    SlaAtRisk,
    SlaBreached,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Customer, Helpdesk, eventually

pytestmark = pytest.mark.e2e
POLICIES = Path(__file__).parent / "policies"


@pytest.fixture(scope="module")
def stack(infra: Infra) -> Iterator[Stack]:
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        extra_env={
            "SLA_MONITOR_POLICY_FILE": str(POLICIES / "sla-fast.yaml"),
            "SLA_MONITOR_EVALUATION_INTERVAL": "1",
            "SLA_MONITOR_GAUGE_INTERVAL": "1",
        },
    ) as running:
        yield running


def customer(stack: Stack) -> Customer:
    tag = uuid.uuid4().hex[:8]
    return Customer(
        email=f"ana.{tag}@example.org",
        phone=f"+3460{random.randrange(10**7):07d}",
        smtp_port=stack.smtp_port,
        social_url=stack.url("ingest-social"),
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )


async def find_customer(stack: Stack, identity: str) -> dict[str, object] | None:
    router = stack.url("router")
    async with httpx.AsyncClient(timeout=10, headers=stack.router_auth()) as http:
        found = (await http.get(f"{router}/customers", params={"identity": identity})).json()
    items = found["items"]
    return items[0] if items else None


async def test_one_customer_by_email_then_whatsapp_has_one_timeline(stack: Stack) -> None:
    ana = customer(stack)
    router = stack.url("router")
    await ana.mail("My order has not arrived", "Hello, my order 4411 has not arrived yet.")

    async def by_email() -> dict[str, object] | None:
        return await find_customer(stack, f"email:{ana.email}")

    profile = await eventually(by_email, what="the customer created from the email")
    customer_id = str(profile["customer_id"])

    # The CRM knows Ana's phone: the helpdesk records it on her profile.
    async with httpx.AsyncClient(timeout=10, headers=stack.router_auth(admin=True)) as http:
        linked = await http.post(
            f"{router}/admin/customers/{customer_id}/profile",
            json={"phones": [ana.phone], "verified_emails": [ana.email]},
        )
    assert linked.status_code == 200, linked.text

    answer = await ana.whatsapp("Any news about my order?")
    assert answer.status_code == 200, answer.text

    async def by_phone() -> dict[str, object] | None:
        return await find_customer(stack, f"whatsapp:{ana.phone}")

    same = await eventually(by_phone, what="the WhatsApp identity resolved")
    assert same["customer_id"] == customer_id

    async def both_messages() -> dict[str, object] | None:
        async with httpx.AsyncClient(timeout=10, headers=stack.router_auth()) as http:
            page = (await http.get(f"{router}/customers/{customer_id}/timeline")).json()
        page["items"] = [i for i in page["items"] if i["type"] == "message"]
        return page if len(page["items"]) == 2 else None

    timeline = await eventually(both_messages, what="both messages in the timeline")
    items = timeline["items"]
    assert isinstance(items, list)
    assert [m["channel"] for m in items] == ["email", "whatsapp"]  # time order
    assert items[0]["text"].startswith("Hello, my order 4411")
    assert items[1]["text"] == "Any news about my order?"
    # Two channels, two conversations, one customer and one timeline.
    conversations = timeline["conversations"]
    assert isinstance(conversations, dict)
    assert len(conversations) == 2
    assert {m["conversation_id"] for m in items} == set(conversations)


async def test_an_unanswered_message_is_assigned_and_breaches_its_sla_once(
    stack: Stack,
) -> None:
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        agent_id = f"agent-{uuid.uuid4().hex[:6]}"
        await helpdesk.agent(
            agent_id,
            capacity={Channel.EMAIL: 5, Channel.WHATSAPP: 5},
            skills={"billing": 6, "orders": 6, "technical": 6},
        )
        ben = customer(stack)
        await ben.mail("Password reset", "I cannot reset my password, the link is broken.")

        async def ben_customer() -> dict[str, object] | None:
            return await find_customer(stack, f"email:{ben.email}")

        profile = await eventually(ben_customer, what="Ben's customer")
        customer_id = profile["customer_id"]

        decision = await helpdesk.wait_for(
            lambda events: next(
                (
                    e
                    for e in events
                    if e.customer_id == customer_id
                    and isinstance(e, ConversationAssigned | ConversationQueued)
                ),
                None,
            ),
            what="Ben's conversation routed",
        )
        conversation_id = decision.conversation_id
        # Nobody answers: the first-response target of the e2e policy is 6 s.

        async def breached() -> list[SlaBreached] | None:
            events = [
                e
                for _, e in await probe.read_events(SLA_EVENTS, timeout=1.0)
                if isinstance(e, SlaBreached) and e.conversation_id == conversation_id
            ]
            return events or None

        (breach,) = await eventually(breached, timeout=90, what="the SLA breach")
        assert breach.metric == "first_response"
        assert breach.policy == "e2e-fast"
        at_risk = [
            e
            for _, e in await probe.read_events(SLA_EVENTS, timeout=1.0)
            if isinstance(e, SlaAtRisk) and e.conversation_id == conversation_id
        ]
        assert len(at_risk) == 1
        assert at_risk[0].at < breach.at
        # Several evaluation rounds later, still exactly one breach for that clock.
        letters = await probe.read_events(SLA_EVENTS, timeout=1.0, settle=4.0)
        firsts = [
            e
            for _, e in letters
            if isinstance(e, SlaBreached)
            and e.conversation_id == conversation_id
            and e.metric == "first_response"
        ]
        assert len(firsts) == 1

    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{stack.url('sla-monitor')}/metrics")).text
    breach_lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("switchboard_sla_breaches_total{")
        and 'metric="first_response"' in line
        and 'policy="e2e-fast"' in line
    ]
    assert breach_lines, "the breach counter is exported"
    assert sum(float(line.rsplit(" ", 1)[1]) for line in breach_lines) >= 1
    assert all("conversation" not in line for line in breach_lines)  # labels are bounded
