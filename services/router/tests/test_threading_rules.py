"""The pure threading rules: email headers and subjects, social threads, reopen windows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from switchboard_common.contract import Channel, MessageReceived
from switchboard_devkit.testing.builders import T0
from switchboard_devtools.testing.router_timeline import customer_message, inbound, message_ref
from switchboard_router.timeline.identity import identity_of
from switchboard_router.timeline.plan import Item, MessageItem, plan_customer
from switchboard_router.timeline.threading import (
    CustomerState,
    Placement,
    Policy,
    StatusChange,
    conversation_id_for,
    evict,
    normalise_message_id,
    normalise_subject,
)

pytestmark = pytest.mark.unit

HOURS = timedelta(hours=1)
DAYS = timedelta(days=1)


class Thread:
    """Feeds messages and status changes one at a time, as the timeline would."""

    def __init__(self, policy: Policy | None = None, customer_id: str = "cu-1") -> None:
        self.policy = policy or Policy()
        self.state = CustomerState(customer_id)
        self.placements: dict[str, Placement] = {}

    def send(self, *messages: MessageReceived) -> list[Placement]:
        items: list[Item] = [
            MessageItem.of(customer_message(m, self.state.customer_id, identity_of(m)))
            for m in messages
        ]
        return self.feed(items)

    def feed(self, items: list[Item]) -> list[Placement]:
        plan = plan_customer(self.state, items, self.policy)
        self.state = plan.state
        placed = [a.placement for a in plan.applied]
        self.placements.update({a.item.message_id: a.placement for a in plan.applied})
        return placed

    def resolve(self, message_id: str, at: datetime) -> None:
        conversation = self.placements[message_id].conversation_id
        self.feed([StatusChange(conversation, "resolved", at)])

    def reopen(self, message_id: str, at: datetime) -> None:
        conversation = self.placements[message_id].conversation_id
        self.feed([StatusChange(conversation, "reopened", at)])


@pytest.mark.parametrize(
    ("subject", "normalised"),
    [
        ("Re: Order 1234", "order 1234"),
        ("RE : AW: Fwd: order   1234 ", "order 1234"),
        ("SV: Re[2]: Order 1234", "order 1234"),
        ("WG: FW: Order 1234", "order 1234"),
        ("Re(3): Order 1234", "order 1234"),
        ("Remember: Order 1234", "remember: order 1234"),
        (None, ""),
    ],
)
def test_subjects_lose_reply_and_forward_prefixes(subject: str | None, normalised: str) -> None:
    assert normalise_subject(subject) == normalised


def test_message_ids_lose_angle_brackets() -> None:
    assert normalise_message_id(" <a@b> ") == "a@b"
    assert normalise_message_id("<>") is None
    assert normalise_message_id(None) is None


def test_in_reply_to_wins_over_references() -> None:
    thread = Thread()
    a, b = thread.send(
        inbound("m-a", subject="first", at=T0), inbound("m-b", subject="second", at=T0 + HOURS)
    )
    (reply,) = thread.send(
        inbound(
            "m-c",
            subject="whatever",
            at=T0 + 2 * HOURS,
            in_reply_to=message_ref("m-b"),
            references=[message_ref("m-a")],
        )
    )
    assert (reply.conversation_id, reply.rule, reply.kind) == (
        b.conversation_id,
        "in_reply_to",
        "message",
    )
    assert a.conversation_id != b.conversation_id


def test_references_are_searched_from_the_most_recent() -> None:
    thread = Thread()
    _, b = thread.send(
        inbound("m-a", subject="first", at=T0), inbound("m-b", subject="second", at=T0 + HOURS)
    )
    (reply,) = thread.send(
        inbound(
            "m-c",
            at=T0 + 2 * HOURS,
            references=[message_ref("m-a"), "<unknown@x>", message_ref("m-b")],
        )
    )
    assert (reply.conversation_id, reply.rule, reply.index) == (b.conversation_id, "references", 2)


def test_subject_joins_only_an_open_conversation_within_the_window() -> None:
    thread = Thread(Policy(email_subject_window=3 * DAYS))
    (first,) = thread.send(inbound("m-1", subject="Broken zipper", at=T0))
    (within,) = thread.send(inbound("m-2", subject="re: broken ZIPPER", at=T0 + 2 * DAYS))
    (late,) = thread.send(inbound("m-3", subject="Broken zipper", at=T0 + 6 * DAYS))
    (other,) = thread.send(inbound("m-4", subject="Different", at=T0 + 6 * DAYS))
    assert (within.conversation_id, within.rule) == (first.conversation_id, "subject")
    assert late.conversation_id not in (first.conversation_id, other.conversation_id)
    assert late.kind == other.kind == "opened"
    thread.resolve("m-3", T0 + 6 * DAYS + HOURS)
    (after_resolve,) = thread.send(inbound("m-5", subject="Broken zipper", at=T0 + 7 * DAYS))
    # The resolved one is never matched by subject; the open one went quiet too long ago.
    assert after_resolve.kind == "opened"
    assert after_resolve.conversation_id not in (first.conversation_id, late.conversation_id)


def test_an_empty_subject_never_matches() -> None:
    thread = Thread()
    first, second = thread.send(inbound("m-1", subject="", at=T0), inbound("m-2", at=T0 + HOURS))
    assert first.conversation_id != second.conversation_id


def test_a_reply_from_another_sender_of_the_customer_opens_its_own_conversation() -> None:
    thread = Thread()
    (first,) = thread.send(inbound("m-1", sender="ana@work.example", subject="Refund", at=T0))
    (other,) = thread.send(
        inbound(
            "m-2",
            sender="ana@home.example",
            subject="Re: Refund",
            at=T0 + HOURS,
            in_reply_to=message_ref("m-1"),
        )
    )
    assert other.conversation_id != first.conversation_id
    assert (other.kind, other.rule) == ("opened", "new_sender")

    joined = Thread(Policy(email_split_by_sender=False))
    (first,) = joined.send(inbound("m-1", sender="ana@work.example", subject="Refund", at=T0))
    (same,) = joined.send(
        inbound(
            "m-2",
            sender="ana@home.example",
            subject="Re: Refund",
            at=T0 + HOURS,
            in_reply_to=message_ref("m-1"),
        )
    )
    assert (same.conversation_id, same.kind) == (first.conversation_id, "message")


def test_email_to_another_support_address_does_not_join_by_subject() -> None:
    thread = Thread()
    first, second = thread.send(
        inbound("m-1", subject="Help", at=T0, account="support@example.com"),
        inbound("m-2", subject="Help", at=T0 + HOURS, account="billing@example.com"),
    )
    assert first.conversation_id != second.conversation_id


def test_a_reply_to_a_resolved_conversation_reopens_it_within_the_window() -> None:
    thread = Thread(Policy(reopen_window=3 * DAYS))
    (first,) = thread.send(inbound("m-1", subject="Refund", at=T0))
    thread.resolve("m-1", T0 + DAYS)
    (reopened,) = thread.send(
        inbound("m-2", subject="Re: Refund", at=T0 + 2 * DAYS, in_reply_to=message_ref("m-1"))
    )
    assert (reopened.conversation_id, reopened.kind, reopened.index) == (
        first.conversation_id,
        "reopened",
        2,
    )
    assert thread.state.conversations[first.conversation_id].status == "open"


def test_after_the_reopen_window_a_new_conversation_links_to_the_resolved_one() -> None:
    thread = Thread(Policy(reopen_window=3 * DAYS))
    (first,) = thread.send(inbound("m-1", subject="Refund", at=T0))
    thread.resolve("m-1", T0 + DAYS)
    late = inbound("m-2", subject="Re: Refund", at=T0 + 5 * DAYS, in_reply_to=message_ref("m-1"))
    (successor,) = thread.send(late)
    assert successor.kind == "opened"
    assert successor.conversation_id == conversation_id_for("m-2")
    assert successor.previous_conversation_id == first.conversation_id
    assert successor.claim == f"after|{first.conversation_id}"
    # A second late reply to the old thread joins the successor, not a third conversation.
    (again,) = thread.send(
        inbound(
            "m-3", subject="Re: Refund", at=T0 + 5 * DAYS + HOURS, in_reply_to=message_ref("m-1")
        )
    )
    assert (again.conversation_id, again.kind) == (successor.conversation_id, "message")


@pytest.mark.parametrize(
    "quiet",
    [{"kind": "reaction"}, {"kind": "edit"}, {"auto_submitted": True}],
    ids=["reaction", "edit", "auto-reply"],
)
def test_a_message_nobody_waits_on_joins_a_resolved_conversation_without_reopening_it(
    quiet: dict[str, Any],
) -> None:
    thread = Thread(Policy(reopen_window=3 * DAYS, social_inactivity_window=24 * HOURS))
    whatsapp: dict[str, Any] = {"channel": Channel.WHATSAPP, "sender": "+34600111222"}
    (first,) = thread.send(inbound("w-1", at=T0, **whatsapp))
    thread.resolve("w-1", T0 + HOURS)
    # Within the reopen window, and long after it: neither reopens nor opens a conversation.
    for message_id, at in (("q-1", T0 + 2 * HOURS), ("q-2", T0 + 10 * DAYS)):
        (placed,) = thread.send(inbound(message_id, at=at, **whatsapp, **quiet))
        assert (placed.conversation_id, placed.kind) == (first.conversation_id, "message")
    conversation = thread.state.conversations[first.conversation_id]
    assert (conversation.status, conversation.message_count) == ("resolved", 3)
    assert len(thread.state.conversations) == 1
    # The customer's next real message still reopens (or starts anew) as before.
    (real,) = thread.send(inbound("w-2", at=T0 + 10 * DAYS + HOURS, **whatsapp))
    assert (real.kind, real.previous_conversation_id) == ("opened", first.conversation_id)


def test_a_frontend_reopen_keeps_the_conversation_open() -> None:
    thread = Thread(Policy(reopen_window=HOURS))
    (first,) = thread.send(inbound("m-1", channel=Channel.WHATSAPP, sender="+34600111222", at=T0))
    thread.resolve("m-1", T0 + HOURS)
    thread.reopen("m-1", T0 + 2 * HOURS)
    (joined,) = thread.send(
        inbound("m-2", channel=Channel.WHATSAPP, sender="+34600111222", at=T0 + 3 * HOURS)
    )
    assert (joined.conversation_id, joined.kind) == (first.conversation_id, "message")


def test_social_messages_join_the_senders_open_conversation_until_it_goes_quiet() -> None:
    thread = Thread(Policy(social_inactivity_window=24 * HOURS))
    whatsapp: dict[str, Any] = {"channel": Channel.WHATSAPP, "sender": "+34600111222"}
    (first,) = thread.send(inbound("w-1", at=T0, **whatsapp))
    (second,) = thread.send(inbound("w-2", at=T0 + 23 * HOURS, **whatsapp))
    (third,) = thread.send(inbound("w-3", at=T0 + 48 * HOURS, **whatsapp))
    assert (
        first.claim
        == "first|cu-1|whatsapp|-|s|" + thread.state.conversations[first.conversation_id].sender
    )
    assert (second.conversation_id, second.rule, second.index) == (
        first.conversation_id,
        "channel",
        2,
    )
    assert third.kind == "opened"
    assert third.previous_conversation_id == first.conversation_id
    assert third.closes == first.conversation_id
    closed = thread.state.conversations[first.conversation_id]
    assert (closed.status, closed.closed_reason) == ("resolved", "inactive")
    # Another sender of the same customer on the same channel has a thread of their own.
    (other,) = thread.send(
        inbound("w-4", channel=Channel.WHATSAPP, sender="+34600999888", at=T0 + 48 * HOURS)
    )
    assert other.conversation_id not in (first.conversation_id, third.conversation_id)


def test_provider_threads_separate_conversations_and_ignore_inactivity() -> None:
    thread = Thread(Policy(social_inactivity_window=HOURS))
    x: dict[str, Any] = {"channel": Channel.X, "sender": "42"}
    (a,) = thread.send(inbound("x-1", thread="dm-1", at=T0, **x))
    (b,) = thread.send(inbound("x-2", thread="dm-2", at=T0 + 1 * HOURS, **x))
    (a2,) = thread.send(inbound("x-3", thread="dm-1", at=T0 + 30 * HOURS, **x))
    assert a.conversation_id != b.conversation_id
    assert (a2.conversation_id, a2.rule) == (a.conversation_id, "provider_thread")


def test_the_same_message_twice_in_one_batch_is_placed_once() -> None:
    thread = Thread()
    message = inbound("m-1", subject="Hello", at=T0)
    placed = thread.send(message, message)
    assert len(placed) == 1


def test_eviction_keeps_open_conversations_and_forgets_their_references() -> None:
    policy = Policy(max_conversations=3, max_refs=10, max_threads=10)
    thread = Thread(policy)
    for n in range(5):
        thread.send(inbound(f"m-{n}", subject=f"topic {n}", at=T0 + n * HOURS))
        if n < 3:
            thread.resolve(f"m-{n}", T0 + n * HOURS + timedelta(minutes=5))
    assert len(thread.state.conversations) == 3
    kept = {c.conversation_id for c in thread.state.conversations.values()}
    assert thread.placements["m-3"].conversation_id in kept
    assert thread.placements["m-4"].conversation_id in kept
    assert all(c in kept for c in thread.state.refs.values())
    state = thread.state.copy()
    assert evict(state, policy) == []
