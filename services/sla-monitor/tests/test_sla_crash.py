"""The monitor as real processes (``python -m switchboard_sla_monitor``) on real Kafka and
FerretDB: killed with SIGKILL mid-clock, then restarted as two replicas, it still
publishes the at-risk warning and the breach exactly once each.

Tier: integration (real servers; the processes are the monitor itself, no other service).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract import CONVERSATION_ACTIVITY, SLA_EVENTS, SlaBreached
from switchboard_common.mongo import Document
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import ServiceProcess, ServiceSpec
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.sla_monitor import activity

pytestmark = pytest.mark.integration

POLICY = """
calendars: {always: {always_open: true}}
policies:
  - name: quick
    calendar: always
    targets:
      first_response: {target: 8s, warn_before: 4s}
"""


def replica(env: dict[str, str]) -> ServiceProcess:
    port = free_port()
    spec = ServiceSpec("sla-monitor", "switchboard_sla_monitor", "SLA_MONITOR_HTTP_PORT", port)
    return ServiceProcess(spec, {**env, "SLA_MONITOR_HTTP_PORT": str(port)})


async def test_sigkill_mid_clock_then_two_replicas_breach_exactly_once(
    service_env: dict[str, str],
    probe: TopicProbe,
    mongo_client: AsyncMongoClient[Document],
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {
        **os.environ,
        **service_env,
        "SLA_MONITOR_POLICY_FILE": str(policy),
        "SLA_MONITOR_EVALUATION_INTERVAL": "0.2",
        "SLA_MONITOR_GAUGE_INTERVAL": "1",
        "SLA_MONITOR_REPUBLISH_AFTER": "2",
        "PYTHONUNBUFFERED": "1",
    }
    first = replica(env)
    first.start()
    survivors: list[ServiceProcess] = []
    try:
        first.wait_ready()
        cid = "conv-crash-1"
        started = datetime.now(UTC)
        await probe.send(
            CONVERSATION_ACTIVITY, activity(cid, "m1", started, kind="opened"), key=cid
        )
        conversations = mongo_client[service_env["MONGODB_DATABASE"]]["sla_conversations"]
        deadline = time.monotonic() + 60
        while await conversations.find_one({"_id": cid}) is None:
            assert time.monotonic() < deadline, "the clock was never stored"
            await asyncio.sleep(0.2)
        first.kill()  # mid-clock: nothing is due yet

        # Let the deadline pass with no monitor running, then start two replicas.
        await asyncio.sleep(max(0.0, 9 - (datetime.now(UTC) - started).total_seconds()))
        survivors = [replica(env), replica(env)]
        for process in survivors:
            process.start()
        for process in survivors:
            process.wait_ready()

        events = await probe.read_events(SLA_EVENTS, count=2, timeout=60, settle=6.0)
        ids = sorted((dict(r.headers)["ce_id"] or b"").decode() for r, _ in events)
        assert ids == [f"{cid}:first_response:1:at_risk", f"{cid}:first_response:1:breached"]
        breach = next(e for _, e in events if isinstance(e, SlaBreached))
        assert (breach.policy, breach.due_at) == ("quick", breach.at)
        assert (breach.due_at - started).total_seconds() == pytest.approx(8, abs=0.001)
    finally:
        for process in [first, *survivors]:
            process.stop()
