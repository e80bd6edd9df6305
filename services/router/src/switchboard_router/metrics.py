"""Every metric the router exports, one dataclass per stage. Labels are bounded
(channel, priority, queue, outcome): never ids."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard_common.metrics import LATENCY_BUCKETS, ConsumerMetrics


@dataclass(frozen=True)
class AssignmentMetrics:
    """Stage 3 (assignment). Gauges describe the whole deployment as this replica sees it
    (every replica holds the same views): aggregate them with ``max``, not ``sum``."""

    queue_depth: Gauge
    queue_oldest_age: Gauge
    assignments: Counter
    offers: Counter
    agent_load: Gauge
    agent_capacity: Gauge
    agents_online: Gauge
    decision_seconds: Histogram
    conflicts: Counter
    activities: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AssignmentMetrics:
        return cls(
            # Conversations waiting for an agent, by queue and priority.
            queue_depth=Gauge(
                "switchboard_router_queue_depth",
                "Conversations waiting for an agent.",
                ["queue", "priority"],
                registry=registry,
            ),
            # Seconds the longest-waiting conversation has waited, by queue and priority.
            queue_oldest_age=Gauge(
                "switchboard_router_queue_oldest_age_seconds",
                "Waiting time of the oldest waiting conversation.",
                ["queue", "priority"],
                registry=registry,
            ),
            # Routing decisions published, by outcome (assigned|queued|requeued|escalated).
            assignments=Counter(
                "switchboard_router_assignments",
                "Routing decisions published on support.assignments.v1.",
                ["outcome", "channel", "priority"],
                registry=registry,
            ),
            # Offers answered or expired, by outcome (accepted|rejected|timed_out).
            offers=Counter(
                "switchboard_router_offers",
                "Offers that ended, by outcome.",
                ["outcome"],
                registry=registry,
            ),
            # Conversations held by online agents, summed per channel.
            agent_load=Gauge(
                "switchboard_router_agent_load",
                "Conversations held by online agents, summed per channel.",
                ["channel"],
                registry=registry,
            ),
            # Capacity of online agents, summed per channel.
            agent_capacity=Gauge(
                "switchboard_router_agent_capacity",
                "Capacity of online agents, summed per channel.",
                ["channel"],
                registry=registry,
            ),
            # Online agents with capacity on the channel.
            agents_online=Gauge(
                "switchboard_router_agents_online",
                "Online agents with capacity on the channel.",
                ["channel"],
                registry=registry,
            ),
            # Seconds for one routing decision: matching, reservation, claim, publish.
            decision_seconds=Histogram(
                "switchboard_router_decision_seconds",
                "Seconds for one routing decision including its database claims.",
                ["outcome"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            # Lost races on an exclusive claim (kind: slot|decision), retried elsewhere.
            conflicts=Counter(
                "switchboard_router_claim_conflicts",
                "Exclusive claims lost to another decision (then retried).",
                ["kind"],
                registry=registry,
            ),
            # Conversation activity consumed, by outcome (routed|not_routed|unchanged).
            activities=Counter(
                "switchboard_router_activities",
                "Conversation activity consumed by the assignment stage.",
                ["outcome"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class RouterMetrics:
    """All of the router's metrics, registered on one registry."""

    consumer: ConsumerMetrics
    assignment: AssignmentMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        return cls(
            consumer=ConsumerMetrics.create(registry),
            assignment=AssignmentMetrics.create(registry),
        )
