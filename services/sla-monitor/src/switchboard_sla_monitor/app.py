"""The SLA monitor's transport shell: every topic, collection and loop is wired here.

Reads (consumer group ``<prefix>sla-monitor``, range assignment so that partition *i*
of every topic, all keyed by ``conversation_id``, is consumed by the same replica):

- ``switchboard.router.conversation-activity.v1`` — customer messages with their
  conversation (start first/next-response and resolution clocks);
- ``support.assignments.v1`` — priority, queue and ``waiting_since`` (policy matching,
  labels, recomputed deadlines);
- ``support.conversation-events.v1`` — replies (stop response clocks, may pause),
  resolved, reopened;
- ``support.sla-events.v1`` — its own at-risk/breach events coming back (the emission is
  done; the conversation's next check moves on);
- ``support.feedback.v1`` — customers' CSAT and NPS ratings (stored once per rating).

Writes ``support.sla-events.v1`` and the collections ``sla_conversations`` and
``sla_emissions`` (SLA emissions and first-contact decisions); serves ``/healthz``,
``/readyz``, ``/metrics`` and ``GET /reports/kpis`` (bearer token).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from switchboard_common.agent_groups import load_agent_groups
from switchboard_common.consumer import BatchConsumer, subscribe_batch
from switchboard_common.contract import (
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    DEADLETTER,
    FEEDBACK,
    SLA_EVENTS,
)
from switchboard_common.deadletter import DeadLetterPublisher
from switchboard_common.http import instrument, kafka_ready, mongo_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.logging import get_logger
from switchboard_common.metrics import service_registry
from switchboard_common.mongo import database, make_mongo_client
from switchboard_common.progress import ConsumerWatch
from switchboard_common.service import Runtime
from switchboard_sla_monitor.evaluator import Evaluator, OpenClockGauges
from switchboard_sla_monitor.ingest import ClockIngest, apply_facts
from switchboard_sla_monitor.metrics import SlaMetrics
from switchboard_sla_monitor.mongo_store import (
    CONVERSATIONS,
    EMISSIONS,
    META,
    MongoConversationStore,
    MongoEmissionStore,
)
from switchboard_sla_monitor.policy import PolicySet, load_policies
from switchboard_sla_monitor.report_api import report_router
from switchboard_sla_monitor.settings import SlaMonitorSettings
from switchboard_sla_monitor.store import ConversationStore, ConversationUpdate
from switchboard_sla_monitor.timesource import Clock, SystemClock

log = get_logger(__name__)

CONSUMED_TOPICS = (
    CONVERSATION_ACTIVITY,
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    SLA_EVENTS,
    FEEDBACK,
)
#: What it writes: its SLA events, and what its consumer dead-letters.
PUBLISHED_TOPICS = (SLA_EVENTS, DEADLETTER)


@dataclass(frozen=True)
class SlaMonitor:
    """The assembled parts, for tests and operators' tooling."""

    settings: SlaMonitorSettings
    policies: PolicySet
    conversations: ConversationStore
    ingest: ClockIngest
    evaluator: Evaluator
    gauges: OpenClockGauges
    metrics: SlaMetrics
    registry: CollectorRegistry


def build(
    settings: SlaMonitorSettings,
    *,
    clock: Clock | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Runtime, SlaMonitor]:
    """Assemble the monitor. Raises ``PolicyError`` when the policy file is invalid and
    ``AgentGroupsError`` when the agent groups file is."""
    clock = clock or SystemClock()
    policies = load_policies(settings.policy_file)
    agent_groups = load_agent_groups(settings.agent_groups_file)
    registry = service_registry(settings.service_name)
    metrics = SlaMetrics.create(registry)
    broker = make_broker(settings)
    client = make_mongo_client(settings)
    db = database(client, settings)
    conversations = MongoConversationStore(db[CONVERSATIONS], db[META])
    emissions = MongoEmissionStore(db[EMISSIONS])
    publisher = EventPublisher(
        broker, settings.topics, settings.service_name, publishes=PUBLISHED_TOPICS
    )

    consumers = ConsumerWatch(
        metrics.consumer,
        stall_after=settings.consumer_stall_seconds,
        interval=settings.consumer_lag_interval_seconds,
    )
    ingest = ClockIngest(
        conversations,
        policies,
        settings.pause_statuses,
        metrics,
        fcr_window=settings.fcr_reopen_window,
        agent_groups=agent_groups,
    )
    consumer = BatchConsumer(
        topics=settings.topics,
        handler=ingest,
        dead_letters=DeadLetterPublisher(
            publisher, service=settings.service_name, consumer_group=settings.group_id
        ),
        metrics=metrics.consumer,
    )
    subscribe_batch(
        broker,
        consumer,
        topics=CONSUMED_TOPICS,
        group_id=settings.group_id,
        max_records=settings.batch_max_records,
        partition_assignment_strategy=(RangePartitionAssignor,),
        watch=consumers,
        title="sla-monitor",
        description=(
            "Conversation activity, routing decisions, agent activity and ratings "
            "-> SLA clocks and support KPIs."
        ),
    )
    evaluator = Evaluator(
        conversations=conversations,
        emissions=emissions,
        publish=publisher.publish_all,
        policies=policies,
        pause_statuses=settings.pause_statuses,
        clock=clock,
        replica=f"{socket.gethostname()}:{os.getpid()}",
        limit=settings.evaluation_limit,
        republish_after=timedelta(seconds=settings.republish_after),
        metrics=metrics,
        fcr_window=settings.fcr_reopen_window,
    )
    gauges = OpenClockGauges(conversations, clock, metrics)

    app = FastAPI(
        title="Switchboard SLA monitor",
        version="1.0",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    instrument(app, registry=registry, service=settings.service_name)
    app.include_router(
        ops_router(
            registry=registry,
            checks=[kafka_ready(broker), mongo_ready(client)],
            liveness=[consumers.liveness_check()],
        )
    )
    app.include_router(
        report_router(
            conversations=conversations,
            token=settings.report_token,
            groups=agent_groups,
            fcr_window=settings.fcr_reopen_window,
            max_days=settings.report_max_days,
            max_conversations=settings.report_max_conversations,
            clock=clock,
        )
    )
    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
    )

    async def prepare() -> None:
        await conversations.ensure_indexes()
        await emissions.ensure_indexes()
        await recompute_if_changed(
            conversations, ingest, derivation_fingerprint(settings, policies)
        )

    async def evaluation_loop() -> None:
        await evaluator.run(settings.evaluation_interval, sleep)

    async def gauge_loop() -> None:
        await gauges.run(settings.gauge_interval, sleep)

    async def close_client() -> None:
        await client.close()

    runtime.on_start.append(prepare)
    runtime.background.extend([evaluation_loop, gauge_loop, consumers.run])
    runtime.on_stop.append(close_client)
    monitor = SlaMonitor(
        settings, policies, conversations, ingest, evaluator, gauges, metrics, registry
    )
    return runtime, monitor


#: Bump when the derivation of clocks changes, so open clocks are recomputed at start.
DERIVATION_VERSION = "3"  # 2: first/last fact times, first-contact decisions; 3: due


def derivation_fingerprint(settings: SlaMonitorSettings, policies: PolicySet) -> str:
    """What the stored clocks were derived with: code version, policies, pause statuses,
    the FCR reopen window (it moves ``next_check``)."""
    statuses = ",".join(sorted(settings.pause_statuses))
    window = settings.fcr_reopen_window.total_seconds()
    return f"{DERIVATION_VERSION}:{policies.fingerprint}:{statuses}:{window:g}"


async def recompute_if_changed(
    conversations: ConversationStore, ingest: ClockIngest, fingerprint: str
) -> int:
    """Recompute open clocks when the policies (or code, or pause statuses) changed since
    the last start; returns how many records changed (0 when nothing changed)."""
    if await conversations.marker("derivation") == fingerprint:
        return 0
    changed = await recompute(conversations, ingest)
    await conversations.set_marker("derivation", fingerprint)
    return changed


async def recompute(conversations: ConversationStore, ingest: ClockIngest) -> int:
    """Re-derive every live conversation with the current policies and calendars.

    Run at start when the policies changed: a new policy file moves the deadlines of open
    clocks (the evaluator re-derives before emitting anyway; this moves ``next_check``
    too). Skipped otherwise, because these writes race with other replicas' consumers
    on FerretDB v1 (whole-document rewrites). Idempotent; returns how many records changed.
    """
    updates: list[ConversationUpdate] = []
    async for record in conversations.live(with_facts=True):
        update, _ = apply_facts(
            record, {}, ingest.policies, ingest.pause_statuses, ingest.fcr_window
        )
        if (
            update.clocks != record.clocks
            or update.next_check != record.next_check
            or (update.first_at, update.last_at) != (record.first_at, record.last_at)
            or update.due != record.due
        ):
            updates.append(update)
    for start in range(0, len(updates), 500):
        await conversations.save(updates[start : start + 500])
    if updates:
        log.info("open clocks recomputed with the current policies", conversations=len(updates))
    return len(updates)
