"""The monitor on real Kafka and the real MongoDB-wire server, with an injected clock:
a conversation flows through activity -> assigned -> replies, and the right SLA events and
metric values appear; a restart mid-clock still fires the breach exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchboard_common.contract import (
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    SLA_EVENTS,
    Priority,
    SlaAtRisk,
    SlaBreached,
)
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.sla_monitor import activity, assigned, reply
from switchboard_devtools.testing.sla_running import eventually, monitor, scrape
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


@pytest.fixture
def env(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLA_MONITOR_EVALUATION_INTERVAL", "0.1")
    monkeypatch.setenv("SLA_MONITOR_GAUGE_INTERVAL", "0.1")


def labels(metric: str, **overrides: str) -> frozenset[tuple[str, str]]:
    base = {"channel": "email", "priority": "normal", "queue": "billing", "policy": "email"}
    return frozenset({**base, "metric": metric, **overrides}.items())


async def sla_events(
    probe: TopicProbe, count: int, settle: float = 0.0
) -> list[tuple[str, object]]:
    records = await probe.read_events(SLA_EVENTS, count=count, timeout=60, settle=settle)
    out: list[tuple[str, object]] = []
    for record, event in records:
        ce_id = dict(record.headers)["ce_id"]
        out.append(((ce_id or b"").decode(), event))
    return out


async def test_a_conversation_flows_through_and_the_right_events_and_metrics_appear(
    env: None, probe: TopicProbe
) -> None:
    clock = ManualClock(T0)
    cid = "conv-flow-1"
    async with monitor(clock) as (url, parts):
        await probe.send(CONVERSATION_ACTIVITY, activity(cid, "m1", T0, kind="opened"), key=cid)
        await probe.send(
            ASSIGNMENTS,
            assigned(cid, T0 + timedelta(seconds=5), priority=Priority.NORMAL, queue="billing"),
            key=cid,
        )

        async def stored_with_queue() -> bool:
            record = (await parts.conversations.load([cid])).get(cid)
            return bool(record and record.clocks and record.clocks[0].queue == "billing")

        await eventually(stored_with_queue)
        # Email (default policy): first response 24 h, at risk 4 h before.
        clock.set(T0 + timedelta(hours=20, minutes=1))
        (first,) = await sla_events(probe, 1)
        assert first[0] == f"{cid}:first_response:1:at_risk"
        assert isinstance(first[1], SlaAtRisk)
        assert (first[1].policy, first[1].queue, first[1].priority) == (
            "email",
            "billing",
            "normal",
        )
        assert first[1].due_at == T0 + timedelta(hours=24)

        async def at_risk_gauge() -> bool:
            return (await scrape(url)).get(
                ("switchboard_sla_at_risk_clocks", labels("first_response"))
            ) == 1

        await eventually(at_risk_gauge)

        # The agent answers in time; the customer writes again; nobody answers that.
        await probe.send(CONVERSATION_EVENTS, reply(cid, T0 + timedelta(hours=22)), key=cid)
        await probe.send(
            CONVERSATION_ACTIVITY, activity(cid, "m2", T0 + timedelta(hours=23)), key=cid
        )

        async def answered() -> bool:
            sample = await scrape(url)
            return sample.get(("switchboard_sla_targets_met_total", labels("first_response"))) == 1

        await eventually(answered)
        sample = await scrape(url)
        assert (
            sample[("switchboard_sla_achieved_business_seconds_sum", labels("first_response"))]
            == 22 * 3600
        )
        assert (
            sample[("switchboard_sla_achieved_business_seconds_count", labels("first_response"))]
            == 1
        )

        clock.set(T0 + timedelta(hours=23 + 24, seconds=1))
        events = await sla_events(probe, 3, settle=2.0)
        (next_id,) = {e.cycle for _, e in events if isinstance(e, SlaBreached)}
        assert [i for i, _ in events] == [
            f"{cid}:first_response:1:at_risk",
            f"{cid}:next_response:{next_id}:at_risk",
            f"{cid}:next_response:{next_id}:breached",
        ]
        breach = events[2][1]
        assert isinstance(breach, SlaBreached)
        assert breach.at == breach.due_at == T0 + timedelta(hours=47)

        async def breach_counted() -> bool:
            s = await scrape(url)
            return (
                s.get(("switchboard_sla_breaches_total", labels("next_response"))) == 1
                and s.get(("switchboard_sla_breached_clocks", labels("next_response"))) == 1
            )

        await eventually(breach_counted)
        sample = await scrape(url)
        assert sample[("switchboard_sla_open_clocks", labels("resolution"))] == 1
        assert sample[("switchboard_sla_breaches_total", labels("first_response"))] == 0
        waiting = frozenset({"channel": "email", "priority": "normal", "queue": "billing"}.items())
        assert sample[("switchboard_sla_oldest_waiting_seconds", waiting)] == 24 * 3600 + 1


async def test_a_restart_mid_clock_fires_the_breach_exactly_once(
    env: None, probe: TopicProbe
) -> None:
    clock = ManualClock(T0)
    cid = "conv-restart-1"
    async with monitor(clock) as (_, parts):
        await probe.send(CONVERSATION_ACTIVITY, activity(cid, "m1", T0, kind="opened"), key=cid)

        async def stored() -> bool:
            return cid in await parts.conversations.load([cid])

        await eventually(stored)
    # While no monitor runs the deadline passes; then two replicas start at once.
    clock.set(T0 + timedelta(hours=25))
    async with monitor(clock), monitor(clock):
        events = await sla_events(probe, 2, settle=3.0)
    assert sorted(i for i, _ in events) == [
        f"{cid}:first_response:1:at_risk",
        f"{cid}:first_response:1:breached",
    ]
    # And a third start later publishes nothing more.
    async with monitor(clock):
        events = await sla_events(probe, 2, settle=3.0)
    assert len(events) == 2
