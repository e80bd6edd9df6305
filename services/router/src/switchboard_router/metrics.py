"""Every metric the router exports, one dataclass per part (identity, timeline,
assignment, agents). Labels are bounded (channel, priority, queue, outcome, agent group):
never customer ids, and agent ids only where the operator opted in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard_common.metrics import LATENCY_BUCKETS, ConsumerMetrics


@dataclass(frozen=True)
class AssignmentMetrics:
    """Assignment. Gauges describe the whole deployment as this replica sees it
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


#: Handling times run from minutes (chat) to days (email).
HANDLING_BUCKETS = (60, 300, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400)


@dataclass(frozen=True)
class AgentMetrics:
    """Per-agent figures, labelled by the agent's group (``SWITCHBOARD_AGENT_GROUPS_FILE``;
    agent ids only where the operator opted in), never by customer. Counters count this
    replica's decisions (``sum`` them); the gauges describe every online agent as this
    replica sees them (``max``). Occupancy is load / capacity, offer accept rate
    accepted / all offers: both are left to recording rules and dashboards."""

    conversations_handled: Counter
    handling_seconds: Histogram
    load: Gauge
    capacity: Gauge
    offers: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AgentMetrics:
        return cls(
            # Conversations resolved while an agent of the group held them, by channel.
            conversations_handled=Counter(
                "switchboard_agent_conversations_handled",
                "Conversations resolved while an agent of the group held them.",
                ["agent_group", "channel"],
                registry=registry,
            ),
            # Seconds from assignment to resolution or transfer away, by group and channel.
            handling_seconds=Histogram(
                "switchboard_agent_handling_seconds",
                "Seconds an agent of the group held a conversation (assigned to resolved "
                "or transferred away).",
                ["agent_group", "channel"],
                buckets=HANDLING_BUCKETS,
                registry=registry,
            ),
            # Conversations held by the group's online agents.
            load=Gauge(
                "switchboard_agent_load",
                "Conversations held by the group's online agents.",
                ["agent_group"],
                registry=registry,
            ),
            # Capacity of the group's online agents (sum over their channels).
            capacity=Gauge(
                "switchboard_agent_capacity",
                "Capacity of the group's online agents, summed over their channels.",
                ["agent_group"],
                registry=registry,
            ),
            # Offers to the group's agents that ended, by outcome (accepted|rejected|expired).
            offers=Counter(
                "switchboard_agent_offers",
                "Offers to the group's agents that ended, by outcome.",
                ["agent_group", "outcome"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class TimelineMetrics:
    """Identity resolution, the timeline and the customer admin commands."""

    messages: Counter
    customers_created: Counter
    identities: Counter
    conversations: Counter
    threading: Counter
    status_changes: Counter
    merges: Counter
    erasures: Counter
    replays: Counter
    state_loads: Counter
    acknowledgements: Counter
    surveys: Counter
    activity: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TimelineMetrics:
        return cls(
            # Customer messages reaching the timeline, by channel and outcome
            # (stored|replayed|duplicate|re_resolved).
            messages=Counter(
                "switchboard_router_timeline_messages",
                "Customer messages applied to timelines, by channel and outcome.",
                ["channel", "outcome"],
                registry=registry,
            ),
            # Customers created for a new identity, by channel.
            customers_created=Counter(
                "switchboard_router_customers_created",
                "Customers created for a sender identity seen for the first time.",
                ["channel"],
                registry=registry,
            ),
            # Identity resolutions, by outcome (cached|stored|new|linked_email|
            # linked_phone).
            identities=Counter(
                "switchboard_router_identity_resolutions",
                "Sender identities resolved to customers, by outcome.",
                ["outcome"],
                registry=registry,
            ),
            # Conversations opened, reopened by a customer message, or closed as inactive.
            conversations=Counter(
                "switchboard_router_conversations",
                "Conversation openings, reopenings and inactivity closings, by channel.",
                ["channel", "kind"],
                registry=registry,
            ),
            # How new messages found their conversation, by channel and threading rule.
            threading=Counter(
                "switchboard_router_threading_decisions",
                "Threading decisions, by channel and the rule that decided.",
                ["channel", "rule"],
                registry=registry,
            ),
            # Frontend resolve/reopen events, by status and outcome (forwarded|applied|
            # unknown|ignored).
            status_changes=Counter(
                "switchboard_router_conversation_status_changes",
                "Conversation status events handled by the timeline, by outcome.",
                ["status", "outcome"],
                registry=registry,
            ),
            # Customer merges, by reason (external_id|verified_email|phone|manual) and
            # outcome (merged|refused|undone).
            merges=Counter(
                "switchboard_router_customer_merges",
                "Customer merges, refusals and unmerges, by reason.",
                ["reason", "outcome"],
                registry=registry,
            ),
            # GDPR erasures, by step (requested|applied).
            erasures=Counter(
                "switchboard_router_customer_erasures",
                "Customer erasures requested and applied to the timeline.",
                ["step"],
                registry=registry,
            ),
            # Re-planning after a lost thread claim or a message found already stored.
            replays=Counter(
                "switchboard_router_timeline_replans",
                "Batches re-planned for one customer, by cause (claim|stored).",
                ["cause"],
                registry=registry,
            ),
            # Where the timeline found a customer's threading state (cache|store|new).
            state_loads=Counter(
                "switchboard_router_timeline_state_loads",
                "Customer threading states loaded, by source.",
                ["source"],
                registry=registry,
            ),
            # Automatic acknowledgements handed to the channel's sender (replays included).
            acknowledgements=Counter(
                "switchboard_router_acknowledgements",
                "Automatic acknowledgements of new conversations handed to the sender.",
                registry=registry,
            ),
            # Surveys after a resolution, by channel and outcome (sent|answered, or why
            # one was not sent: reopened|erased|auto_submitted|outside_reply_window|...).
            surveys=Counter(
                "switchboard_router_surveys",
                "Surveys handed to the sender, answered, or not sent (and why).",
                ["channel", "outcome"],
                registry=registry,
            ),
            # Agent-side timeline items (group router-timeline-activity), by item type
            # and outcome (stored|duplicate|unknown_conversation|redacted_late).
            activity=Counter(
                "switchboard_router_timeline_activity",
                "Agent-side activity items of the timeline, by type and outcome.",
                ["type", "outcome"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class LiveMetrics:
    """The workspace's live streams on this replica (sum them across replicas). Writes
    are counted by the HTTP metrics (route and status)."""

    streams: Gauge
    updates: Counter
    ended: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> LiveMetrics:
        return cls(
            streams=Gauge(
                "switchboard_router_live_streams",
                "Agents' live streams open on this replica.",
                registry=registry,
            ),
            # By event name (offer, message, ...): a bounded set.
            updates=Counter(
                "switchboard_router_live_updates",
                "Updates queued for agents' live streams, by event.",
                ["event"],
                registry=registry,
            ),
            # Streams the router ended: too_slow (fell behind) or shutdown.
            ended=Counter(
                "switchboard_router_live_streams_ended",
                "Live streams ended by the router, by reason.",
                ["reason"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class RouterMetrics:
    """All of the router's metrics, registered on one registry."""

    consumer: ConsumerMetrics
    assignment: AssignmentMetrics
    timeline: TimelineMetrics
    agents: AgentMetrics
    live: LiveMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RouterMetrics:
        return cls(
            consumer=ConsumerMetrics.create(registry),
            assignment=AssignmentMetrics.create(registry),
            timeline=TimelineMetrics.create(registry),
            agents=AgentMetrics.create(registry),
            live=LiveMetrics.create(registry),
        )
