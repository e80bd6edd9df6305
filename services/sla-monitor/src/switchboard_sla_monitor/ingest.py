"""From consumed events to stored clocks: the batch handler of the monitor's consumer.

``apply_facts`` is pure: a stored record plus new facts gives the update to store and
the clocks that stopped because of them (for the histograms and met counters). The
handler groups a batch by conversation, reads each record once by ``_id``, and writes
all updates in one unordered bulk write. Redelivery adds no fact twice (facts are keyed)
and observes no stop twice (a stop is observed only against the stored clocks).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from switchboard_common.agent_groups import AgentGroups
from switchboard_common.consumer import Delivery
from switchboard_common.logging import get_logger
from switchboard_sla_monitor.clocks import ClockState, derive, emitted, labels_at, next_check
from switchboard_sla_monitor.facts import (
    Fact,
    FeedbackFact,
    fact_from_event,
    follow_up_from_event,
)
from switchboard_sla_monitor.kpis import (
    DEFAULT_FCR_WINDOW,
    agent_at,
    fcr_decision_id,
    first_contact,
    time_span,
)
from switchboard_sla_monitor.metrics import SlaMetrics
from switchboard_sla_monitor.policy import PolicySet
from switchboard_sla_monitor.store import ConversationRecord, ConversationStore, ConversationUpdate

log = get_logger(__name__)


def apply_facts(
    record: ConversationRecord,
    new_facts: dict[str, Fact],
    policies: PolicySet,
    pause_statuses: Collection[str],
    fcr_window: timedelta = DEFAULT_FCR_WINDOW,
) -> tuple[ConversationUpdate, list[ClockState]]:
    """The update for ``record`` with ``new_facts`` merged, and the clocks they stopped.

    ``next_check`` is the earliest due emission or, until it is recorded, the moment the
    conversation's first-contact resolution becomes final (the evaluator decides it).
    A rating already stored under the same key is kept: the first one counts.
    """
    fresh = {
        k: f
        for k, f in new_facts.items()
        if record.facts.get(k) != f and not (isinstance(f, FeedbackFact) and k in record.facts)
    }
    facts = {**record.facts, **fresh}
    clocks = tuple(derive(facts.values(), policies, pause_statuses))
    done = emitted(facts.values())
    moments = [next_check(record.conversation_id, clocks, done)]
    fcr = first_contact(facts.values(), fcr_window)
    if fcr is not None and fcr_decision_id(record.conversation_id) not in done:
        moments.append(fcr.decided_at)
    first_at, last_at = time_span(facts.values())
    update = ConversationUpdate(
        conversation_id=record.conversation_id,
        new_facts=fresh,
        clocks=clocks,
        next_check=min((m for m in moments if m is not None), default=None),
        active=any(c.is_open for c in clocks),
        new=not record.facts and not record.clocks,
        first_at=first_at,
        last_at=last_at,
    )
    before = {c.id: c for c in record.clocks}
    stopped = [c for c in clocks if not c.is_open and (c.id not in before or before[c.id].is_open)]
    return update, stopped


def metric_labels(clock: ClockState) -> tuple[str, str, str, str, str]:
    """The bounded label values of a clock (``unknown``/``none`` for what is not known)."""
    return (
        clock.channel.value if clock.channel else "unknown",
        clock.priority.value if clock.priority else "unknown",
        clock.queue or "none",
        clock.policy,
        clock.metric.value,
    )


@dataclass
class ClockIngest:
    """The consumer's handler: facts from a batch of deliveries into the store."""

    store: ConversationStore
    policies: PolicySet
    pause_statuses: Collection[str]
    metrics: SlaMetrics | None = None
    fcr_window: timedelta = DEFAULT_FCR_WINDOW
    agent_groups: AgentGroups = field(default_factory=AgentGroups)

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        by_conversation: dict[str, dict[str, Fact]] = {}
        for delivery in deliveries:
            for found in (fact_from_event(delivery.event), follow_up_from_event(delivery.event)):
                if found is not None:
                    conversation_id, fact = found
                    facts = by_conversation.setdefault(conversation_id, {})
                    # Of two ratings with one key, the first counts (as across batches).
                    if not (isinstance(fact, FeedbackFact) and fact.key in facts):
                        facts[fact.key] = fact
        await self.ingest(by_conversation)
        return []

    async def ingest(self, by_conversation: dict[str, dict[str, Fact]]) -> None:
        """Merge facts into their conversations and store the recomputed clocks."""
        if not by_conversation:
            return
        records = await self.store.load(list(by_conversation))
        updates: list[ConversationUpdate] = []
        stopped: list[ClockState] = []
        ratings: list[tuple[FeedbackFact, tuple[str, str, str, str]]] = []
        for conversation_id, facts in by_conversation.items():
            record = records.get(conversation_id) or ConversationRecord(conversation_id)
            update, newly_stopped = apply_facts(
                record, facts, self.policies, self.pause_statuses, self.fcr_window
            )
            if update.new_facts or conversation_id not in records:
                updates.append(update)
                stopped.extend(newly_stopped)
                every = [*record.facts.values(), *update.new_facts.values()]
                ratings.extend(
                    (f, self.feedback_labels(every, f))
                    for f in update.new_facts.values()
                    if isinstance(f, FeedbackFact)
                )
        await self.store.save(updates)
        if self.metrics is not None:
            for clock in stopped:
                labels = metric_labels(clock)
                if clock.stop_reason == "reply" or clock.metric.value == "resolution":
                    self.metrics.achieved.labels(*labels).observe(clock.achieved_seconds or 0.0)
                    self.metrics.achieved_wall.labels(*labels).observe(clock.wall_seconds or 0.0)
                if clock.outcome == "met":
                    self.metrics.targets_met.labels(*labels).inc()
            for rating, rating_labels in ratings:
                self.metrics.feedback.labels(*rating_labels).observe(rating.score)
        log.debug("clocks updated", conversations=len(updates), stopped=len(stopped))

    def feedback_labels(
        self, facts: Sequence[Fact], rating: FeedbackFact
    ) -> tuple[str, str, str, str]:
        """kind, channel, queue and agent group of a rating, as known when it was given."""
        labels = labels_at(facts, rating.at)
        return (
            rating.feedback_kind.value,
            labels.channel.value if labels.channel else "unknown",
            labels.queue or "none",
            self.agent_groups.label(agent_at(facts, rating.at)),
        )
