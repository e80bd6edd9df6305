"""Queueing as agents live it: an urgent message jumps the queue; an agent who goes
offline loses the offers they had not accepted and keeps the work they had."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchboard_common.contract import (
    AgentStatus,
    AssignmentDecision,
    Channel,
    ConversationAssigned,
    ConversationQueued,
    ConversationRequeued,
    Priority,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Customer, Helpdesk, eventually

pytestmark = pytest.mark.e2e
POLICIES = Path(__file__).parent / "policies"
#: Topic skills of the default policy (billing, orders, technical), at a working level.
SKILLS = {"billing": 6, "orders": 6, "technical": 6}


@pytest.fixture
def stack(infra: Infra) -> Iterator[Stack]:
    """The services minus the SLA monitor, with offers that agents must accept; a fresh
    stack per test, because a queue left by one test would (rightly) be served first."""
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "ingest-email",
        "ingest-social",
        "router",
        extra_env={"ROUTER_POLICY_FILE": str(POLICIES / "routing-offers.yaml")},
    ) as running:
        yield running


def person(stack: Stack, name: str) -> Customer:
    return Customer(
        email=f"{name}.{uuid.uuid4().hex[:8]}@example.org",
        phone=f"+3461{random.randrange(10**7):07d}",
        smtp_port=stack.smtp_port,
        social_url=stack.url("ingest-social"),
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )


async def customer_id_of(stack: Stack, who: Customer) -> str:
    async def find() -> str | None:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(
                f"{stack.url('router')}/customers", params={"identity": f"email:{who.email}"}
            )
        items = response.json()["items"]
        return str(items[0]["customer_id"]) if items else None

    return await eventually(find, what=f"the customer of {who.email}")


def latest_for(events: list[AssignmentDecision], customer_id: str) -> AssignmentDecision | None:
    mine = [e for e in events if e.customer_id == customer_id]
    return max(mine, key=lambda e: e.seq) if mine else None


async def test_an_urgent_message_jumps_the_queue(stack: Stack) -> None:
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        agent = f"solo-{uuid.uuid4().hex[:6]}"
        await helpdesk.agent(agent, capacity={Channel.EMAIL: 1}, skills=SKILLS)

        first = person(stack, "first")
        await first.mail("Invoice copy", "Could you send me a copy of my last invoice?")
        first_id = await customer_id_of(stack, first)
        offer = await helpdesk.wait_for(
            lambda events: next(
                (
                    e
                    for e in events
                    if e.customer_id == first_id and isinstance(e, ConversationAssigned)
                ),
                None,
            ),
            what="the first conversation offered",
        )
        assert offer.agent_id == agent
        await helpdesk.accept(agent, offer.conversation_id)

        # Two ordinary conversations wait; then an urgent one arrives after them.
        waiting: list[str] = []
        for name in ("second", "third"):
            who = person(stack, name)
            await who.mail("Delivery address", "I would like to change my delivery address.")
            waiting.append(await customer_id_of(stack, who))
        urgent = person(stack, "urgent")
        await urgent.mail("URGENT: charged twice", "Urgent: I was charged twice, please help.")
        urgent_id = await customer_id_of(stack, urgent)

        def all_queued(events: list[AssignmentDecision]) -> list[AssignmentDecision] | None:
            latest = [latest_for(events, c) for c in (*waiting, urgent_id)]
            if all(isinstance(e, ConversationQueued) for e in latest):
                return [e for e in latest if e is not None]
            return None

        queued = await helpdesk.wait_for(all_queued, what="three conversations queued")
        assert queued[2].priority in (Priority.HIGH, Priority.URGENT)
        assert {e.priority for e in queued[:2]} == {Priority.NORMAL}
        assert queued[2].waiting_since is not None
        assert all(
            e.waiting_since is not None and e.waiting_since <= queued[2].waiting_since
            for e in queued[:2]
        )

        # The agent finishes the first conversation: capacity frees, the urgent one is next.
        await helpdesk.resolve(offer.conversation_id)
        nxt = await helpdesk.wait_for(
            lambda events: next(
                (
                    e
                    for e in events
                    if isinstance(e, ConversationAssigned)
                    and e.customer_id in (*waiting, urgent_id)
                ),
                None,
            ),
            what="the next conversation offered",
        )
        assert nxt.customer_id == urgent_id
        assert nxt.agent_id == agent
        events = await helpdesk.decisions()
        assert all(not isinstance(latest_for(events, c), ConversationAssigned) for c in waiting), (
            "the older, normal-priority conversations still wait"
        )


async def test_an_agent_going_offline_has_unaccepted_work_requeued(stack: Stack) -> None:
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        leaving = f"leaving-{uuid.uuid4().hex[:6]}"
        await helpdesk.agent(leaving, capacity={Channel.EMAIL: 2}, skills=SKILLS)

        accepted_by, offered_to = person(stack, "kept"), person(stack, "moved")
        await accepted_by.mail("Refund", "Please refund my last order, it arrived broken.")
        kept_id = await customer_id_of(stack, accepted_by)
        kept = await helpdesk.wait_for(
            lambda events: (
                e if isinstance(e := latest_for(events, kept_id), ConversationAssigned) else None
            ),
            what="the first offer",
        )
        assert kept.agent_id == leaving
        assert kept.offer_expires_at is not None
        await helpdesk.accept(leaving, kept.conversation_id)

        await offered_to.mail("Order status", "Where is my order? It is a week late.")
        moved_id = await customer_id_of(stack, offered_to)
        offered = await helpdesk.wait_for(
            lambda events: (
                e if isinstance(e := latest_for(events, moved_id), ConversationAssigned) else None
            ),
            what="the second offer",
        )
        assert offered.agent_id == leaving

        await helpdesk.presence(leaving, AgentStatus.OFFLINE)
        requeued = await helpdesk.wait_for(
            lambda events: (
                e if isinstance(e := latest_for(events, moved_id), ConversationRequeued) else None
            ),
            what="the unaccepted offer requeued",
        )
        assert requeued.agent_id is None
        assert requeued.seq > offered.seq
        assert requeued.waiting_since == offered.waiting_since  # keeps its place in line

        # Another agent comes online and gets the requeued conversation.
        arriving = f"arriving-{uuid.uuid4().hex[:6]}"
        await helpdesk.agent(arriving, capacity={Channel.EMAIL: 2}, skills=SKILLS)
        again = await helpdesk.wait_for(
            lambda events: (
                e
                if isinstance(e := latest_for(events, moved_id), ConversationAssigned)
                and e.agent_id == arriving
                else None
            ),
            what="the requeued conversation offered to the new agent",
        )
        assert again.seq > requeued.seq
        # The accepted conversation stayed with the agent who went offline.
        held = latest_for(await helpdesk.decisions(), kept_id)
        assert held is not None
        assert held.agent_id == leaving
        assert not isinstance(held, ConversationRequeued)
