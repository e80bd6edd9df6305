"""Every metric the SLA monitor exports. Labels are bounded: channel, priority, queue,
policy, metric (and kind/outcome categories) — never conversation or message ids.

Counters and histograms count what this replica did (sum them across replicas); the
clock gauges are recomputed from the database by every replica, so each replica exports
the same global values (aggregate them with ``max``, never ``sum``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard_common.metrics import ConsumerMetrics

#: Label names of everything measured per clock.
CLOCK_LABELS = ("channel", "priority", "queue", "policy", "metric")
#: Label names of waiting-time gauges (per conversation, not per clock).
WAITING_LABELS = ("channel", "priority", "queue")
#: Business seconds: 30 s up to a week, covering chat minutes to email days.
BUSINESS_SECONDS_BUCKETS = (
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    14400,
    28800,
    86400,
    172800,
    432000,
    604800,
)
#: Wall-clock seconds: the business buckets (86400 answers "within 24 h") plus two weeks
#: and a month, because wall time keeps running over nights, weekends and pauses.
WALL_SECONDS_BUCKETS = (*BUSINESS_SECONDS_BUCKETS, 1209600, 2592000)
#: Label names of first-contact resolution decisions.
FCR_LABELS = ("channel", "queue", "outcome")
#: Label names of ratings: never the customer, the agent only as their group.
FEEDBACK_LABELS = ("kind", "channel", "queue", "agent_group")
#: One bucket per score (CSAT 1-5, NPS 0-10): counts of each score are bucket differences.
FEEDBACK_BUCKETS = tuple(float(score) for score in range(11))
EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class SlaMetrics:
    """All of the SLA monitor's metrics, registered on one registry."""

    consumer: ConsumerMetrics
    achieved: Histogram
    achieved_wall: Histogram
    fcr: Counter
    feedback: Histogram
    targets_met: Counter
    breaches: Counter
    at_risk_events: Counter
    republished: Counter
    open_clocks: Gauge
    at_risk_clocks: Gauge
    breached_clocks: Gauge
    paused_clocks: Gauge
    oldest_waiting: Gauge
    evaluation_seconds: Histogram
    evaluation_failures: Counter
    due_conversations: Gauge
    last_evaluation: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SlaMetrics:
        return cls(
            consumer=ConsumerMetrics.create(registry),
            # Achieved response/resolution time of each stopped clock, in business seconds.
            achieved=Histogram(
                "switchboard_sla_achieved_business_seconds",
                "Business seconds from clock start to the reply or resolution that stopped it.",
                CLOCK_LABELS,
                buckets=BUSINESS_SECONDS_BUCKETS,
                registry=registry,
            ),
            # The same stopped clocks in wall-clock seconds (what customers experience).
            achieved_wall=Histogram(
                "switchboard_sla_achieved_wall_seconds",
                "Wall-clock seconds from clock start to the reply or resolution that stopped it.",
                CLOCK_LABELS,
                buckets=WALL_SECONDS_BUCKETS,
                registry=registry,
            ),
            # First-contact resolution decisions (rate = fcr / all), once per conversation.
            fcr=Counter(
                "switchboard_fcr_conversations",
                "Resolved conversations decided as first-contact resolved (fcr) or not.",
                FCR_LABELS,
                registry=registry,
            ),
            # Customer ratings by score (kind csat 1-5, nps 0-10), once per rating.
            feedback=Histogram(
                "switchboard_feedback_score",
                "Customer ratings of conversations (CSAT 1-5, NPS 0-10).",
                FEEDBACK_LABELS,
                buckets=FEEDBACK_BUCKETS,
                registry=registry,
            ),
            # Clocks stopped within their target (attainment = met / (met + breaches)).
            targets_met=Counter(
                "switchboard_sla_targets_met",
                "SLA clocks stopped within their target.",
                CLOCK_LABELS,
                registry=registry,
            ),
            # Breaches published on support.sla-events.v1 (counted once, by the claimer).
            breaches=Counter(
                "switchboard_sla_breaches",
                "SLA breaches (support.sla.breached events published).",
                CLOCK_LABELS,
                registry=registry,
            ),
            # At-risk warnings published on support.sla-events.v1.
            at_risk_events=Counter(
                "switchboard_sla_at_risk_events",
                "SLA at-risk warnings (support.sla.at_risk events published).",
                CLOCK_LABELS,
                registry=registry,
            ),
            # Claimed emissions published again because their first publish never completed.
            republished=Counter(
                "switchboard_sla_events_republished",
                "SLA events re-published after a replica died between claim and publish.",
                ["kind"],
                registry=registry,
            ),
            # Running clocks (global, from the database).
            open_clocks=Gauge(
                "switchboard_sla_open_clocks",
                "Running SLA clocks.",
                CLOCK_LABELS,
                registry=registry,
            ),
            # Running clocks past their warning point but not their deadline.
            at_risk_clocks=Gauge(
                "switchboard_sla_at_risk_clocks",
                "Running SLA clocks past due minus warn_before, not yet due.",
                CLOCK_LABELS,
                registry=registry,
            ),
            # Running clocks past their deadline (breached and still unanswered/unresolved).
            breached_clocks=Gauge(
                "switchboard_sla_breached_clocks",
                "Running SLA clocks past their deadline.",
                CLOCK_LABELS,
                registry=registry,
            ),
            # Running clocks paused while the conversation waits on the customer.
            paused_clocks=Gauge(
                "switchboard_sla_paused_clocks",
                "SLA clocks paused by a pause status (waiting on the customer).",
                CLOCK_LABELS,
                registry=registry,
            ),
            # Wall-clock age of the oldest customer message still waiting for a reply.
            oldest_waiting=Gauge(
                "switchboard_sla_oldest_waiting_seconds",
                "Seconds the longest-waiting unanswered customer has waited.",
                WAITING_LABELS,
                registry=registry,
            ),
            # Duration of one evaluation of the due clocks (claims and publishes included).
            evaluation_seconds=Histogram(
                "switchboard_sla_evaluation_seconds",
                "Seconds per evaluation of due SLA clocks.",
                buckets=EVALUATION_BUCKETS,
                registry=registry,
            ),
            # Evaluations that failed (database or Kafka unreachable); the loop carries on.
            evaluation_failures=Counter(
                "switchboard_sla_evaluation_failures",
                "Evaluations of due SLA clocks that failed.",
                registry=registry,
            ),
            # Conversations found due by the last evaluation (at the limit: falling behind).
            due_conversations=Gauge(
                "switchboard_sla_due_conversations",
                "Conversations with an emission due at the last evaluation.",
                registry=registry,
            ),
            # When the last evaluation completed (Unix time), to alert on a stuck loop.
            last_evaluation=Gauge(
                "switchboard_sla_last_evaluation_timestamp_seconds",
                "Unix time of the last completed evaluation.",
                registry=registry,
            ),
        )
