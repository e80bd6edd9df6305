"""Support KPIs end to end: conversations by email are answered, resolved, surveyed and
rated, and the figures come out of the router's and the SLA monitor's ``/metrics`` and the
monitor's ``GET /reports/kpis`` — by team, never by customer. The router, ingest-email
(replying through a local relay) and the SLA monitor run as separate processes on real
Kafka and the database."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    FEEDBACK,
    Channel,
    ConversationAssigned,
    ConversationReopened,
    FeedbackKind,
    FeedbackReceived,
    ReplySent,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.servers.relay import LocalRelay, text_of
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Customer, Helpdesk, customer_timeline, eventually

pytestmark = pytest.mark.e2e

AGENT, TEAM = "agent-kim", "tier-1"
SURVEY = "How satisfied are you with our answer? Reply with a number from 1 to 5."
#: Long enough that Ana's answer to the survey (a second or two after the resolution)
#: falls inside it, so it is the survey answer, not the window, that keeps her FCR.
FCR_WINDOW_SECONDS = 30
REPORT_TOKEN = secrets.token_urlsafe(16)
#: (series name, its labels) -> value.
Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def relay() -> Iterator[LocalRelay]:
    with LocalRelay.started() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    infra: Infra, relay: LocalRelay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    files = tmp_path_factory.mktemp("kpis")
    policy = {
        "version": 1,
        "queues": [{"name": "general", "target": {"conversation_skills": "none"}}],
        "surveys": {"kind": "csat", "channels": ["email"], "delay_seconds": 1, "text": SURVEY},
    }
    (files / "routing.yaml").write_text(yaml.safe_dump(policy))
    (files / "groups.yaml").write_text(yaml.safe_dump({"groups": {TEAM: [AGENT]}}))
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "ingest-email",
        "sla-monitor",
        extra_env={
            "OUTBOUND_SMTP_URL": f"{relay.url}?tls=none",
            "ROUTER_POLICY_FILE": str(files / "routing.yaml"),
            "ROUTER_SURVEY_TICK_SECONDS": "0.5",
            "SWITCHBOARD_AGENT_GROUPS_FILE": str(files / "groups.yaml"),
            "SLA_MONITOR_FCR_REOPEN_WINDOW": f"{FCR_WINDOW_SECONDS}s",
            "SLA_MONITOR_EVALUATION_INTERVAL": "1",
            "SLA_MONITOR_REPORT_TOKEN": REPORT_TOKEN,
        },
    ) as running:
        yield running


def person(stack: Stack, name: str) -> Customer:
    return Customer(
        email=f"{name}.{uuid.uuid4().hex[:8]}@example.org",
        phone="+34600000000",
        smtp_port=stack.smtp_port,
        social_url="http://127.0.0.1:9",  # not used: these customers only mail
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )


async def timeline_of(stack: Stack, who: Customer, messages: int = 1) -> dict[str, Any]:
    return await customer_timeline(
        stack.url("router"), stack.router_auth(), f"email:{who.email}", messages=messages
    )


async def conversation_of(stack: Stack, who: Customer) -> str:
    return str((await timeline_of(stack, who))["items"][0]["conversation_id"])


def surveys_to(relay: LocalRelay, who: Customer) -> list[Message]:
    return [m for m in relay.to(who.email) if SURVEY in text_of(m)]


async def events(probe: TopicProbe, topic: str, kind: type[Any], conversation_id: str) -> list[Any]:
    return [
        e
        for _, e in await probe.read_events(topic, timeout=5)
        if isinstance(e, kind) and e.conversation_id == conversation_id
    ]


async def handled(
    helpdesk: Helpdesk, probe: TopicProbe, conversation_id: str, replies: int
) -> None:
    """The agent is given the conversation, answers it ``replies`` times through the
    outbound path (each really mailed, so ``support.reply.sent`` follows), and resolves it
    once the last reply is sent."""

    def assigned(decisions: list[Any]) -> ConversationAssigned | None:
        return next(
            (
                d
                for d in decisions
                if isinstance(d, ConversationAssigned) and d.conversation_id == conversation_id
            ),
            None,
        )

    decision = await helpdesk.wait_for(assigned, what="the conversation assigned")
    assert decision.agent_id == AGENT
    for n in range(1, replies + 1):
        await helpdesk.request_reply(conversation_id, AGENT, f"Answer {n}: it arrives on Monday.")

        async def sent(n: int = n) -> list[Any] | None:
            found = await events(probe, CONVERSATION_EVENTS, ReplySent, conversation_id)
            return found if len(found) >= n else None

        await eventually(sent, what=f"reply {n} sent")
    await helpdesk.resolve(conversation_id)


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(scraped: Scrape, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scraped.items() if n == name and wanted <= ls)


async def report(stack: Stack, by: str, start: datetime, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    end = datetime.now(UTC) + timedelta(hours=1)
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        return await http.get(
            f"{stack.url('sla-monitor')}/reports/kpis",
            params={"from": start.isoformat(), "to": end.isoformat(), "by": by},
        )


async def test_resolved_conversations_are_surveyed_rated_and_counted_by_team(
    stack: Stack, relay: LocalRelay
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    ana, bo, cy = (person(stack, name) for name in ("ana", "bo", "cy"))
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        await helpdesk.agent(AGENT, capacity={Channel.EMAIL: 5})

        # Ana: one answer, resolved; the survey reaches her threaded on her mail.
        await ana.mail("Where is my order 4411?", "Hello, my order 4411 has not arrived yet.")
        a = await conversation_of(stack, ana)
        await handled(helpdesk, probe, a, replies=1)
        routed = [d for d in await helpdesk.decisions() if d.conversation_id == a]

        async def surveyed() -> list[Message] | None:
            return surveys_to(relay, ana) or None

        [survey] = await eventually(surveyed, what="Ana's survey")
        assert survey["Auto-Submitted"] == "auto-replied"
        assert survey["Subject"] == "Re: Where is my order 4411?"
        # She answers from her mail client, on the survey's thread.
        await ana.mail(
            "Re: Where is my order 4411?",
            "5 thanks, it came today",
            in_reply_to=survey["Message-ID"],
            references=[*str(survey["References"]).split(), survey["Message-ID"]],
        )

        async def rated() -> list[FeedbackReceived] | None:
            return await events(probe, FEEDBACK, FeedbackReceived, a) or None

        [rating] = await eventually(rated, what="Ana's rating on support.feedback.v1")
        assert (rating.kind, rating.score, rating.source) == (FeedbackKind.CSAT, 5, "survey_reply")
        assert rating.comment == "thanks, it came today"
        # Her answer joined the resolved conversation and left it resolved.
        after = await timeline_of(stack, ana, messages=2)
        assert {m["conversation_id"] for m in after["items"]} == {a}
        assert after["conversations"][a]["status"] == "resolved"

        # Bo's first mail is an out-of-office: nobody routes it, a supervisor closes it,
        # and no survey goes to an auto-reply (nor does an acknowledgement).
        await bo.mail("Out of office", "I am away until Monday.", auto_submitted=True)
        b = await conversation_of(stack, bo)
        await helpdesk.resolve(b)

        # Cy needs two answers: resolved, but not at first contact.
        await cy.mail("Invoice 17", "Could you send me invoice 17 again, please?")
        c = await conversation_of(stack, cy)
        await handled(helpdesk, probe, c, replies=2)

        async def surveys_settled() -> bool | None:
            router = await scrape(stack.url("router"))
            skipped = total(router, "switchboard_router_surveys_total", outcome="auto_submitted")
            return True if skipped and surveys_to(relay, cy) else None

        await eventually(surveys_settled, what="Bo's survey skipped and Cy's delivered")
        assert relay.to(bo.email) == []  # no survey, and no acknowledgement either

        async def decided() -> Scrape | None:
            monitor = await scrape(stack.url("sla-monitor"))
            return monitor if total(monitor, "switchboard_fcr_conversations_total") == 2 else None

        # Cy's FCR is decided at the resolution (two replies), Ana's once the window has
        # passed (or at a reopen, which her answer to the survey must not be).
        monitor = await eventually(decided, timeout=FCR_WINDOW_SECONDS + 90, what="FCR decisions")
        router = await scrape(stack.url("router"))

        # Once everything has settled: one rating, no reopening, no second routing.
        assert len(await events(probe, FEEDBACK, FeedbackReceived, a)) == 1
        assert await events(probe, CONVERSATION_EVENTS, ConversationReopened, a) == []
        decisions = await helpdesk.decisions()
        assert [d for d in decisions if d.conversation_id == a] == routed
        assert [d for d in decisions if d.conversation_id == b] == []
        assert (len(surveys_to(relay, ana)), len(surveys_to(relay, cy))) == (1, 1)
        assert (await timeline_of(stack, ana, 2))["conversations"][a]["status"] == "resolved"

    # The monitor: FCR by outcome, the rating by team, the resolution times.
    email = {"channel": "email", "queue": "general"}
    fcr = {
        o: total(monitor, "switchboard_fcr_conversations_total", outcome=o, **email)
        for o in ("fcr", "not_fcr")
    }
    assert fcr == {"fcr": 1, "not_fcr": 1}
    rating_labels = {"kind": "csat", "agent_group": TEAM, **email}
    ratings = total(monitor, "switchboard_feedback_score_count", **rating_labels)
    rating_sum = total(monitor, "switchboard_feedback_score_sum", **rating_labels)
    unhappy = total(monitor, "switchboard_feedback_score_bucket", le="3.0", **rating_labels)
    assert (ratings, rating_sum, unhappy) == (1, 5, 0)
    wall = "switchboard_sla_achieved_wall_seconds_count"
    assert total(monitor, wall, metric="resolution", channel="email") == 2  # Ana's and Cy's
    assert total(monitor, wall, metric="first_response", channel="email") == 2
    # The router: the team handled both; surveys sent, answered and skipped.
    handled_total = "switchboard_agent_conversations_handled_total"
    assert total(router, handled_total, agent_group=TEAM, channel="email") == 2
    surveys = {
        o: total(router, "switchboard_router_surveys_total", channel="email", outcome=o)
        for o in ("sent", "answered", "auto_submitted")
    }
    assert surveys == {"sent": 2, "answered": 1, "auto_submitted": 1}
    # Nobody's identity in any label: no customer, conversation, address or agent id.
    timelines = [await timeline_of(stack, who) for who in (ana, bo, cy)]
    private = {a, b, c, AGENT, ana.email, bo.email, cy.email} | {
        t["items"][0]["customer_id"] for t in timelines
    }
    values = {v for scraped in (monitor, router) for _, ls in scraped for _, v in ls}
    assert not {v for v in values if any(p in v for p in private)}

    # The report agrees with the metrics, by channel and by team.
    rate = 100.0 * fcr["fcr"] / (fcr["fcr"] + fcr["not_fcr"])
    satisfied = 100.0 * (ratings - unhappy) / ratings
    for by, group in (("channel", "email"), ("agent_group", TEAM)):
        answer = await report(stack, by, start, REPORT_TOKEN)
        assert answer.status_code == 200, answer.text
        [figures] = [g for g in answer.json()["groups"] if g["group"] == group]
        assert figures["fcr"] == {"fcr": 1, "not_fcr": 1, "pending": 0, "rate_percent": rate}
        assert figures["csat"] == {
            "count": 1,
            "mean": rating_sum / ratings,
            "satisfied": 1,
            "satisfied_percent": satisfied,
        }
        # Bo's out-of-office opened a thread but no clock: only Ana's and Cy's resolve.
        assert (figures["resolved"], figures["resolution"]["count"]) == (2, 2)
    assert (await report(stack, "channel", start, None)).status_code == 401
    assert (await report(stack, "channel", start, "not-the-token")).status_code == 403
