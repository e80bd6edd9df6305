"""Support KPIs on real Kafka and the real MongoDB-wire server, through the monitor's own
consumers and evaluation loop with an injected clock: two chat conversations are answered,
resolved (one reopened), rated; the wall and business histograms, FCR decisions, rating
distributions and the report endpoint say what happened, and a bad rating is
dead-lettered while the consumer carries on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from switchboard_common.cloudevents import event_headers
from switchboard_common.contract import (
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    DEADLETTER,
    FEEDBACK,
    Channel,
    DeadLetter,
)
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.sla_monitor import (
    activity,
    assigned,
    feedback,
    reply,
    resolved,
)
from switchboard_devtools.testing.sla_running import eventually, monitor, scrape
from switchboard_sla_monitor.app import SlaMonitor
from switchboard_sla_monitor.facts import FeedbackFact
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.integration

# A Monday 09:00 UTC at least two weeks back: the shipped chat policy runs on Mon-Fri
# 09:00-17:00 UTC, so business times are known exactly.
_back = datetime.now(UTC) - timedelta(days=14)
T0 = datetime.combine(_back.date() - timedelta(days=_back.weekday()), datetime.min.time(), UTC)
T0 += timedelta(hours=9)
WINDOW = timedelta(days=7)
TOKEN = "kpi-report-test-token"  # noqa: S105 - a test's token
CHAT = Channel.WHATSAPP


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


@pytest.fixture
def env(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    groups = tmp_path / "agent-groups.yaml"
    groups.write_text("groups:\n  billing: [ana]\n  tier-1: [bo]\n")
    monkeypatch.setenv("SWITCHBOARD_AGENT_GROUPS_FILE", str(groups))
    monkeypatch.setenv("SLA_MONITOR_REPORT_TOKEN", TOKEN)
    monkeypatch.setenv("SLA_MONITOR_FCR_REOPEN_WINDOW", "7d")
    monkeypatch.setenv("SLA_MONITOR_EVALUATION_INTERVAL", "0.1")
    monkeypatch.setenv("SLA_MONITOR_GAUGE_INTERVAL", "0.1")


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


CLOCK = {"channel": "whatsapp", "priority": "normal", "queue": "billing", "policy": "chat"}


async def drive(probe: TopicProbe) -> None:
    """A: answered in 3 min by ana, resolved after 2 h. B: answered after 1 h by bo,
    resolved after 26 h (Tuesday 11:00: 10 business hours), reopened an hour later."""
    for cid, agent, answer, resolve in (("kpi-a", "ana", 0.05, 2), ("kpi-b", "bo", 1, 26)):
        await probe.send(
            CONVERSATION_ACTIVITY,
            activity(cid, f"{cid}-1", T0, kind="opened", channel=CHAT),
            key=cid,
        )
        decision = assigned(cid, hours(0.01), queue="billing", channel=CHAT, agent_id=agent)
        await probe.send(ASSIGNMENTS, decision, key=cid)
        await probe.send(CONVERSATION_EVENTS, reply(cid, hours(answer), agent_id=agent), key=cid)
        await probe.send(CONVERSATION_EVENTS, resolved(cid, hours(resolve)), key=cid)
    reopen = activity("kpi-b", "kpi-b-2", hours(27), kind="reopened", channel=CHAT)
    await probe.send(CONVERSATION_ACTIVITY, reopen, key="kpi-b")
    # A rating that does not validate (CSAT is 1-5) among good ones, and one sent twice.
    good = feedback("kpi-a", "csat", 5, hours(3), feedback_id="f-a")
    bad = {**good.model_dump(mode="json"), "score": 9, "feedback_id": "f-bad"}
    headers = event_headers(good, source="/tests")
    await probe.send_raw(
        FEEDBACK,
        json.dumps(bad).encode(),
        key="kpi-a",
        headers=[(k, v.encode()) for k, v in headers.items()],
    )
    for rating in (
        good,
        good,
        feedback("kpi-a", "nps", 10, hours(3), feedback_id="n-a"),
        feedback("kpi-b", "csat", 2, hours(26.5), feedback_id="f-b"),
    ):
        await probe.send(FEEDBACK, rating, key=rating.conversation_id)


async def ratings_stored(parts: SlaMonitor) -> bool:
    records = await parts.conversations.load(["kpi-a", "kpi-b"])
    facts = [f for r in records.values() for f in r.facts.values()]
    ratings = [f for f in facts if isinstance(f, FeedbackFact)]
    reopened = "kpi-b" in records and any(
        getattr(f, "message_id", None) == "kpi-b-2" for f in records["kpi-b"].facts.values()
    )
    return len(ratings) == 3 and reopened


async def test_kpis_flow_into_metrics_and_the_report(env: None, probe: TopicProbe) -> None:
    clock = ManualClock(hours(27))
    async with monitor(clock) as (url, parts):
        await drive(probe)
        await eventually(lambda: ratings_stored(parts))

        # B's reopen an hour after its resolution, inside the window: not FCR, at once.
        fcr = "switchboard_fcr_conversations_total"
        not_fcr = series(fcr, channel="whatsapp", queue="billing", outcome="not_fcr")
        is_fcr = series(fcr, channel="whatsapp", queue="billing", outcome="fcr")

        async def b_decided() -> bool:
            return (await scrape(url)).get(not_fcr) == 1

        await eventually(b_decided)
        assert (await scrape(url)).get(is_fcr) == 0
        # A: once its window has passed without a reopen, FCR.
        clock.set(hours(2) + WINDOW)

        async def a_decided() -> bool:
            return (await scrape(url)).get(is_fcr) == 1

        await eventually(a_decided)
        sample = await scrape(url)
        assert sample[not_fcr] == 1

        resolution = {**CLOCK, "metric": "resolution"}
        wall = "switchboard_sla_achieved_wall_seconds"
        business = "switchboard_sla_achieved_business_seconds"
        assert sample[series(f"{wall}_count", **resolution)] == 2
        assert sample[series(f"{wall}_sum", **resolution)] == 28 * 3600
        assert sample[series(f"{business}_sum", **resolution)] == 12 * 3600
        assert sample[series(f"{wall}_bucket", **resolution, le="86400.0")] == 1
        first = {**CLOCK, "metric": "first_response"}
        assert sample[series(f"{wall}_sum", **first)] == 180 + 3600
        assert sample[series("switchboard_sla_targets_met_total", **first)] == 1

        score = "switchboard_feedback_score"
        rated = {"channel": "whatsapp", "queue": "billing"}
        csat_a = series(f"{score}_count", kind="csat", agent_group="billing", **rated)
        csat_b = series(f"{score}_sum", kind="csat", agent_group="tier-1", **rated)
        nps_a = series(f"{score}_bucket", kind="nps", agent_group="billing", le="8.0", **rated)
        assert (sample[csat_a], sample[csat_b], sample[nps_a]) == (1, 2, 0)

        letters = await probe.read_events(DEADLETTER, count=1)
        (letter,) = [e for _, e in letters if isinstance(e, DeadLetter)]
        assert letter.topic.endswith(FEEDBACK)
        assert "score is 1-5, not 9" in letter.error

        query = {"from": T0.date().isoformat(), "to": (T0 + timedelta(days=14)).isoformat()}
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/reports/kpis", params=query)).status_code == 401
            wrong = {"Authorization": "Bearer not-it"}
            assert (await http.get("/reports/kpis", params=query, headers=wrong)).status_code == 403
            auth = {"Authorization": f"Bearer {TOKEN}"}
            whole = await http.get("/reports/kpis", params=query, headers=auth)
            by_group = await http.get(
                "/reports/kpis", params={**query, "by": "agent_group"}, headers=auth
            )
    assert whole.status_code == 200, whole.text
    (everything,) = whole.json()["groups"]
    assert (everything["opened"], everything["resolved"]) == (2, 2)
    assert everything["resolution"]["wall_seconds"] == {"median": 7200.0, "p90": 93600.0}
    assert everything["resolution"]["business_seconds"] == {"median": 7200.0, "p90": 36000.0}
    assert everything["resolution"]["within_24h_percent"] == 50.0
    assert everything["first_response"]["within_target_percent"] == 50.0
    assert everything["fcr"] == {"fcr": 1, "not_fcr": 1, "pending": 0, "rate_percent": 50.0}
    csat = {"count": 2, "mean": 3.5, "satisfied": 1, "satisfied_percent": 50.0}
    assert everything["csat"] == csat
    assert everything["nps"]["score"] == 100.0
    groups = {g["group"]: g for g in by_group.json()["groups"]}
    assert groups["billing"]["fcr"]["fcr"] == 1
    assert groups["tier-1"]["fcr"]["not_fcr"] == 1
    assert groups["tier-1"]["csat"]["mean"] == 2.0
