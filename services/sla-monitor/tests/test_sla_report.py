"""The KPI report: its figures from in-memory facts (wall and business times, 24 h,
first response within target, FCR, CSAT, NPS, grouping), the rating rules, and the
HTTP route's validation and bearer token."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from switchboard_common.agent_groups import AgentGroups
from switchboard_common.contract import Channel, ContractModel
from switchboard_common.settings import SettingsError
from switchboard_devtools.testing.sla_monitor import (
    activity,
    assigned,
    feedback,
    reply,
    resolved,
    simple_policies,
)
from switchboard_sla_monitor.facts import Fact, fact_from_event
from switchboard_sla_monitor.ingest import ClockIngest
from switchboard_sla_monitor.metrics import SlaMetrics
from switchboard_sla_monitor.report import GroupFigures, kpi_report, quantile
from switchboard_sla_monitor.report_api import (
    ReportRequestError,
    parse_request,
    report_router,
)
from switchboard_sla_monitor.settings import DEV_REPORT_TOKEN, SlaMonitorSettings
from switchboard_sla_monitor.store import InMemoryConversationStore
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.unit

# A Monday: the business-hours calendar below is Mon-Fri 09:00-17:00 UTC.
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
WINDOW = timedelta(days=7)
GROUPS = AgentGroups(by_agent={"ana": "billing", "bo": "tier-1"})
BUSINESS = {"timezone": "UTC", "hours": {d: ["09:00-17:00"] for d in ("monday", "tuesday")}}


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


async def stored(*conversations: Sequence[ContractModel]) -> InMemoryConversationStore:
    store = InMemoryConversationStore()
    policies = simple_policies(first="1h", resolution="3d", calendar=BUSINESS)
    ingest = ClockIngest(store, policies, frozenset(), fcr_window=WINDOW, agent_groups=GROUPS)
    by_conversation: dict[str, dict[str, Fact]] = {}
    for events in conversations:
        for event in events:
            found = fact_from_event(event)
            assert found is not None
            by_conversation.setdefault(found[0], {}).setdefault(found[1].key, found[1])
    await ingest.ingest(by_conversation)
    return store


def conversation(
    cid: str, *, reply_after: float, resolve_after: float | None, agent: str = "ana", **kw: object
) -> list[ContractModel]:
    channel = kw.get("channel", Channel.EMAIL)
    assert isinstance(channel, Channel)
    events: list[ContractModel] = [
        activity(cid, f"{cid}-m1", T0, kind="opened", channel=channel),
        assigned(cid, hours(0), agent_id=agent, channel=channel, queue=str(kw.get("queue", "q"))),
        reply(cid, hours(reply_after), agent_id=agent),
    ]
    if resolve_after is not None:
        events.append(resolved(cid, hours(resolve_after)))
    return events


async def report(
    store: InMemoryConversationStore, by: str | None, now: datetime
) -> dict[str, GroupFigures]:
    records = await store.in_period(T0, T0 + timedelta(days=30), 1000)
    figures = kpi_report(
        records,
        T0,
        T0 + timedelta(days=30),
        now,
        by,  # type: ignore[arg-type]
        groups=GROUPS,
        fcr_window=WINDOW,
    )
    return {g.group: g for g in figures}


async def test_wall_and_business_times_24_hours_and_first_response_within_target() -> None:
    store = await stored(
        # Answered in 30 min (met), resolved after 2 h: inside 24 h.
        conversation("c1", reply_after=0.5, resolve_after=2),
        # Answered after 26 h wall (Tue 11:00) = 10 business hours: breached; resolved
        # after 30 h wall.
        conversation("c2", reply_after=26, resolve_after=30),
    )
    (all_,) = (await report(store, None, hours(24 * 20))).values()
    assert (all_.opened, all_.resolved) == (2, 2)
    first = all_.first_response
    assert (first.count, first.met, first.breached) == (2, 1, 1)
    assert first.within_target_percent == 50.0
    assert (first.wall_seconds.median, first.wall_seconds.p90) == (1800.0, 26 * 3600.0)
    assert first.business_seconds.p90 == 10 * 3600.0
    res = all_.resolution
    assert (res.within_24h, res.within_24h_percent) == (1, 50.0)
    assert (res.wall_seconds.median, res.wall_seconds.p90) == (2 * 3600.0, 30 * 3600.0)
    assert res.business_seconds.p90 == 14 * 3600.0  # Mon 09-17 + Tue 09-15
    assert (all_.fcr.fcr, all_.fcr.not_fcr, all_.fcr.pending) == (2, 0, 0)


async def test_a_running_clock_past_its_deadline_counts_as_a_breach() -> None:
    store = await stored([activity("c1", "m1", T0, kind="opened")])
    (all_,) = (await report(store, None, hours(2))).values()
    assert (all_.first_response.met, all_.first_response.breached) == (0, 1)
    assert all_.first_response.count == 0  # no reply: no response time


async def test_fcr_is_pending_inside_the_window_and_grouped_by_agent_group() -> None:
    store = await stored(
        conversation("c1", reply_after=1, resolve_after=2, agent="ana"),
        conversation("c2", reply_after=1, resolve_after=2, agent="bo"),
        [reply("c2", hours(1.5), agent_id="bo")],
    )
    pending = await report(store, "agent_group", hours(3))
    assert pending["billing"].fcr.pending == 1
    assert pending["tier-1"].fcr.not_fcr == 1  # two replies: known at once
    later = await report(store, "agent_group", hours(2) + WINDOW)
    assert (later["billing"].fcr.fcr, later["billing"].fcr.rate_percent) == (1, 100.0)
    assert later["tier-1"].fcr.rate_percent == 0.0


async def test_csat_and_nps_by_channel_one_rating_per_id() -> None:
    store = await stored(
        conversation("c1", reply_after=1, resolve_after=2),
        conversation("c2", reply_after=1, resolve_after=2, channel=Channel.WHATSAPP),
        [
            feedback("c1", "csat", 5, hours(3), feedback_id="f1"),
            feedback("c1", "csat", 1, hours(3), feedback_id="f1"),  # the same rating again
            feedback("c2", "csat", 3, hours(3)),
            feedback("c2", "csat", 5, hours(4)),  # no id: the first csat of c2 counts
            feedback("c1", "nps", 10, hours(3)),
            feedback("c2", "nps", 6, hours(3)),
        ],
    )
    by_channel = await report(store, "channel", hours(5))
    email, chat = by_channel["email"], by_channel["whatsapp"]
    assert (email.csat.count, email.csat.mean, email.csat.satisfied_percent) == (1, 5.0, 100.0)
    assert (chat.csat.count, chat.csat.mean, chat.csat.satisfied_percent) == (1, 3.0, 0.0)
    assert (email.nps.promoters, email.nps.score) == (1, 100.0)
    assert (chat.nps.detractors, chat.nps.score) == (1, -100.0)


async def test_feedback_is_exported_by_kind_channel_queue_and_agent_group() -> None:
    registry = CollectorRegistry()
    store = InMemoryConversationStore()
    ingest = ClockIngest(
        store, simple_policies(), frozenset(), SlaMetrics.create(registry), agent_groups=GROUPS
    )
    events = [
        *conversation("c1", reply_after=1, resolve_after=2, queue="refunds"),
        feedback("c1", "csat", 4, hours(3), feedback_id="f1"),
    ]
    facts = {}
    for event in events:
        found = fact_from_event(event)
        assert found is not None
        facts[found[1].key] = found[1]
    await ingest.ingest({"c1": facts})
    await ingest.ingest({"c1": facts})  # redelivered: counted once
    labels = {"kind": "csat", "channel": "email", "queue": "refunds", "agent_group": "billing"}
    assert registry.get_sample_value("switchboard_feedback_score_count", labels) == 1.0
    assert registry.get_sample_value("switchboard_feedback_score_sum", labels) == 4.0
    low = {**labels, "le": "3.0"}
    assert registry.get_sample_value("switchboard_feedback_score_bucket", low) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=50), st.floats(0.01, 1))
def test_a_nearest_rank_quantile_is_a_value_with_enough_values_at_or_below(
    values: list[float], q: float
) -> None:
    result = quantile(values, q)
    assert result in values
    assert sum(1 for v in values if v <= result) >= q * len(values)
    assert sum(1 for v in values if v < result) < q * len(values)


@st.composite
def conversations(draw: st.DrawFn) -> list[list[ContractModel]]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        channel = draw(st.sampled_from([Channel.EMAIL, Channel.WHATSAPP]))
        events = conversation(
            f"c{i}",
            reply_after=draw(st.floats(0.01, 40)),
            resolve_after=draw(st.none() | st.floats(41, 60)),
            agent=draw(st.sampled_from(["ana", "bo", "cy"])),
            channel=channel,
            queue=draw(st.sampled_from(["q1", "q2"])),
        )
        if draw(st.booleans()):
            events.append(reply(f"c{i}", hours(draw(st.floats(0.02, 40))), agent_id="bo"))
        for n, kind in enumerate(draw(st.lists(st.sampled_from(["csat", "nps"]), max_size=3))):
            score = draw(st.integers(1, 5) if kind == "csat" else st.integers(0, 10))
            events.append(feedback(f"c{i}", kind, score, hours(61 + n), feedback_id=f"f{i}-{n}"))
        out.append(events)
    return out


def totals(figures: Sequence[GroupFigures]) -> tuple[int, ...]:
    return tuple(
        sum(values)
        for values in zip(
            *(
                (
                    g.opened,
                    g.resolved,
                    g.first_response.count,
                    g.first_response.met,
                    g.first_response.breached,
                    g.fcr.fcr,
                    g.fcr.not_fcr,
                    g.fcr.pending,
                    g.csat.count,
                    g.nps.count,
                )
                for g in figures
            ),
            strict=True,
        )
    )


@settings(max_examples=60, deadline=None)
@given(conversations(), st.floats(0, 24 * 10))
async def test_every_figure_falls_in_exactly_one_group_whatever_the_grouping(
    events: list[list[ContractModel]], now_hours: float
) -> None:
    store = await stored(*events)
    whole = totals(list((await report(store, None, hours(now_hours))).values()))
    assert whole[0] == len(events)  # every conversation opened in the period
    for by in ("channel", "queue", "agent_group"):
        assert totals(list((await report(store, by, hours(now_hours))).values())) == whole


# ------------------------------------------------------------------ the settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLA_MONITOR_REPORT_TOKEN", "SLA_MONITOR_FCR_REOPEN_WINDOW", "SWITCHBOARD_ENV"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def test_the_report_token_has_a_default_in_dev_only(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dev = SlaMonitorSettings.load(environment="dev")
    assert dev.report_token is not None
    assert dev.report_token.get_secret_value() == DEV_REPORT_TOKEN
    assert SlaMonitorSettings.load(environment="test").report_token is None
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("SLA_MONITOR_REPORT_TOKEN_FILE", str(secret))
    token = SlaMonitorSettings.load(environment="production").report_token
    assert token is not None
    assert token.get_secret_value() == "from-a-file"
    with pytest.raises(SettingsError, match="SLA_MONITOR_REPORT_TOKEN"):
        SlaMonitorSettings.load(environment="production", report_token="  ")  # noqa: S106


def test_the_fcr_window_is_a_duration(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SlaMonitorSettings.load().fcr_reopen_window == timedelta(days=7)
    monkeypatch.setenv("SLA_MONITOR_FCR_REOPEN_WINDOW", "36h")
    assert SlaMonitorSettings.load().fcr_reopen_window == timedelta(hours=36)
    monkeypatch.setenv("SLA_MONITOR_FCR_REOPEN_WINDOW", "a week")
    with pytest.raises(SettingsError, match="SLA_MONITOR_FCR_REOPEN_WINDOW"):
        SlaMonitorSettings.load()


# ------------------------------------------------------------------ the request


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"from": None, "to": "2026-11-02", "by": None}, "from and to are required"),
        ({"from": "yesterday", "to": "2026-11-02", "by": None}, "is not a date"),
        ({"from": "2026-11-01T00:00:00", "to": "2026-11-02", "by": None}, "time zone"),
        ({"from": "2026-11-02", "to": "2026-11-02", "by": None}, "from must be before to"),
        ({"from": "2026-11-03", "to": "2026-11-02", "by": None}, "from must be before to"),
        ({"from": "2025-01-01", "to": "2026-11-02", "by": None}, "longer than 400 days"),
        ({"from": "2026-11-01", "to": "2026-11-02", "by": "customer"}, "not one of"),
    ],
)
def test_bad_requests_say_what_is_wrong(query: dict[str, str | None], message: str) -> None:
    with pytest.raises(ReportRequestError, match=message):
        parse_request(query["from"], query["to"], query["by"], 400)


def test_dates_are_utc_midnights_and_offsets_are_kept() -> None:
    request = parse_request("2026-11-01", "2026-11-02T10:00:00+01:00", "queue", 400)
    assert request.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert request.end == datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert request.by == "queue"
    assert parse_request("2026-11-01", "2026-11-02", "none", 400).by is None


async def client_for(store: InMemoryConversationStore, token: str | None) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(
        report_router(
            conversations=store,
            token=SecretStr(token) if token else None,
            groups=GROUPS,
            fcr_window=WINDOW,
            max_days=400,
            max_conversations=1,
            clock=ManualClock(hours(24 * 20)),
        )
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_route_wants_the_token_validates_and_answers() -> None:
    store = await stored(conversation("c1", reply_after=0.5, resolve_after=2))
    query = {"from": "2026-11-01", "to": "2026-12-01", "by": "channel"}
    async with await client_for(store, "s3cret") as http:
        missing = await http.get("/reports/kpis", params=query)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/reports/kpis", params=query, headers=bearer("nope"))
        assert wrong.status_code == 403
        bad = await http.get("/reports/kpis", params={**query, "by": "x"}, headers=bearer())
        assert bad.status_code == 400
        assert "not one of" in bad.json()["detail"]
        ok = await http.get("/reports/kpis", params=query, headers=bearer())
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["by"] == "channel"
        assert body["from"].startswith("2026-11-01T00:00:00")
        assert [g["group"] for g in body["groups"]] == ["email"]
        assert body["groups"][0]["resolution"]["within_24h"] == 1
    async with await client_for(store, None) as http:
        off = await http.get("/reports/kpis", params=query, headers=bearer())
        assert off.status_code == 403
        assert "SLA_MONITOR_REPORT_TOKEN" in off.json()["detail"]


async def test_a_period_with_too_many_conversations_is_refused() -> None:
    store = await stored(
        conversation("c1", reply_after=0.5, resolve_after=2),
        conversation("c2", reply_after=0.5, resolve_after=2),
    )
    async with await client_for(store, "s3cret") as http:
        query = {"from": "2026-11-01", "to": "2026-12-01"}
        answer = await http.get("/reports/kpis", params=query, headers=bearer())
    assert answer.status_code == 400
    assert "more than 1 conversations" in answer.json()["detail"]


TOKEN = "s3cret"  # noqa: S105 - a test's token


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
