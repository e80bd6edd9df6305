"""The timeline's batch handler under crashes, redelivery and duplicates (in-memory stores).

A process that dies at any write, or after its writes but before the offsets are
committed, is restarted with an empty memory and gets the uncommitted records again,
split differently. Whatever happens, every message ends up stored once, in the
conversation that processing the stream once gives it, and every activity published
for a message says the same thing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    CUSTOMER_MESSAGES,
    Channel,
    ContractModel,
    ConversationActivity,
    ConversationStatusChanged,
    CustomerErased,
    CustomerMessage,
    TopicNames,
)
from switchboard_common.deadletter import RawRecord
from switchboard_devkit.testing.builders import T0
from switchboard_devtools.testing.router_timeline import (
    RecordingPublisher,
    customer_message,
    inbound,
    message_ref,
)
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.apply import Route, TimelineStage
from switchboard_router.timeline.identity import identity_of
from switchboard_router.timeline.memory import (
    InMemoryIdentityStore,
    InMemoryRawMail,
    InMemoryTimelineStore,
)
from switchboard_router.timeline.ports import IdentityRecord
from switchboard_router.timeline.resolve import IdentityResolver
from switchboard_router.timeline.threading import Policy

pytestmark = pytest.mark.unit

TOPICS = TopicNames("t.")
POLICY = Policy(
    reopen_window=timedelta(days=3),
    social_inactivity_window=timedelta(hours=24),
    email_subject_window=timedelta(days=4),
)
CUSTOMERS = {"cu-ana": 0, "cu-bob": 1}
HOUR = timedelta(hours=1)
#: The same rules with room for two Message-IDs per customer: a reply to an older
#: message finds its conversation through the Message-ID index.
FORGETFUL = dataclasses.replace(POLICY, max_refs=2)


class CrashError(ConnectionError):
    """The process died here (raised from a store call or a publish)."""


class FlakyStore(InMemoryTimelineStore):
    """An in-memory store that dies at its n-th call of an attempt (when armed)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.die_at: int | None = None

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.die_at is not None and self.calls >= self.die_at:
                self.die_at = None
                raise CrashError(f"died before {name}")
            return await attribute(*args, **kwargs)

        return call


def delivery(event: ContractModel, key: str, offset: int) -> Delivery:
    record = RawRecord(
        topic=TOPICS(CUSTOMER_MESSAGES),
        partition=CUSTOMERS[key],
        offset=offset,
        key=key.encode(),
        value=b"{}",
        headers=(),
    )
    attributes = CloudEventAttributes(
        id=f"ce-{key}-{offset}", type=event.ce_type, source="/tests", time=T0
    )
    return Delivery(record, attributes, event, CUSTOMER_MESSAGES)


def stage_on(
    store: InMemoryTimelineStore,
    publisher: RecordingPublisher,
    policy: Policy = POLICY,
    route: Route | None = None,
) -> TimelineStage:
    metrics = TimelineMetrics.create(CollectorRegistry())
    resolver = IdentityResolver(InMemoryIdentityStore(), clock=lambda: T0, metrics=metrics, ttl=0)
    return TimelineStage(
        store,
        publisher,
        resolver,
        raw_mail=InMemoryRawMail(),
        policy=policy,
        clock=lambda: T0,
        metrics=metrics,
        route=route,
    )


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, CustomerMessage]]:
    """Two customers' interleaved messages: new threads, replies, subjects, WhatsApp."""
    records: list[tuple[str, CustomerMessage]] = []
    at = T0
    for n in range(draw(st.integers(1, 30))):
        at += draw(st.sampled_from([timedelta(minutes=3), timedelta(hours=6), timedelta(days=2)]))
        customer = draw(st.sampled_from(sorted(CUSTOMERS)))
        sender = "ana@example.com" if customer == "cu-ana" else "bob@example.org"
        mine = [m for h, m in records if h == customer and m.message.channel == Channel.EMAIL]
        shape = draw(st.sampled_from(["new", "reply", "subject", "whatsapp", "dup"]))
        if shape == "dup" and records:
            records.append(draw(st.sampled_from(records)))
            continue
        if shape == "whatsapp":
            phone = "+34600111222" if customer == "cu-ana" else "+44700900900"
            message = inbound(f"m-{n}", channel=Channel.WHATSAPP, sender=phone, at=at)
        elif shape == "reply" and mine:
            parent = draw(st.sampled_from(mine)).message
            message = inbound(
                f"m-{n}",
                sender=sender,
                subject=f"Re: {parent.subject}",
                at=at,
                in_reply_to=message_ref(parent.message_id),
            )
        else:
            subject = draw(st.sampled_from(["Refund", "Delivery"]))
            message = inbound(f"m-{n}", sender=sender, subject=subject, at=at)
        records.append((customer, customer_message(message, customer, identity_of(message))))
    return records


async def run(
    records: list[tuple[str, ContractModel]],
    splits: Callable[[int], int],
    faults: Callable[[], tuple[int | None, bool]],
    policy: Policy = POLICY,
) -> tuple[FlakyStore, RecordingPublisher]:
    """Feed the records as a consumer group would: a batch whose handler fails (or
    whose commit is lost) is redelivered to a freshly started stage."""
    store, publisher = FlakyStore(), RecordingPublisher()
    offsets: dict[str, int] = dict.fromkeys(CUSTOMERS, 0)
    deliveries = []
    for key, event in records:
        deliveries.append(delivery(event, key, offsets[key]))
        offsets[key] += 1
    stage = stage_on(store, publisher, policy)
    committed = 0
    for _ in range(500):
        if committed >= len(deliveries):
            return store, publisher
        batch = deliveries[committed : committed + splits(len(deliveries) - committed)]
        die_at, lose_commit = faults()
        store.calls, store.die_at = 0, die_at
        try:
            await stage(batch)
        except CrashError:
            stage = stage_on(store, publisher, policy)
            continue
        finally:
            store.die_at = None
        if lose_commit:
            stage = stage_on(store, publisher, policy)
            continue
        committed += len(batch)
    raise AssertionError("the stream never completed")


def outcome(store: InMemoryTimelineStore) -> dict[str, tuple[str, str, int]]:
    return {
        key: (d["conversation_id"], d["placement"], d["index"]) for key, d in store.messages.items()
    }


def activities(publisher: RecordingPublisher) -> dict[str, set[tuple[str, str, int]]]:
    seen: dict[str, set[tuple[str, str, int]]] = {}
    for event in publisher.events(ConversationActivity):
        seen.setdefault(event.message_id, set()).add(
            (event.conversation_id, event.kind, event.message_count)
        )
    return seen


@settings(max_examples=120, deadline=None)
@given(stream=streams(), data=st.data())
def test_crashes_and_redelivery_leave_every_message_stored_once_where_it_belongs(
    stream: list[tuple[str, CustomerMessage]], data: st.DataObject
) -> None:
    records: list[tuple[str, ContractModel]] = list(stream)
    reference, _ = asyncio.run(run(records, lambda n: n, lambda: (None, False)))
    crashes = [data.draw(st.integers(0, 3))]

    def faults() -> tuple[int | None, bool]:
        if not crashes[0]:
            return None, False
        crashes[0] -= 1
        return data.draw(st.none() | st.integers(1, 12)), data.draw(st.booleans())

    # The state remembers two Message-IDs here: the rest must be found in the index.
    splits = lambda n: data.draw(st.integers(1, n))  # noqa: E731
    store, publisher = asyncio.run(run(records, splits, faults, FORGETFUL))
    assert outcome(store) == outcome(reference)
    assert set(store.conversations) == set(reference.conversations)
    for key, document in reference.conversations.items():
        assert store.conversations[key]["status"] == document["status"]
    published = activities(publisher)
    assert set(published) == set(store.messages)
    for message_id, said in published.items():
        assert said == {outcome(store)[message_id]}  # every copy says the same thing


def test_a_status_change_reaches_threading_in_order_with_the_messages() -> None:
    first = inbound("w-1", channel=Channel.WHATSAPP, sender="+34600111222", at=T0)
    late = inbound(
        "w-2", channel=Channel.WHATSAPP, sender="+34600111222", at=T0 + timedelta(days=5)
    )
    records: list[tuple[str, ContractModel]] = [
        ("cu-ana", customer_message(first, "cu-ana", identity_of(first)))
    ]

    async def scenario() -> tuple[FlakyStore, RecordingPublisher]:
        store, publisher = await run(records, lambda n: n, lambda: (None, False))
        conversation = next(iter(store.conversations))
        resolved = ConversationStatusChanged(
            customer_id="cu-ana",
            conversation_id=conversation,
            status="resolved",
            at=T0 + timedelta(hours=1),
        )
        stage = stage_on(store, publisher)
        await stage(
            [
                delivery(resolved, "cu-ana", 1),
                delivery(customer_message(late, "cu-ana", identity_of(late)), "cu-ana", 2),
            ]
        )
        return store, publisher

    store, publisher = asyncio.run(scenario())
    kinds = [
        (e.message_id, e.kind, e.previous_conversation_id)
        for e in publisher.events(ConversationActivity)
    ]
    first_conversation = store.messages["w-1"]["conversation_id"]
    assert kinds == [("w-1", "opened", None), ("w-2", "opened", first_conversation)]
    assert store.conversations[first_conversation]["status"] == "resolved"


def test_messages_of_an_erased_customer_go_back_to_identity_resolution() -> None:
    before = inbound("m-1", at=T0, subject="Hi", raw_ref="sha256:aa")
    after = inbound("m-2", at=T0 + timedelta(minutes=5), subject="Hi again", raw_ref="sha256:bb")
    raw_mail = InMemoryRawMail("sha256:aa", "sha256:bb")

    async def scenario() -> tuple[InMemoryTimelineStore, RecordingPublisher, str]:
        store, publisher = InMemoryTimelineStore(), RecordingPublisher()
        metrics = TimelineMetrics.create(CollectorRegistry())
        identities = InMemoryIdentityStore()
        # The identity was already deleted by the erasure; a fresh customer awaits it.
        resolver = IdentityResolver(
            identities, clock=lambda: T0, metrics=metrics, ttl=0, new_id=lambda: "cu-fresh"
        )
        stage = TimelineStage(
            store,
            publisher,
            resolver,
            raw_mail=raw_mail,
            policy=POLICY,
            clock=lambda: T0,
            metrics=metrics,
        )
        erased = CustomerErased(customer_id="cu-ana", erasure_id="er-1", at=T0)
        await stage(
            [
                delivery(customer_message(before, "cu-ana", identity_of(before)), "cu-ana", 0),
                delivery(erased, "cu-ana", 1),
                delivery(customer_message(after, "cu-ana", identity_of(after)), "cu-ana", 2),
            ]
        )
        record = await identities.get_identity("email:ana@example.com")
        assert isinstance(record, IdentityRecord)
        return store, publisher, record.customer_id

    store, publisher, fresh = asyncio.run(scenario())
    assert store.messages["m-1"]["text"] == ""
    assert store.messages["m-1"]["sender"] is None
    assert store.messages["m-1"]["raw_ref"] is None
    # The erased customer's raw mail is gone; the message handed back keeps its own.
    assert raw_mail.refs == {"sha256:bb"}
    assert "m-2" not in store.messages
    handed_back = publisher.events(CustomerMessage)
    assert [(m.customer_id, m.message.message_id) for m in handed_back] == [(fresh, "m-2")]
    assert fresh == "cu-fresh"
    state = store.states["cu-ana"]
    assert state["erased"] is True
    assert state["conversations"] == []


def test_an_unstored_message_sent_to_the_timeline_is_never_lost_when_publishing_fails() -> None:
    message = inbound("m-1", at=datetime(2026, 1, 1, tzinfo=UTC))
    record = customer_message(message, "cu-ana", identity_of(message))

    async def scenario() -> RecordingPublisher:
        store, publisher = InMemoryTimelineStore(), RecordingPublisher()
        stage = stage_on(store, publisher)
        publisher.fail_next = 1
        attempt: Callable[[], Awaitable[object]] = lambda: stage([delivery(record, "cu-ana", 0)])  # noqa: E731 - a retry, twice
        with pytest.raises(ConnectionError):
            await attempt()
        await attempt()
        return publisher

    publisher = asyncio.run(scenario())
    (activity,) = publisher.events(ConversationActivity)
    assert (activity.message_id, activity.kind) == ("m-1", "opened")


def test_stored_messages_are_routed_after_their_activity_and_a_failed_routing_retries() -> None:
    """Routing happens in the batch that stores the messages, after their activity is
    published; when it fails, the batch fails (its offsets stay uncommitted) and the
    redelivered batch hands the same messages, in the same conversations, to routing."""
    email = inbound("m-1", subject="Refund", at=T0)
    chat = inbound("m-2", channel=Channel.WHATSAPP, sender="+34600111222", at=T0 + HOUR)
    batch = [
        delivery(customer_message(m, "cu-ana", identity_of(m)), "cu-ana", n)
        for n, m in enumerate([email, chat])
    ]
    store, publisher = InMemoryTimelineStore(), RecordingPublisher()
    routed: list[list[tuple[str, str]]] = []
    named: list[dict[str, list[str]]] = []

    async def route(
        activities: Sequence[ConversationActivity], earlier: Mapping[str, Sequence[str]]
    ) -> None:
        published = {a.message_id for a in publisher.events(ConversationActivity)}
        assert {a.message_id for a in activities} <= published  # activity first
        routed.append([(a.message_id, a.conversation_id) for a in activities])
        named.append({k: list(v) for k, v in earlier.items()})
        if len(routed) == 1:
            raise ConnectionError("the database went away while routing")

    async def scenario() -> None:
        stage = stage_on(store, publisher, route=route)
        with pytest.raises(ConnectionError):
            await stage(batch)
        await stage_on(store, publisher, route=route)(batch)

    asyncio.run(scenario())
    first, retry = routed
    assert first == retry
    assert [m for m, _ in first] == ["m-1", "m-2"]
    stored = {m: d["conversation_id"] for m, d in store.messages.items()}
    assert dict(first) == stored
    assert len(set(stored.values())) == 2  # an email and a chat: two conversations
    # Sticky routing of the chat may look at the customer's earlier conversation.
    assert named == [{stored["m-2"]: [stored["m-1"]]}] * 2


def test_a_duplicate_the_state_no_longer_remembers_keeps_its_stored_place() -> None:
    policy = Policy(max_applied=2)
    messages = [inbound(f"m-{n}", subject="Refund", at=T0 + timedelta(minutes=n)) for n in range(5)]
    records = [customer_message(m, "cu-ana", identity_of(m)) for m in messages]

    async def scenario() -> tuple[InMemoryTimelineStore, RecordingPublisher]:
        store, publisher = InMemoryTimelineStore(), RecordingPublisher()
        stage = stage_on(store, publisher, policy)
        for offset, record in enumerate(records):
            await stage([delivery(record, "cu-ana", offset)])
        # The first message again, long after: the state forgot it, the timeline did not.
        late = inbound("m-5", subject="Refund", at=T0 + timedelta(minutes=9))
        await stage(
            [
                delivery(records[0], "cu-ana", 5),
                delivery(customer_message(late, "cu-ana", identity_of(late)), "cu-ana", 6),
            ]
        )
        return store, publisher

    store, publisher = asyncio.run(scenario())
    assert outcome(store)["m-0"][1:] == ("opened", 1)
    assert outcome(store)["m-5"][1:] == ("message", 6)
    said = activities(publisher)
    assert said["m-0"] == {outcome(store)["m-0"]}
    assert len(store.messages) == 6


def test_only_message_ids_the_state_stops_holding_go_to_the_index() -> None:
    policy = dataclasses.replace(POLICY, max_refs=2)
    subjects = ["Refund", "Delivery", "Invoice"]
    messages = [
        inbound(f"m-{n}", subject=s, at=T0 + timedelta(minutes=n)) for n, s in enumerate(subjects)
    ]
    reply = inbound(
        "m-3",
        subject="Re: Refund",
        at=T0 + timedelta(minutes=9),
        in_reply_to=message_ref("m-0"),
    )

    async def scenario() -> tuple[InMemoryTimelineStore, list[int]]:
        store, publisher = InMemoryTimelineStore(), RecordingPublisher()
        stage = stage_on(store, publisher, policy)
        sizes = []
        for offset, m in enumerate([*messages, reply]):
            await stage([delivery(customer_message(m, "cu-ana", identity_of(m)), "cu-ana", offset)])
            sizes.append(len(store.refs))
        return store, sizes

    store, sizes = asyncio.run(scenario())
    # Two Message-IDs fit in the state: nothing is indexed until the third.
    assert sizes[:3] == [0, 0, 1]
    placed = outcome(store)
    assert len({placed[f"m-{n}"][0] for n in range(3)}) == 3
    # The reply names the message the state forgot: it joins that message's conversation.
    assert placed["m-3"][:2] == (placed["m-0"][0], "message")


class DiesBefore(InMemoryTimelineStore):
    """An in-memory store whose process dies the first time it is asked to do ``what``
    (once armed, and with something to do), as a SIGKILL at that moment would."""

    def __init__(self) -> None:
        super().__init__()
        self.what: str | None = None

    async def save_states(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_die("save_states", args[0])
        await super().save_states(*args, **kwargs)

    async def replace_messages(self, documents: Sequence[Any]) -> None:
        self._maybe_die("replace_messages", documents)
        await super().replace_messages(documents)

    def _maybe_die(self, name: str, work: Sequence[Any]) -> None:
        if self.what == name and work:
            self.what = None
            raise CrashError(f"died before {name}")


def test_a_replay_with_newer_messages_after_two_crashes_places_them_as_once() -> None:
    """A crash after storing a new conversation's first messages but before saving the
    state; the redelivered batch also holds a newer message, and the process dies again
    at the first correction of a stored entry it would make. Conversation ids and
    placements are derived from the messages, so the replay's plan agrees with what the
    first attempt stored and the newer message lands where processing once puts it."""
    phone = "+34600111222"
    at = [T0, T0 + timedelta(days=2)]  # the second opens a conversation after the first
    at += [at[-1] + timedelta(minutes=3 * n) for n in range(1, 4)]
    messages = [
        customer_message(m, "cu-ana", identity_of(m))
        for m in (
            inbound(f"w-{n}", channel=Channel.WHATSAPP, sender=phone, at=moment)
            for n, moment in enumerate(at)
        )
    ]
    deliveries = [delivery(m, "cu-ana", n) for n, m in enumerate(messages)]

    async def scenario() -> InMemoryTimelineStore:
        store, publisher = DiesBefore(), RecordingPublisher()
        await stage_on(store, publisher)(deliveries[:1])
        store.what = "save_states"
        with pytest.raises(CrashError):
            await stage_on(store, publisher)(deliveries[1:4])  # stored; the state is not
        store.what = "replace_messages"  # and a second crash at any correction
        try:
            await stage_on(store, publisher)(deliveries[1:])
        except CrashError:
            await stage_on(store, publisher)(deliveries[1:])
        return store

    once: list[tuple[str, ContractModel]] = [("cu-ana", m) for m in messages]
    reference, _ = asyncio.run(run(once, lambda n: n, lambda: (None, False)))
    store = asyncio.run(scenario())
    assert outcome(store) == outcome(reference)
    assert outcome(store)["w-4"][1:] == ("message", 4)
