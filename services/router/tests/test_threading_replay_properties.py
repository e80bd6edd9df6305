"""Property tests of the pure threading fold: replaying any prefix of a customer's stream,
with duplicates and in any batch split, gives the timeline of processing it once.

The scenarios mix email (new threads, replies by In-Reply-To and References, subject
matches), WhatsApp and X messages, frontend resolves and reopens, and duplicates, with
gaps that cross the inactivity, subject and reopen windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_common.contract import Channel, MessageReceived
from switchboard_devkit.testing.builders import T0
from switchboard_devtools.testing.router_timeline import customer_message, inbound, message_ref
from switchboard_router.timeline.identity import identity_of
from switchboard_router.timeline.plan import Item, MessageItem, plan_customer
from switchboard_router.timeline.threading import CustomerState, Placement, Policy, StatusChange

pytestmark = pytest.mark.unit

POLICY = Policy(
    reopen_window=timedelta(days=3),
    social_inactivity_window=timedelta(hours=24),
    email_subject_window=timedelta(days=4),
)
CUSTOMER = "cu-1"
SENDERS = {
    Channel.EMAIL: ["ana@example.com", "ana@work.example"],
    Channel.WHATSAPP: ["+34600111222"],
    Channel.X: ["4242"],
}
SUBJECTS = ["Order 1234", "Refund", "Login broken"]
GAPS = [timedelta(minutes=5), timedelta(hours=5), timedelta(days=2), timedelta(days=5)]


@dataclass
class Scenario:
    """A customer's stream, and the placements of processing it once, item by item."""

    items: list[Item] = field(default_factory=list)
    placements: dict[str, Placement] = field(default_factory=dict)
    state: CustomerState = field(default_factory=lambda: CustomerState(CUSTOMER))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    scenario = Scenario()
    messages: list[MessageReceived] = []
    at = T0
    for n in range(draw(st.integers(1, 24))):
        at += draw(st.sampled_from(GAPS))
        op = draw(st.sampled_from(["email", "reply", "social", "status", "dup"]))
        item: Item | None = None
        if op == "status" and scenario.placements:
            target = draw(st.sampled_from(sorted(scenario.placements)))
            status: Literal["resolved", "reopened"] = draw(
                st.sampled_from(["resolved", "reopened"])
            )
            item = StatusChange(scenario.placements[target].conversation_id, status, at)
        elif op == "dup" and messages:
            item = _item(draw(st.sampled_from(messages)))
        else:
            message = _message(draw, n, op, at, messages)
            messages.append(message)
            item = _item(message)
        plan = plan_customer(scenario.state, [item], POLICY)
        scenario.state = plan.state
        for a in plan.applied:
            scenario.placements.setdefault(a.item.message_id, a.placement)
        scenario.items.append(item)
    return scenario


def _message(
    draw: st.DrawFn, n: int, op: str, at: datetime, earlier: list[MessageReceived]
) -> MessageReceived:
    emails = [m for m in earlier if m.channel == Channel.EMAIL]
    if op == "social":
        channel = draw(st.sampled_from([Channel.WHATSAPP, Channel.X]))
        thread = (
            draw(st.none() | st.sampled_from(["dm-1", "dm-2"])) if channel == Channel.X else None
        )
        return inbound(f"m-{n}", channel=channel, sender=SENDERS[channel][0], at=at, thread=thread)
    sender = draw(st.sampled_from(SENDERS[Channel.EMAIL]))
    subject = draw(st.sampled_from(SUBJECTS))
    if op == "reply" and emails:
        parent = draw(st.sampled_from(emails))
        ref = message_ref(parent.message_id)
        style = draw(st.sampled_from(["in_reply_to", "references", "both", "unknown_parent"]))
        in_reply_to = ref if style in ("in_reply_to", "both") else None
        references = [ref] if style in ("references", "both") else []
        if style == "unknown_parent":
            in_reply_to, references = "<agent@helpdesk>", ["<agent@helpdesk>"]
        return inbound(
            f"m-{n}",
            sender=sender,
            subject=f"Re: {parent.subject}",
            at=at,
            in_reply_to=in_reply_to,
            references=references,
        )
    return inbound(f"m-{n}", sender=sender, subject=subject, at=at)


def _item(message: MessageReceived) -> MessageItem:
    return MessageItem.of(customer_message(message, CUSTOMER, identity_of(message)))


def _splits(draw: st.DataObject, length: int) -> list[int]:
    """Batch sizes covering ``length`` items."""
    sizes: list[int] = []
    while sum(sizes) < length:
        sizes.append(draw.draw(st.integers(1, max(1, length - sum(sizes)))))
    return sizes


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_any_batch_split_gives_the_timeline_of_processing_once(
    scenario: Scenario, data: st.DataObject
) -> None:
    state, placements = CustomerState(CUSTOMER), dict[str, Placement]()
    position = 0
    for size in _splits(data, len(scenario.items)):
        batch = scenario.items[position : position + size]
        plan = plan_customer(state, batch, POLICY)
        state = plan.state
        for a in plan.applied:
            placements.setdefault(a.item.message_id, a.placement)
        position += size
    assert placements == scenario.placements
    assert state == scenario.state


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_replaying_after_a_crash_gives_the_timeline_of_processing_once(
    scenario: Scenario, data: st.DataObject
) -> None:
    """The timeline's protocol with a store: entries are stored first (first writer wins), then
    the state snapshot; a crash loses memory and uncommitted offsets, so the stream is
    replayed from the last commit, re-split, with duplicates of what was stored."""
    stored: dict[str, Placement] = {}
    snapshot = CustomerState(CUSTOMER)
    memory: CustomerState | None = None
    committed = 0
    crashes = data.draw(st.integers(0, 4))
    outcomes = ["none", "after_entries", "after_state", "after_publish"]
    while committed < len(scenario.items):
        size = data.draw(st.integers(1, len(scenario.items) - committed))
        batch = scenario.items[committed : committed + size]
        base = memory if memory is not None else snapshot.copy()
        plan = plan_customer(base, batch, POLICY)
        if any(a.item.message_id in stored for a in plan.fresh()):
            # The store knows better: re-plan with what it holds (the timeline does the same).
            known = {
                i.message_id: stored[i.message_id]
                for i in batch
                if isinstance(i, MessageItem) and i.message_id in stored
            }
            plan = plan_customer(base, batch, POLICY, stored=known)
        crash = data.draw(st.sampled_from(outcomes)) if crashes else "none"
        for applied in plan.fresh():
            stored.setdefault(applied.item.message_id, applied.placement)
        if crash != "after_entries":
            snapshot = plan.state.copy()
        if crash != "none":
            crashes -= 1
            memory = None  # the process died: memory and uncommitted offsets are lost
            continue
        memory = plan.state
        committed += size
    assert stored == scenario.placements
    assert snapshot == scenario.state
