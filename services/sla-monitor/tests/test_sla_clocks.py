"""Clock derivation from facts: response and resolution clocks, pauses, recomputation,
and independence from the order and repetition in which events arrive."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_common.contract import Channel, ContractModel, Priority, SlaMetric
from switchboard_devtools.testing.sla_monitor import (
    activity,
    assigned,
    reopened,
    reply,
    resolved,
    simple_policies,
)
from switchboard_sla_monitor.clocks import ClockState, derive, due_times, pending_emissions
from switchboard_sla_monitor.facts import Fact, fact_from_event
from switchboard_sla_monitor.ingest import ClockIngest
from switchboard_sla_monitor.policy import PolicySet
from switchboard_sla_monitor.store import InMemoryConversationStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
PAUSE = frozenset({"awaiting_customer"})
CID = "conv-1"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def facts_of(events: Sequence[ContractModel]) -> list[Fact]:
    out = []
    for event in events:
        found = fact_from_event(event)
        assert found is not None
        out.append(found[1])
    return out


def clocks_of(
    events: Sequence[ContractModel],
    policies: PolicySet | None = None,
    pause: frozenset[str] = PAUSE,
) -> dict[str, ClockState]:
    clocks = derive(facts_of(events), policies or simple_policies(), pause)
    return {c.id: c for c in clocks}


def test_first_response_runs_from_the_opening_message_to_the_first_reply() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            activity(CID, "m2", minutes(5)),  # a second message does not restart it
            reply(CID, minutes(20)),
        ]
    )
    first = clocks["first_response:1"]
    assert first.started_at == minutes(0)
    assert first.stopped_at == minutes(20)
    assert first.due_at == minutes(60)
    assert first.warn_at == minutes(50)
    assert first.outcome == "met"
    assert first.achieved_seconds == 20 * 60
    assert clocks["resolution:e0"].is_open
    assert not any(c.metric == SlaMetric.NEXT_RESPONSE for c in clocks.values())


def test_next_response_starts_at_the_first_message_after_a_reply() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            reply(CID, minutes(10)),
            activity(CID, "m2", minutes(30)),
            activity(CID, "m3", minutes(40)),
            reply(CID, minutes(200)),
        ]
    )
    (nxt,) = [c for c in clocks.values() if c.metric == SlaMetric.NEXT_RESPONSE]
    assert (nxt.started_at, nxt.stopped_at) == (minutes(30), minutes(200))
    assert nxt.due_at == minutes(150)
    assert nxt.outcome == "breached"


def test_resolving_stops_next_response_and_resolution() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            reply(CID, minutes(10)),
            activity(CID, "m2", minutes(30)),
            resolved(CID, minutes(45)),
        ]
    )
    (nxt,) = [c for c in clocks.values() if c.metric == SlaMetric.NEXT_RESPONSE]
    assert nxt.stopped_at == minutes(45)
    assert nxt.stop_reason == "resolved"
    assert nxt.outcome == "met"
    assert clocks["resolution:e0"].stopped_at == minutes(45)
    assert all(not c.is_open for c in clocks.values())
    # Nothing left to emit, ever.
    assert pending_emissions(CID, clocks.values(), minutes(10_000), set()) == []


def test_a_message_after_resolution_reopens_with_new_clocks() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            reply(CID, minutes(10)),
            resolved(CID, minutes(20)),
            activity(CID, "m2", minutes(100), kind="reopened"),
        ]
    )
    assert clocks["resolution:e1"].started_at == minutes(100)
    assert clocks["resolution:e1"].is_open
    (nxt,) = [c for c in clocks.values() if c.metric == SlaMetric.NEXT_RESPONSE]
    assert nxt.started_at == minutes(100)
    assert nxt.is_open


def test_an_agent_reopen_restarts_only_the_resolution_clock() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            reply(CID, minutes(10)),
            resolved(CID, minutes(20)),
            reopened(CID, minutes(30)),
        ]
    )
    assert clocks["resolution:e1"].started_at == minutes(30)
    assert [c.id for c in clocks.values() if c.is_open] == ["resolution:e1"]


def test_waiting_on_the_customer_pauses_and_their_message_resumes() -> None:
    events: list[ContractModel] = [
        activity(CID, "m1", minutes(0), kind="opened"),
        reply(CID, minutes(60), awaiting=True),
    ]
    paused = clocks_of(events)["resolution:e0"]
    assert paused.paused
    assert paused.due_at is None
    assert paused.warn_at is None
    assert pending_emissions(CID, [paused], minutes(100_000), set()) == []

    resumed = clocks_of([*events, activity(CID, "m2", minutes(300))])["resolution:e0"]
    assert not resumed.paused
    # 8 h target: 60 min before the pause, the rest counted from 300 min on.
    assert resumed.due_at == minutes(300 + 7 * 60)
    # Without the pause status configured, nothing pauses.
    unpaused = clocks_of([*events], pause=frozenset())["resolution:e0"]
    assert unpaused.due_at == minutes(8 * 60)


def test_an_auto_reply_from_the_customer_neither_starts_a_clock_nor_resumes() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            reply(CID, minutes(10), awaiting=True),
            activity(CID, "ooo", minutes(11), auto_submitted=True),
        ]
    )
    assert clocks["resolution:e0"].paused
    assert not any(c.metric == SlaMetric.NEXT_RESPONSE for c in clocks.values())


def test_a_reaction_or_edit_after_a_reply_starts_no_next_response_clock() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened", channel=Channel.WHATSAPP),
            reply(CID, minutes(10)),
            activity(CID, "thumbs-up", minutes(11), channel=Channel.WHATSAPP, expects_reply=False),
            activity(CID, "edited", minutes(12), channel=Channel.WHATSAPP, expects_reply=False),
        ]
    )
    assert not any(c.metric == SlaMetric.NEXT_RESPONSE for c in clocks.values())
    assert clocks["first_response:1"].outcome == "met"


def test_a_priority_change_recomputes_open_deadlines() -> None:
    base: list[ContractModel] = [
        activity(CID, "m1", minutes(0), kind="opened"),
        assigned(CID, minutes(1), seq=1, priority=Priority.NORMAL),
    ]
    before = clocks_of(base)["first_response:1"]
    assert (before.policy, before.due_at) == ("standard", minutes(60))
    after = clocks_of([*base, assigned(CID, minutes(2), seq=2, priority=Priority.URGENT)])[
        "first_response:1"
    ]
    assert (after.policy, after.due_at, after.priority) == ("urgent", minutes(15), Priority.URGENT)
    # A stale decision (lower seq) arriving late changes nothing.
    late = clocks_of([*base, assigned(CID, minutes(2), seq=2, priority=Priority.URGENT)][::-1])
    assert late["first_response:1"] == after


def test_a_policy_change_recomputes_open_deadlines() -> None:
    events = [activity(CID, "m1", minutes(0), kind="opened")]
    assert clocks_of(events, simple_policies(first="1h"))["first_response:1"].due_at == minutes(60)
    assert clocks_of(events, simple_policies(first="2h"))["first_response:1"].due_at == minutes(120)


def test_a_stopped_clock_keeps_the_priority_in_force_when_it_stopped() -> None:
    clocks = clocks_of(
        [
            activity(CID, "m1", minutes(0), kind="opened"),
            assigned(CID, minutes(1), seq=1),
            reply(CID, minutes(30)),
            assigned(CID, minutes(40), seq=2, priority=Priority.URGENT),
        ]
    )
    assert clocks["first_response:1"].policy == "standard"
    assert clocks["first_response:1"].outcome == "met"
    assert clocks["resolution:e0"].policy == "urgent"


def test_a_routing_decision_before_the_activity_starts_the_clock_from_waiting_since() -> None:
    early = clocks_of([assigned(CID, minutes(2), waiting_since=minutes(1))])
    assert early["first_response:1"].started_at == minutes(1)
    complete = clocks_of(
        [
            assigned(CID, minutes(2), waiting_since=minutes(1)),
            activity(CID, "m1", minutes(0), kind="opened"),
        ]
    )
    assert complete["first_response:1"].started_at == minutes(0)


def test_business_hours_apply_to_deadlines() -> None:
    policies = simple_policies(
        first="1h",
        calendar={
            "timezone": "Europe/Madrid",
            "hours": {
                d: ["09:00-17:00"] for d in ("monday", "tuesday", "wednesday", "thursday", "friday")
            },
        },
    )
    friday = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)  # 16:30 in Madrid
    clock = clocks_of([activity(CID, "m1", friday, kind="opened")], policies)["first_response:1"]
    assert clock.due_at == datetime(2026, 11, 23, 8, 30, tzinfo=UTC)  # Monday 09:30 in Madrid


def test_published_due_times_are_the_business_hours_deadlines_of_running_clocks() -> None:
    policies = simple_policies(
        first="1h",
        calendar={
            "timezone": "Europe/Madrid",
            "hours": {
                d: ["09:00-17:00"] for d in ("monday", "tuesday", "wednesday", "thursday", "friday")
            },
        },
    )
    friday = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)  # 16:30 in Madrid
    opened = [activity(CID, "m1", friday, kind="opened")]
    clocks = list(clocks_of(opened, policies).values())
    due = due_times(clocks)
    # Monday 09:30 in Madrid: the hour left over the weekend, as the breach is computed.
    assert due["first_response"] == datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
    assert set(due) == {"first_response", "resolution"}
    (breach,) = [
        e
        for e in pending_emissions(CID, clocks, datetime(2026, 11, 30, tzinfo=UTC), set())
        if e.kind == "breached" and e.clock.metric == SlaMetric.FIRST_RESPONSE
    ]
    assert breach.event().due_at == due["first_response"]
    # A reply stops first response: its due time goes; waiting on the customer pauses
    # the resolution clock, which then has no due time either.
    answered = [*opened, reply(CID, friday + timedelta(minutes=10), awaiting=True)]
    assert due_times(clocks_of(answered, policies).values()) == {}
    answered = [*opened, reply(CID, friday + timedelta(minutes=10))]
    assert set(due_times(clocks_of(answered, policies).values())) == {"resolution"}


def test_emissions_are_due_at_warn_and_due_and_not_for_stopped_clocks() -> None:
    events: list[ContractModel] = [activity(CID, "m1", minutes(0), kind="opened")]
    clocks = list(clocks_of(events).values())
    assert pending_emissions(CID, clocks, minutes(49), set()) == []
    at_warn = pending_emissions(CID, clocks, minutes(50), set())
    assert [e.id for e in at_warn] == [f"{CID}:first_response:1:at_risk"]
    at_due = pending_emissions(CID, clocks, minutes(60), set())
    assert [e.id for e in at_due] == [
        f"{CID}:first_response:1:at_risk",
        f"{CID}:first_response:1:breached",
    ]
    assert pending_emissions(CID, clocks, minutes(60), {e.id for e in at_due}) == []
    # Answered in time: nothing. Answered late: the breach is still due, the warning not.
    in_time = list(clocks_of([*events, reply(CID, minutes(55))]).values())
    assert [e.kind for e in pending_emissions(CID, in_time, minutes(70), set())] == []
    late = list(clocks_of([*events, reply(CID, minutes(65))]).values())
    assert [e.kind for e in pending_emissions(CID, late, minutes(70), set())] == ["breached"]


# --------------------------------------------------------------------------- properties

SCENARIO: list[ContractModel] = [
    activity(CID, "m1", minutes(0), kind="opened", channel=Channel.WHATSAPP),
    assigned(CID, minutes(0.5), seq=1, channel=Channel.WHATSAPP, waiting_since=minutes(0)),
    activity(CID, "m2", minutes(3), channel=Channel.WHATSAPP),
    reply(CID, minutes(20)),
    activity(CID, "m3", minutes(30), channel=Channel.WHATSAPP),
    assigned(CID, minutes(31), seq=2, priority=Priority.URGENT, channel=Channel.WHATSAPP),
    reply(CID, minutes(50), awaiting=True),
    activity(CID, "m4", minutes(90), channel=Channel.WHATSAPP),
    reply(CID, minutes(95)),
    resolved(CID, minutes(120)),
    activity(CID, "m5", minutes(200), kind="reopened", channel=Channel.WHATSAPP),
]


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[ContractModel]]:
    """The scenario shuffled, with duplicates, cut into batches."""
    events = draw(st.permutations(SCENARIO))
    duplicates = draw(st.lists(st.sampled_from(SCENARIO), max_size=6))
    stream = events + duplicates
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    batches, start = [], 0
    for cut in [*cuts, len(stream)]:
        batches.append(stream[start:cut])
        start = cut
    return [b for b in batches if b]


async def ingest_batches(batches: list[list[ContractModel]]) -> InMemoryConversationStore:
    store = InMemoryConversationStore()
    ingest = ClockIngest(store, simple_policies(), PAUSE)
    for batch in batches:
        by_conversation: dict[str, dict[str, Fact]] = {}
        for fact in facts_of(batch):
            by_conversation.setdefault(CID, {})[fact.key] = fact
        await ingest.ingest(by_conversation)
    return store


async def test_processing_once_in_order_gives_the_expected_clocks() -> None:
    store = await ingest_batches([SCENARIO])
    record = store.records[CID]
    ids = [c.id for c in record.clocks]
    assert ids[0] == "first_response:1"
    assert ids.count("resolution:e0") == 1
    assert ids.count("resolution:e1") == 1
    open_clocks = [c for c in record.clocks if c.is_open]
    assert sorted((c.metric.value, c.started_at) for c in open_clocks) == [
        ("next_response", minutes(200)),
        ("resolution", minutes(200)),
    ]
    # The urgent decision (seq 2) applies from minute 31: the open clocks are urgent.
    assert {c.policy for c in open_clocks} == {"urgent"}


@settings(max_examples=60, deadline=None)
@given(deliveries())
async def test_any_order_duplicates_and_batch_split_give_the_same_clocks(
    batches: list[list[ContractModel]],
) -> None:
    reference = (await ingest_batches([SCENARIO])).records[CID]
    record = (await ingest_batches(batches)).records[CID]
    assert record.clocks == reference.clocks
    assert record.next_check == reference.next_check
    assert record.facts == reference.facts


async def test_open_clocks_are_recomputed_at_start_only_when_the_policies_changed() -> None:
    from switchboard_sla_monitor.app import recompute_if_changed

    store = InMemoryConversationStore()
    old = ClockIngest(store, simple_policies(first="1h"), PAUSE)
    by_conversation: dict[str, dict[str, Fact]] = {
        CID: {f.key: f for f in facts_of([activity(CID, "m1", minutes(0), kind="opened")])}
    }
    await old.ingest(by_conversation)
    # First start: the stored clocks already match; the fingerprint is recorded.
    assert await recompute_if_changed(store, old, "v1:old") == 0
    assert await store.marker("derivation") == "v1:old"
    new_policies = simple_policies(first="2h")
    new = ClockIngest(store, new_policies, PAUSE)
    assert await recompute_if_changed(store, new, "v1:old") == 0  # same fingerprint: skipped
    assert store.records[CID].clocks[0].due_at == minutes(60)
    assert await recompute_if_changed(store, new, "v1:new") == 1
    assert store.records[CID].clocks[0].due_at == minutes(120)
    assert store.records[CID].next_check == minutes(110)
    assert await recompute_if_changed(store, new, "v1:new") == 0
