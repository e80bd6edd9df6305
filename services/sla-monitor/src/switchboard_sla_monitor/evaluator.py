"""The evaluation loop: at-risk and breach events, once, however many replicas run.

Every replica runs ``Evaluator.run``. One evaluation:

1. reads up to ``limit`` conversations whose ``next_check`` has passed (earliest first);
2. re-derives their clocks from their facts with the current policies (so a policy,
   priority or calendar change is honoured even before the record is rewritten) and
   lists the emissions due and not yet seen back on ``support.sla-events.v1``;
3. claims each by inserting ``sla_emissions/{_id: emission id}``: exactly one replica
   wins each claim;
4. publishes the won emissions, with the emission id as CloudEvents id, waits for Kafka's
   acknowledgement, and marks the claims published;
5. re-publishes (same id, same payload) claims whose publish never completed within
   ``republish_after`` (the claimer died): such a duplicate is recognisably the same event.

The monitor consumes its own SLA events: an emission seen there becomes a fact of the
conversation, so its ``next_check`` moves on to the next deadline. Until then a
replica remembers the emissions it knows are published and skips them.

First-contact resolution is decided here too, when it becomes final (``kpis``): the
decision is claimed like an emission (``<conversation>:fcr:1:decided``), only the winner
counts it, and the claim is recorded on the conversation as an emitted fact so that its
``next_check`` moves on — only if the record's ``revision`` is still the one read, so a
consumer's newer clocks are never overwritten; then the conversation comes due again, the claim is
found taken, and the fact is recorded next time.

``OpenClockGauges`` recomputes the clock gauges from the stored clocks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from switchboard_common.contract import SLA_EVENTS, SlaAtRisk, SlaBreached
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_sla_monitor.clocks import (
    Emission,
    derive,
    emitted,
    labels_at,
    pending_emissions,
)
from switchboard_sla_monitor.facts import EmittedFact
from switchboard_sla_monitor.ingest import apply_facts, metric_labels
from switchboard_sla_monitor.kpis import DEFAULT_FCR_WINDOW, fcr_decision_id, first_contact
from switchboard_sla_monitor.metrics import SlaMetrics
from switchboard_sla_monitor.policy import PolicySet
from switchboard_sla_monitor.store import (
    ClaimRecord,
    ConversationRecord,
    ConversationStore,
    DoneUpdate,
    EmissionStore,
)
from switchboard_sla_monitor.timesource import Clock

log = get_logger(__name__)

#: Publishes events and returns once Kafka acknowledged all of them (raises otherwise).
Publish = Callable[[Sequence[Outgoing]], Awaitable[object]]
_MODELS = {"at_risk": SlaAtRisk, "breached": SlaBreached}


@dataclass(frozen=True)
class EvaluationReport:
    """What one evaluation did (for tests and logs)."""

    due_conversations: int = 0
    published: tuple[str, ...] = ()
    republished: tuple[str, ...] = ()
    already_claimed: tuple[str, ...] = ()
    #: First-contact resolution decisions this evaluation won (and counted).
    fcr_decided: tuple[str, ...] = ()


@dataclass
class Evaluator:
    """One replica's evaluation loop (see module docs)."""

    conversations: ConversationStore
    emissions: EmissionStore
    publish: Publish
    policies: PolicySet
    pause_statuses: Collection[str]
    clock: Clock
    replica: str
    limit: int = 1000
    republish_after: timedelta = timedelta(seconds=30)
    metrics: SlaMetrics | None = None
    fcr_window: timedelta = DEFAULT_FCR_WINDOW
    known_published_limit: int = 100_000
    _known_published: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _evaluations: int = 0

    async def evaluate(self) -> EvaluationReport:
        """Evaluate once at ``clock.now()``. Raises if the database or Kafka fails (the
        claims made stay unpublished and are re-published by a later evaluation)."""
        now = self.clock.now()
        records = await self.conversations.due(now, self.limit)
        wanted: list[Emission] = []
        for record in records:
            facts = list(record.facts.values())
            clocks = derive(facts, self.policies, self.pause_statuses)
            done = emitted(facts)
            wanted.extend(
                e
                for e in pending_emissions(record.conversation_id, clocks, now, done)
                if e.id not in self._known_published
            )
        if self.metrics is not None:
            self.metrics.due_conversations.set(len(records))
        fcr_decided = await self._decide_first_contact(records, now)
        if not wanted:
            return EvaluationReport(due_conversations=len(records), fcr_decided=fcr_decided)

        self._evaluations += 1
        token = f"{self.replica}#{self._evaluations}"
        claims = [
            ClaimRecord(
                id=e.id,
                conversation_id=e.conversation_id,
                kind=e.kind,
                payload=e.event().model_dump(mode="json"),
                claimed_at=now,
                claimed_by=token,
            )
            for e in wanted
        ]
        won = await self.emissions.claim(claims)
        lost_ids = [c.id for c in claims if c.id not in won]
        existing = await self.emissions.get(lost_ids) if lost_ids else {}
        # A claim insert retried after a transient error may find its own first attempt.
        won |= {c.id for c in existing.values() if c.claimed_by == token}
        lost_ids = [i for i in lost_ids if i not in won]
        stale = [
            c
            for c in existing.values()
            if c.id not in won
            and c.published_at is None
            and now - c.claimed_at >= self.republish_after
        ]
        for c in existing.values():
            if c.published_at is not None and c.id not in won:
                self._remember(c.id)
        to_publish = [c for c in claims if c.id in won] + stale
        await self.publish([_outgoing(c) for c in to_publish])
        await self.emissions.mark_published([c.id for c in to_publish], now)
        for c in to_publish:
            self._remember(c.id)
        self._count(to_publish, republished=len(stale))
        report = EvaluationReport(
            due_conversations=len(records),
            published=tuple(c.id for c in claims if c.id in won),
            republished=tuple(c.id for c in stale),
            already_claimed=tuple(i for i in lost_ids if i not in {c.id for c in stale}),
            fcr_decided=fcr_decided,
        )
        if report.published or report.republished:
            log.info(
                "sla events published",
                published=len(report.published),
                republished=len(report.republished),
            )
        return report

    async def _decide_first_contact(
        self, records: Sequence[ConversationRecord], now: datetime
    ) -> tuple[str, ...]:
        """Claim and count the first-contact decisions that became final; record each
        decided one on its conversation. Two round trips (three if a claim was taken)."""
        claims: list[ClaimRecord] = []
        decided: list[ConversationRecord] = []
        token = f"{self.replica}#fcr{self._evaluations}"
        for record in records:
            facts = list(record.facts.values())
            decision_id = fcr_decision_id(record.conversation_id)
            fcr = first_contact(facts, self.fcr_window)
            if fcr is None or not fcr.decided(now) or decision_id in emitted(facts):
                continue
            labels = labels_at(facts, fcr.resolved_at)
            payload = {
                "outcome": fcr.outcome,
                "channel": labels.channel.value if labels.channel else "unknown",
                "queue": labels.queue or "none",
            }
            claims.append(
                ClaimRecord(decision_id, record.conversation_id, "fcr", payload, now, token, now)
            )
            decided.append(record)
        if not claims:
            return ()
        self._evaluations += 1
        won = await self.emissions.claim(claims)
        lost = [c.id for c in claims if c.id not in won]
        if lost:  # a retried insert may have found its own first attempt
            won |= {i for i, c in (await self.emissions.get(lost)).items() if c.claimed_by == token}
        done_updates: list[DoneUpdate] = []
        for record, claim in zip(decided, claims, strict=True):
            done = EmittedFact(emission_id=claim.id)
            update, _ = apply_facts(
                record, {done.key: done}, self.policies, self.pause_statuses, self.fcr_window
            )
            done_updates.append(
                DoneUpdate(
                    record.conversation_id, update.new_facts, update.next_check, record.revision
                )
            )
        await self.conversations.record_done(done_updates)
        if self.metrics is not None:
            for claim in claims:
                if claim.id in won:
                    channel, queue = claim.payload["channel"], claim.payload["queue"]
                    self.metrics.fcr.labels(channel, queue, claim.payload["outcome"]).inc()
                    # Both outcomes exist once either does, so a ratio never lacks its term.
                    for outcome in ("fcr", "not_fcr"):
                        self.metrics.fcr.labels(channel, queue, outcome)
        return tuple(c.id for c in claims if c.id in won)

    def _remember(self, emission_id: str) -> None:
        self._known_published[emission_id] = None
        self._known_published.move_to_end(emission_id)
        while len(self._known_published) > self.known_published_limit:
            self._known_published.popitem(last=False)

    def _count(self, published: Sequence[ClaimRecord], *, republished: int) -> None:
        """Count each emission when its publish completed and was recorded: a claimer that
        died before that never counted it, so the replica that re-publishes it does."""
        if self.metrics is None:
            return
        for claim in published:
            event = claim.payload
            labels = (
                event.get("channel") or "unknown",
                event.get("priority") or "unknown",
                event.get("queue") or "none",
                event["policy"],
                event["metric"],
            )
            if claim.kind == "breached":
                self.metrics.breaches.labels(*labels).inc()
            else:
                self.metrics.at_risk_events.labels(*labels).inc()
        for claim in published[len(published) - republished :] if republished else ():
            self.metrics.republished.labels(claim.kind).inc()

    async def run(self, interval: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Evaluate every ``interval`` seconds until cancelled; a failed evaluation is
        logged and counted, and the next one retries (claims make that safe)."""
        while True:
            started = time.perf_counter()
            try:
                await self.evaluate()
            except Exception as error:  # noqa: BLE001 - the loop must outlive a failed evaluation
                log.warning("evaluation failed", error_type=type(error).__name__, error=str(error))
                if self.metrics is not None:
                    self.metrics.evaluation_failures.inc()
            else:
                if self.metrics is not None:
                    self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
                    self.metrics.last_evaluation.set(time.time())
            await sleep(interval)


def _outgoing(claim: ClaimRecord) -> Outgoing:
    event = _MODELS[claim.kind].model_validate(claim.payload, strict=False)
    return Outgoing(
        topic=SLA_EVENTS,
        key=claim.conversation_id,
        event=event,
        event_id=claim.id,
        time=event.at,
    )


@dataclass
class OpenClockGauges:
    """Recomputes the clock gauges from the stored clocks of live conversations."""

    conversations: ConversationStore
    clock: Clock
    metrics: SlaMetrics

    async def refresh(self) -> int:
        """Read every live conversation and set the gauges; returns the open clocks.

        The breach, at-risk and met counters are touched for every label set with an open clock,
        so they exist at zero before their first increment and ``rate()`` sees it.
        """
        now = self.clock.now()
        LabelSet = tuple[str, str, str, str, str]  # noqa: N806 - a local type alias
        open_: dict[LabelSet, int] = {}
        at_risk: dict[LabelSet, int] = {}
        breached: dict[LabelSet, int] = {}
        paused: dict[LabelSet, int] = {}
        oldest: dict[tuple[str, str, str], float] = {}
        # Open clocks only: resolved conversations awaiting their FCR decision (a week
        # of them) have a next_check but nothing the gauges count.
        async for record in self.conversations.live(open_only=True):
            for c in record.clocks:
                if not c.is_open:
                    continue
                labels = metric_labels(c)
                open_[labels] = open_.get(labels, 0) + 1
                if c.paused:
                    paused[labels] = paused.get(labels, 0) + 1
                if c.due_at is not None and c.due_at <= now:
                    breached[labels] = breached.get(labels, 0) + 1
                elif c.warn_at is not None and c.warn_at <= now:
                    at_risk[labels] = at_risk.get(labels, 0) + 1
                if c.metric.value != "resolution":
                    age = max(0.0, (now - c.started_at).total_seconds())
                    waiting = labels[:3]
                    oldest[waiting] = max(oldest.get(waiting, 0.0), age)
        m = self.metrics
        # No await from here on: a scrape never sees the gauges half rebuilt.
        for gauge, values in (
            (m.open_clocks, open_),
            (m.at_risk_clocks, at_risk),
            (m.breached_clocks, breached),
            (m.paused_clocks, paused),
        ):
            gauge.clear()
            for labels in open_:
                gauge.labels(*labels).set(values.get(labels, 0))
        m.oldest_waiting.clear()
        for waiting, age in oldest.items():
            m.oldest_waiting.labels(*waiting).set(age)
        for labels in open_:
            m.breaches.labels(*labels)
            m.at_risk_events.labels(*labels)
            m.targets_met.labels(*labels)
        return sum(open_.values())

    async def run(self, interval: float, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Refresh every ``interval`` seconds until cancelled; failures are logged."""
        while True:
            try:
                await self.refresh()
            except Exception as error:  # noqa: BLE001 - gauges must not stop the service
                log.warning("gauge refresh failed", error_type=type(error).__name__)
            await sleep(interval)
