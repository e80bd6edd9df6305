"""The evaluation loop with an injected clock: once per emission, across replicas and crashes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from switchboard_common.contract import ContractModel, SlaAtRisk, SlaBreached
from switchboard_common.kafka import Outgoing
from switchboard_devtools.testing.sla_monitor import activity, reply, simple_policies
from switchboard_sla_monitor.evaluator import Evaluator, OpenClockGauges
from switchboard_sla_monitor.facts import Fact, fact_from_event
from switchboard_sla_monitor.ingest import ClockIngest
from switchboard_sla_monitor.metrics import SlaMetrics
from switchboard_sla_monitor.store import (
    ClaimRecord,
    InMemoryConversationStore,
    InMemoryEmissionStore,
)
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
PAUSE = frozenset({"awaiting_customer"})


class Kafka:
    """Records what was published; can be told to fail (a crash before the ack)."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.fail = False

    async def __call__(self, items: Sequence[Outgoing]) -> None:
        if self.fail and items:
            raise ConnectionError("broker gone")
        self.sent.extend(items)


class World:
    """One database, one Kafka, any number of replicas."""

    def __init__(self) -> None:
        self.clock = ManualClock(T0)
        self.conversations = InMemoryConversationStore()
        self.emissions = InMemoryEmissionStore()
        self.kafka = Kafka()
        self.policies = simple_policies(first="1h", warn="10m")
        self.registry = CollectorRegistry()
        self.metrics = SlaMetrics.create(self.registry)
        self.ingest = ClockIngest(self.conversations, self.policies, PAUSE, self.metrics)

    def replica(self, name: str, kafka: Kafka | None = None) -> Evaluator:
        return Evaluator(
            conversations=self.conversations,
            emissions=self.emissions,
            publish=kafka or self.kafka,
            policies=self.policies,
            pause_statuses=PAUSE,
            clock=self.clock,
            replica=name,
            republish_after=timedelta(seconds=30),
            metrics=self.metrics,
        )

    async def receive(self, *events: ContractModel) -> None:
        by_conversation: dict[str, dict[str, Fact]] = {}
        for event in events:
            found = fact_from_event(event)
            assert found is not None
            by_conversation.setdefault(found[0], {})[found[1].key] = found[1]
        await self.ingest.ingest(by_conversation)

    async def echo(self) -> None:
        """The monitor's consumer reading its own SLA events back."""
        await self.receive(*(o.event for o in self.kafka.sent))

    def sent(self) -> list[tuple[str, str | None]]:
        return [(type(o.event).__name__, o.event_id) for o in self.kafka.sent]

    def counter(self, name: str) -> float:
        value = self.registry.get_sample_value(
            name,
            {
                "channel": "email",
                "priority": "unknown",
                "queue": "none",
                "policy": "standard",
                "metric": "first_response",
            },
        )
        return value or 0.0


async def test_at_risk_at_warn_time_and_breach_at_due_each_once() -> None:
    world = World()
    a, b = world.replica("a"), world.replica("b")
    await world.receive(activity("c1", "m1", T0, kind="opened"))

    world.clock.set(T0 + timedelta(minutes=49))
    assert (await a.evaluate()).published == ()
    world.clock.set(T0 + timedelta(minutes=50))
    assert (await a.evaluate()).published == ("c1:first_response:1:at_risk",)
    for replica in (a, b, a, b):
        await replica.evaluate()
    world.clock.set(T0 + timedelta(minutes=60))
    await b.evaluate()
    await a.evaluate()
    await world.echo()
    world.clock.set(T0 + timedelta(hours=5))
    await a.evaluate()
    await b.evaluate()

    assert world.sent() == [
        ("SlaAtRisk", "c1:first_response:1:at_risk"),
        ("SlaBreached", "c1:first_response:1:breached"),
    ]
    at_risk, breached = (o.event for o in world.kafka.sent)
    assert isinstance(at_risk, SlaAtRisk)
    assert isinstance(breached, SlaBreached)
    assert (at_risk.at, at_risk.due_at) == (T0 + timedelta(minutes=50), T0 + timedelta(hours=1))
    assert (breached.at, breached.policy, breached.cycle) == (
        T0 + timedelta(hours=1),
        "standard",
        "1",
    )
    assert world.counter("switchboard_sla_breaches_total") == 1
    assert world.counter("switchboard_sla_at_risk_events_total") == 1


async def test_the_echo_moves_next_check_to_the_next_deadline() -> None:
    world = World()
    await world.receive(activity("c1", "m1", T0, kind="opened"))
    assert world.conversations.records["c1"].next_check == T0 + timedelta(minutes=50)
    world.clock.set(T0 + timedelta(minutes=50))
    await world.replica("a").evaluate()
    await world.echo()
    assert world.conversations.records["c1"].next_check == T0 + timedelta(minutes=60)


async def test_a_reply_in_time_means_no_breach_and_a_met_target() -> None:
    world = World()
    await world.receive(activity("c1", "m1", T0, kind="opened"))
    await world.receive(reply("c1", T0 + timedelta(minutes=30)))
    world.clock.set(T0 + timedelta(hours=3))
    await world.replica("a").evaluate()
    assert world.sent() == []
    assert world.counter("switchboard_sla_targets_met_total") == 1
    assert world.counter("switchboard_sla_achieved_business_seconds_count") == 1
    assert world.counter("switchboard_sla_achieved_business_seconds_sum") == 30 * 60


async def test_a_replica_that_dies_between_claim_and_publish_is_covered_by_another() -> None:
    world = World()
    await world.receive(activity("c1", "m1", T0, kind="opened"))
    world.clock.set(T0 + timedelta(minutes=61))
    dead_kafka = Kafka()
    dead_kafka.fail = True
    with pytest.raises(ConnectionError):
        await world.replica("doomed", dead_kafka).evaluate()
    assert set(world.emissions.claims) == {
        "c1:first_response:1:at_risk",
        "c1:first_response:1:breached",
    }

    survivor = world.replica("survivor")
    report = await survivor.evaluate()  # within the lease: the claim may still complete
    assert report.republished == ()
    assert world.sent() == []

    world.clock.advance(timedelta(seconds=30))
    report = await survivor.evaluate()
    assert sorted(report.republished) == [
        "c1:first_response:1:at_risk",
        "c1:first_response:1:breached",
    ]
    assert sorted(world.sent()) == [
        ("SlaAtRisk", "c1:first_response:1:at_risk"),
        ("SlaBreached", "c1:first_response:1:breached"),
    ]
    # Payloads are those the dead replica claimed (at = the deadline, not the re-publish time).
    breached = next(o.event for o in world.kafka.sent if isinstance(o.event, SlaBreached))
    assert breached.at == T0 + timedelta(hours=1)
    await survivor.evaluate()
    assert len(world.sent()) == 2
    # Counted once, by the replica whose publish completed.
    assert world.counter("switchboard_sla_breaches_total") == 1
    assert (
        world.registry.get_sample_value(
            "switchboard_sla_events_republished_total", {"kind": "breached"}
        )
        == 1
    )
    assert world.emissions.claims["c1:first_response:1:breached"].published_at is not None


async def test_a_failed_publish_is_retried_by_the_same_replica_after_the_lease() -> None:
    world = World()
    kafka = Kafka()
    replica = world.replica("a", kafka)
    await world.receive(activity("c1", "m1", T0, kind="opened"))
    world.clock.set(T0 + timedelta(minutes=61))
    kafka.fail = True
    with pytest.raises(ConnectionError):
        await replica.evaluate()
    kafka.fail = False
    world.clock.advance(timedelta(minutes=1))
    await replica.evaluate()
    assert sorted(o.event_id or "" for o in kafka.sent) == [
        "c1:first_response:1:at_risk",
        "c1:first_response:1:breached",
    ]


async def test_gauges_count_open_at_risk_and_breached_clocks() -> None:
    world = World()
    gauges = OpenClockGauges(world.conversations, world.clock, world.metrics)
    await world.receive(activity("c1", "m1", T0, kind="opened"))
    await world.receive(activity("c2", "m2", T0 + timedelta(minutes=10), kind="opened"))
    await world.receive(activity("c3", "m3", T0, kind="opened"), reply("c3", T0))
    world.clock.set(T0 + timedelta(minutes=62))
    assert await gauges.refresh() == 5  # two first responses, three resolutions

    def gauge(name: str, metric: str = "first_response") -> float | None:
        return world.registry.get_sample_value(
            name,
            {
                "channel": "email",
                "priority": "unknown",
                "queue": "none",
                "policy": "standard",
                "metric": metric,
            },
        )

    assert gauge("switchboard_sla_open_clocks") == 2
    assert gauge("switchboard_sla_breached_clocks") == 1
    assert gauge("switchboard_sla_at_risk_clocks") == 1
    assert gauge("switchboard_sla_open_clocks", "resolution") == 3
    assert gauge("switchboard_sla_breached_clocks", "resolution") == 0
    oldest = world.registry.get_sample_value(
        "switchboard_sla_oldest_waiting_seconds",
        {"channel": "email", "priority": "unknown", "queue": "none"},
    )
    assert oldest == 62 * 60
    # The breach counter exists (at zero) before the first breach, so rate() sees it.
    assert gauge("switchboard_sla_breaches_total") == 0


class RetriedInsertStore(InMemoryEmissionStore):
    """An insert retried after a transient error: the first attempt had landed, so the
    retry reports every claim as taken."""

    async def claim(self, claims: Sequence[ClaimRecord]) -> set[str]:
        await super().claim(claims)
        return set()


async def test_a_claim_found_taken_by_its_own_retried_insert_is_still_published() -> None:
    world = World()
    world.emissions = RetriedInsertStore()
    await world.receive(activity("c1", "m1", T0, kind="opened"))
    world.clock.set(T0 + timedelta(minutes=61))
    report = await world.replica("a").evaluate()
    assert sorted(report.published) == [
        "c1:first_response:1:at_risk",
        "c1:first_response:1:breached",
    ]
    assert len(world.sent()) == 2
    # Another replica's claims are not mistaken for its own.
    other = World()
    other.emissions = world.emissions
    other.conversations = world.conversations
    other.clock = world.clock
    assert (await other.replica("b").evaluate()).published == ()
