"""First-contact resolution: its definition (replies, reopens inside and outside the
window, transfers, non-candidates), its independence from event order and repetition,
and its decision by the evaluator: once, durable in the store, counted by one replica."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from switchboard_common.contract import ContractModel
from switchboard_devtools.testing.sla_monitor import (
    activity,
    assigned,
    reopened,
    reply,
    resolved,
    simple_policies,
    transferred,
)
from switchboard_sla_monitor.clocks import emitted
from switchboard_sla_monitor.evaluator import Evaluator
from switchboard_sla_monitor.facts import (
    Fact,
    MessageFact,
    ReopenedFact,
    ReplyFact,
    ResolvedFact,
    fact_from_event,
    follow_up_from_event,
)
from switchboard_sla_monitor.ingest import ClockIngest
from switchboard_sla_monitor.kpis import fcr_decision_id, first_contact
from switchboard_sla_monitor.metrics import SlaMetrics
from switchboard_sla_monitor.store import (
    DoneUpdate,
    InMemoryConversationStore,
    InMemoryEmissionStore,
)
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
WINDOW = timedelta(days=7)
CID = "conv-1"


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def facts_of(events: Sequence[ContractModel], conversation_id: str = CID) -> list[Fact]:
    found = [f for e in events for f in (fact_from_event(e), follow_up_from_event(e))]
    return [f[1] for f in found if f is not None and f[0] == conversation_id]


def one_reply_resolved() -> list[ContractModel]:
    return [
        activity(CID, "m1", hours(0), kind="opened"),
        assigned(CID, hours(0.1)),
        reply(CID, hours(1)),
        resolved(CID, hours(2)),
    ]


def test_one_reply_and_no_reopen_is_fcr_once_the_window_has_passed() -> None:
    fcr = first_contact(facts_of(one_reply_resolved()), WINDOW)
    assert fcr is not None
    assert (fcr.outcome, fcr.replies, fcr.resolved_at) == ("fcr", 1, hours(2))
    assert fcr.decided_at == hours(2) + WINDOW
    assert not fcr.decided(hours(2) + WINDOW - timedelta(seconds=1))
    assert fcr.decided(hours(2) + WINDOW)


@pytest.mark.parametrize(
    ("reopen_after", "outcome"),
    [
        (timedelta(hours=1), "not_fcr"),
        (WINDOW - timedelta(seconds=1), "not_fcr"),
        (WINDOW, "fcr"),  # half-open: exactly at the window's end is outside
        (WINDOW + timedelta(days=1), "fcr"),
    ],
)
@pytest.mark.parametrize("how", ["agent_reopened", "customer_wrote", "new_conversation"])
def test_a_reopen_inside_the_window_breaks_fcr_and_one_outside_does_not(
    reopen_after: timedelta, outcome: str, how: str
) -> None:
    at = hours(2) + reopen_after
    later: ContractModel = {
        "agent_reopened": reopened(CID, at),
        "customer_wrote": activity(CID, "m2", at, kind="reopened"),
        "new_conversation": activity(
            "conv-2", "m2", at, kind="opened", previous_conversation_id=CID
        ),
    }[how]
    fcr = first_contact(facts_of([*one_reply_resolved(), later]), WINDOW)
    assert fcr is not None
    assert fcr.outcome == outcome
    assert fcr.decided_at == (at if outcome == "not_fcr" else hours(2) + WINDOW)


def test_an_auto_reply_after_the_resolution_reopens_nothing() -> None:
    bounce = activity(CID, "m2", hours(3), auto_submitted=True, expects_reply=False)
    fcr = first_contact(facts_of([*one_reply_resolved(), bounce]), WINDOW)
    assert fcr is not None
    assert fcr.outcome == "fcr"


def test_two_agent_replies_are_not_fcr_and_that_is_known_at_the_resolution() -> None:
    events = [*one_reply_resolved(), reply(CID, hours(1.5), agent_id="agent-1")]
    fcr = first_contact(facts_of(events), WINDOW)
    assert fcr is not None
    assert (fcr.outcome, fcr.replies, fcr.decided_at) == ("not_fcr", 2, hours(2))


def test_a_transfer_alone_does_not_break_fcr_but_a_reply_from_each_agent_does() -> None:
    base = [
        activity(CID, "m1", hours(0), kind="opened"),
        assigned(CID, hours(0.1), agent_id="agent-1"),
        transferred(CID, hours(0.5)),
        assigned(CID, hours(0.5), seq=2, agent_id="agent-2"),
        reply(CID, hours(1), agent_id="agent-2"),
        resolved(CID, hours(2)),
    ]
    fcr = first_contact(facts_of(base), WINDOW)
    assert fcr is not None
    assert fcr.outcome == "fcr"
    both = [*base, reply(CID, hours(0.4), agent_id="agent-1")]
    fcr = first_contact(facts_of(both), WINDOW)
    assert fcr is not None
    assert fcr.outcome == "not_fcr"


@pytest.mark.parametrize(
    "events",
    [
        # resolved without any reply
        [activity(CID, "m1", hours(0), kind="opened"), resolved(CID, hours(1))],
        # only auto-submitted messages: nothing opened
        [
            activity(CID, "m1", hours(0), kind="opened", auto_submitted=True),
            reply(CID, hours(0.5)),
            resolved(CID, hours(1)),
        ],
        # not resolved yet
        [activity(CID, "m1", hours(0), kind="opened"), reply(CID, hours(1))],
    ],
    ids=["no_reply", "auto_submitted_only", "unresolved"],
)
def test_conversations_that_are_not_candidates(events: list[ContractModel]) -> None:
    assert first_contact(facts_of(events), WINDOW) is None


def test_only_the_first_resolution_decides() -> None:
    events = [
        *one_reply_resolved(),
        activity(CID, "m2", hours(2) + WINDOW + timedelta(hours=1), kind="reopened"),
        reply(CID, hours(2) + WINDOW + timedelta(hours=2)),
        resolved(CID, hours(2) + WINDOW + timedelta(hours=3)),
    ]
    fcr = first_contact(facts_of(events), WINDOW)
    assert fcr is not None
    assert (fcr.outcome, fcr.resolved_at) == ("fcr", hours(2))


# ------------------------------------------------------------------ properties

offsets = st.integers(min_value=0, max_value=20 * 24 * 60)  # minutes after T0


@st.composite
def histories(draw: st.DrawFn) -> list[ContractModel]:
    """A conversation: an opening message, replies, resolutions, reopens, messages."""
    events: list[ContractModel] = [activity(CID, "m0", T0, kind="opened")]
    for i in range(draw(st.integers(0, 8))):
        at = T0 + timedelta(minutes=draw(offsets))
        kind = draw(st.sampled_from(["reply", "resolved", "reopened", "message", "auto"]))
        match kind:
            case "reply":
                events.append(reply(CID, at, agent_id=draw(st.sampled_from(["a1", "a2"]))))
            case "resolved":
                events.append(resolved(CID, at))
            case "reopened":
                events.append(reopened(CID, at))
            case "message":
                events.append(activity(CID, f"m{i + 1}", at))
            case _:
                events.append(activity(CID, f"m{i + 1}", at, auto_submitted=True))
    return events


@settings(max_examples=200, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_fcr_depends_on_the_set_of_facts_not_their_order_or_repetition(
    events: list[ContractModel], rnd: object
) -> None:
    facts = facts_of(events)
    shuffled = [*facts, *facts[: len(facts) // 2]]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert first_contact(facts, WINDOW) == first_contact(shuffled, WINDOW)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_fcr_means_one_reply_before_the_first_resolution_and_no_reopen_in_the_window(
    events: list[ContractModel],
) -> None:
    facts = list({f.key: f for f in facts_of(events)}.values())  # a set, as stored
    fcr = first_contact(facts, WINDOW)
    resolutions = sorted(f.at for f in facts if isinstance(f, ResolvedFact))
    replies = [f.sent_at for f in facts if isinstance(f, ReplyFact)]
    if fcr is None:
        # Not a candidate: never resolved, or resolved before any reply.
        assert not resolutions or not [t for t in replies if t <= resolutions[0]]
        return
    assert fcr.resolved_at == resolutions[0]
    assert fcr.replies == len([t for t in replies if t <= fcr.resolved_at]) >= 1
    reopens = [f.at for f in facts if isinstance(f, ReopenedFact)] + [
        f.received_at for f in facts if isinstance(f, MessageFact) and f.awaits_answer
    ]
    inside = [t for t in reopens if fcr.resolved_at < t < fcr.resolved_at + WINDOW]
    assert (fcr.outcome == "fcr") == (fcr.replies == 1 and not inside)
    assert fcr.resolved_at <= fcr.decided_at <= fcr.resolved_at + WINDOW


# ------------------------------------------------------------------ the decision


async def test_the_evaluator_decides_once_counts_once_and_moves_the_next_check_on() -> None:
    # Two replicas that both read the conversation before either recorded the decision
    # (two stores holding the same facts), sharing the claims.
    stores = [InMemoryConversationStore(), InMemoryConversationStore()]
    claims = InMemoryEmissionStore()
    policies, pause = simple_policies(), frozenset[str]()
    registries = [CollectorRegistry(), CollectorRegistry()]
    metrics = [SlaMetrics.create(r) for r in registries]
    for store, m in zip(stores, metrics, strict=True):
        ingest = ClockIngest(store, policies, pause, m, fcr_window=WINDOW)
        await ingest.ingest({CID: {f.key: f for f in facts_of(one_reply_resolved())}})
        assert (await store.load([CID]))[CID].next_check == hours(2) + WINDOW

    async def publish(_: object) -> None:
        return None

    clock = ManualClock(hours(2) + WINDOW - timedelta(seconds=1))
    replicas = [
        Evaluator(store, claims, publish, policies, pause, clock, f"r{i}", metrics=m)
        for i, (store, m) in enumerate(zip(stores, metrics, strict=True))
    ]
    assert (await replicas[0].evaluate()).fcr_decided == ()
    clock.set(hours(2) + WINDOW)
    reports = [await r.evaluate() for r in replicas]
    assert [r.fcr_decided for r in reports] == [(fcr_decision_id(CID),), ()]
    for store in stores:  # both recorded it: neither finds it due again
        assert (await store.load([CID]))[CID].next_check is None
    assert [(await r.evaluate()).due_conversations for r in replicas] == [0, 0]

    def count(registry: CollectorRegistry, outcome: str) -> float | None:
        return registry.get_sample_value(
            "switchboard_fcr_conversations_total",
            {"channel": "email", "queue": "general", "outcome": outcome},
        )

    assert [count(r, "fcr") for r in registries] == [1.0, None]
    assert count(registries[0], "not_fcr") == 0.0


async def test_a_reopen_inside_the_window_is_decided_at_the_reopen() -> None:
    store, claims = InMemoryConversationStore(), InMemoryEmissionStore()
    policies, pause = simple_policies(), frozenset[str]()
    registry = CollectorRegistry()
    metrics = SlaMetrics.create(registry)
    ingest = ClockIngest(store, policies, pause, metrics, fcr_window=WINDOW)
    events = [*one_reply_resolved(), activity(CID, "m2", hours(30), kind="reopened")]
    await ingest.ingest({CID: {f.key: f for f in facts_of(events)}})

    async def publish(_: object) -> None:
        return None

    clock = ManualClock(hours(30))
    evaluator = Evaluator(store, claims, publish, policies, pause, clock, "r", metrics=metrics)
    assert (await evaluator.evaluate()).fcr_decided == (fcr_decision_id(CID),)
    assert claims.claims[fcr_decision_id(CID)].payload["outcome"] == "not_fcr"
    labels = {"channel": "email", "queue": "general"}
    assert (
        registry.get_sample_value(
            "switchboard_fcr_conversations_total", {**labels, "outcome": "not_fcr"}
        )
        == 1.0
    )


class RacingStore(InMemoryConversationStore):
    """Lets a consumer write land between the evaluator's read and its record."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: ClockIngest | None = None
        self.meanwhile_facts: dict[str, dict[str, Fact]] = {}

    async def record_done(self, updates: Sequence[DoneUpdate]) -> None:
        if self.meanwhile is not None:
            ingest, self.meanwhile = self.meanwhile, None
            await ingest.ingest(self.meanwhile_facts)
        await super().record_done(updates)


async def test_a_consumer_write_during_the_decision_is_kept_and_counted_once() -> None:
    store, claims = RacingStore(), InMemoryEmissionStore()
    policies, pause = simple_policies(), frozenset[str]()
    registry = CollectorRegistry()
    metrics = SlaMetrics.create(registry)
    ingest = ClockIngest(store, policies, pause, metrics, fcr_window=WINDOW)
    await ingest.ingest({CID: {f.key: f for f in facts_of(one_reply_resolved())}})
    late = activity(CID, "m2", hours(2) + WINDOW + timedelta(hours=1), kind="reopened")
    store.meanwhile, store.meanwhile_facts = ingest, {CID: {f.key: f for f in facts_of([late])}}

    async def publish(_: object) -> None:
        return None

    clock = ManualClock(hours(2) + WINDOW + timedelta(hours=1))
    evaluator = Evaluator(store, claims, publish, policies, pause, clock, "r", metrics=metrics)
    assert (await evaluator.evaluate()).fcr_decided == (fcr_decision_id(CID),)
    record = (await store.load([CID]))[CID]
    # The consumer's clocks (the reopened episode) survived; the decision is not recorded.
    assert any(c.cycle == "e1" and c.is_open for c in record.clocks)
    assert fcr_decision_id(CID) not in emitted(record.facts.values())
    # Next evaluation: still due, the claim is taken, the decision is recorded, no recount.
    assert (await evaluator.evaluate()).fcr_decided == ()
    record = (await store.load([CID]))[CID]
    assert fcr_decision_id(CID) in emitted(record.facts.values())
    assert record.next_check is not None  # the reopened episode's own deadlines
    assert record.next_check > clock.now()
    labels = {"channel": "email", "queue": "general", "outcome": "fcr"}
    assert registry.get_sample_value("switchboard_fcr_conversations_total", labels) == 1.0
