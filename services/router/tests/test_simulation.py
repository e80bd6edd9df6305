"""What-if replays (``switchboard_router.simulation``): a replay through the same policy
makes the decisions the live router made; a policy that relaxes skills sooner shortens
the waits; the report is the same bytes every time; bad input is refused or counted.

"Recorded" traffic here comes from the live path: the router's consumer handlers
driving an engine on a fake clock that ticks every quarter second, as the router's
timer loop does, with agents who reply and resolve a fixed time after each assignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    Channel,
    ConversationAssigned,
    ConversationResolved,
    ReplySent,
)
from switchboard_common.contract.events import AssignmentDecision, ContractModel
from switchboard_common.deadletter import RawRecord
from switchboard_devtools.testing.router_assignment import (
    T0,
    FixedLanguage,
    activity,
    engine,
    state,
)
from switchboard_router.assignment.consumers import AgentStateHandler, ConversationHandler
from switchboard_router.assignment.model import RouteStatus
from switchboard_router.assignment.policy import RoutingPolicy, load_policy, parse_policy
from switchboard_router.assignment.store import Decision
from switchboard_router.simulation import cli
from switchboard_router.simulation.handling import HandlingModel
from switchboard_router.simulation.page import page
from switchboard_router.simulation.render import text as render_text
from switchboard_router.simulation.replay import Outcome, replay
from switchboard_router.simulation.report import (
    compare,
    first_response_met,
    percentile,
    still_waiting,
    wait_of,
)
from switchboard_router.simulation.trace import event_line, read_trace

pytestmark = pytest.mark.unit

#: Billing work waits ``relax`` seconds for a specialist (billing 5 or more).
POLICY = """
classification:
  language: {{detect: false, default: en}}
  topics: [{{name: billing, keywords: [invoice], skills: {{billing: 1}}}}]
queues:
  - name: billing
    when: {{skills: [billing]}}
    target: {{conversation_skills: language}}
    steps:
      - {{after_seconds: 0, preferred: {{billing: 5}}}}
      - {{after_seconds: {relax}, preferred: {{}}}}
    overflow_after_seconds: 1800
  - name: general
"""
CURRENT = parse_policy(POLICY.format(relax=600))
CANDIDATE = parse_policy(POLICY.format(relax=30))
TICK = 0.25


class LiveRecording:
    """The live router's consumer path on a fake clock, recording every record it sees
    and every decision it publishes as trace lines."""

    def __init__(self, policy: RoutingPolicy, reply_after: float, resolve_after: float) -> None:
        self.engine, self.published, self.clock = engine(policy)
        self.conversations = ConversationHandler(self.engine, concurrency=4)
        self.agents = AgentStateHandler(self.engine)
        self.reply_after = reply_after
        self.resolve_after = resolve_after
        self.lines: list[str] = []
        self._seen = 0
        self._offset = 0
        #: Agents' work to do: when, where, what, and by whom.
        self._due: list[tuple[float, str, ContractModel, str | None]] = []
        #: Who holds each conversation, as the decisions published say (a frontend's view).
        self._holder: dict[str, str | None] = {}

    def _record(self, topic: str, key: str, event: ContractModel, tag: str) -> Delivery:
        attributes = CloudEventAttributes(
            f"{tag}-{self._offset}", event.ce_type, "/t", self.clock.now()
        )
        self._offset += 1
        self.lines.append(event_line(topic, key, attributes, event))
        raw = RawRecord(topic, 0, self._offset, key.encode(), None, ())
        return Delivery(raw, attributes, event, topic)

    async def run(self, inputs: Sequence[tuple[float, str, ContractModel]], until: float) -> None:
        pending = sorted(((*i, None) for i in inputs), key=lambda i: i[0])
        elapsed = 0.0
        while elapsed <= until:
            due = [i for i in [*pending, *self._due] if i[0] <= elapsed]
            pending = [i for i in pending if i[0] > elapsed]
            self._due = [i for i in self._due if i[0] > elapsed]
            for _, topic, event, agent in sorted(due, key=lambda i: (i[0], i[1])):
                cid = str(getattr(event, "conversation_id", ""))
                # Only the agent who has the conversation works on it.
                if agent is None or self._holder.get(cid) == agent:
                    await self._deliver(topic, event)
            await self.engine.tick()
            self._observe(elapsed)
            elapsed += TICK
            self.clock.advance(TICK)

    async def _deliver(self, topic: str, event: ContractModel) -> None:
        key = str(getattr(event, "conversation_id", getattr(event, "agent_id", "")))
        delivery = self._record(topic, key, event, "e")
        if topic == AGENT_EVENTS:
            await self.agents([delivery])
        elif topic == CONVERSATION_ACTIVITY:
            await self.conversations.route_messages([delivery.event], {})  # type: ignore[list-item]
        else:
            await self.conversations([delivery])
        self._observe(None)

    def _observe(self, elapsed: float | None) -> None:
        """Record what was published; an assignment sets the agent's work going."""
        now = self.clock.now()
        fresh, self._seen = self.published.events[self._seen :], len(self.published.events)
        for decision in fresh:
            self._publish(decision)
            self._holder[decision.conversation_id] = decision.agent_id
            accepted = decision.reason.get("offer") == "accepted"  # its offer's work goes on
            if isinstance(decision, ConversationAssigned) and decision.agent_id and not accepted:
                at = (now - T0).total_seconds() if elapsed is None else elapsed
                cid, agent = decision.conversation_id, decision.agent_id
                reply = ReplySent(conversation_id=cid, agent_id=agent, sent_at=now)
                done = ConversationResolved(conversation_id=cid, at=now)
                # Some agents answer later than others (c00 at once, c01 5 s later...).
                later = 5 * (int(cid[1:]) % 3)
                self._due.append((at + self.reply_after + later, CONVERSATION_EVENTS, reply, agent))
                self._due.append((at + self.resolve_after, CONVERSATION_EVENTS, done, agent))

    def _publish(self, decision: AssignmentDecision) -> None:
        attributes = CloudEventAttributes(
            f"{decision.conversation_id}:{decision.seq}",
            decision.ce_type,
            "/r",
            decision.decided_at,
        )
        self.lines.append(event_line(ASSIGNMENTS, decision.conversation_id, attributes, decision))


def agent(agent_id: str, billing: int | None) -> list[tuple[float, str, ContractModel]]:
    profile = AgentUpserted(
        agent_id=agent_id,
        display_name=agent_id,
        skills={"billing": billing} if billing else {},
        capacity={Channel.EMAIL: 1},
        languages=["en"],
    )
    online = AgentStatusChanged(agent_id=agent_id, status=AgentStatus.ONLINE, at=T0)
    return [(0.0, AGENT_EVENTS, profile), (0.0, AGENT_EVENTS, online)]


def traffic(conversations: int, every: float) -> list[tuple[float, str, ContractModel]]:
    """Customers writing every ``every`` seconds, every other one about an invoice."""
    return [
        (
            1 + n * every,
            CONVERSATION_ACTIVITY,
            activity(
                f"c{n:02d}",
                received_at=T0 + timedelta(seconds=1 + n * every),
                text="my invoice is wrong" if n % 2 == 0 else "a question",
            ),
        )
        for n in range(conversations)
    ]


async def recorded(policy: RoutingPolicy, until: float = 1500) -> list[str]:
    live = LiveRecording(policy, reply_after=20, resolve_after=200)
    team = [*agent("a-expert", 8), *agent("a-novice", 2), *agent("a-other", None)]
    await live.run([*team, *traffic(12, 15)], until)
    return live.lines


#: Offers agents answer by replying after 20, 25 or 30 s: a third of them time out first.
OFFERS = parse_policy(
    POLICY.format(relax=600) + "offers: {require_acceptance: true, timeout_seconds: 27}\n"
)


@pytest.mark.parametrize("policy", [CURRENT, OFFERS], ids=["assign", "offer"])
async def test_the_same_policy_reproduces_the_live_routers_decisions(policy: RoutingPolicy) -> None:
    trace = read_trace(await recorded(policy))
    model = HandlingModel.from_trace(trace)
    outcome = await replay(trace, policy, model, label="current", detector=FixedLanguage())
    report = compare(outcome, outcome, trace)
    same, total = report.fidelity or (0, 0)
    assert total > 12  # queued, assigned, reassigned after relaxation...
    assert same == total
    assert outcome.scripts["recorded"] >= 12
    assert "modelled" not in outcome.scripts
    last = [steps[-1].state.status for steps in outcome.decisions.values()]
    assert last.count(RouteStatus.RESOLVED) >= 6
    kinds = {d.kind for steps in outcome.decisions.values() for d in steps}
    assert ("requeued" in kinds) == (policy is OFFERS)  # offers that timed out


async def test_relaxing_skills_sooner_lowers_the_simulated_waits() -> None:
    trace = read_trace(await recorded(CURRENT))
    model = HandlingModel.from_trace(trace)
    current = await replay(trace, CURRENT, model, label="current", detector=FixedLanguage())
    candidate = await replay(trace, CANDIDATE, model, label="candidate", detector=FixedLanguage())
    report = compare(current, candidate, trace)
    before = report.current.rows[("billing", "email")]
    after = report.candidate.rows[("billing", "email")]
    assert after.wait_p90 is not None
    assert before.wait_p90 is not None
    assert after.wait_p90 < before.wait_p90
    assert sum(report.candidate.waits) < sum(report.current.waits)
    assert report.changed > 0
    assert report.examples
    assert report.examples[0].candidate is not None
    # Conversations given to another agent than in reality take a recorded handling time.
    assert candidate.scripts["modelled"] > 0


def test_percentiles_are_values_that_occurred() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0], 0.5) == 2.0
    assert percentile([5.0, 1.0, 3.0, 2.0], 0.9) == 5.0
    assert percentile([], 0.5) is None


def _write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


async def _policies(tmp_path: Path) -> tuple[Path, Path, Path]:
    current = tmp_path / "current.yaml"
    candidate = tmp_path / "candidate.yaml"
    current.write_text(POLICY.format(relax=600), encoding="utf-8")
    candidate.write_text(POLICY.format(relax=30), encoding="utf-8")
    return _write(tmp_path / "trace.jsonl", await recorded(CURRENT)), current, candidate


async def test_the_report_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    trace, current, candidate = await _policies(tmp_path)
    outputs = []
    for jobs in ("1", "2", "2"):  # one after the other, then side by side, twice
        policies = ["--policy", str(current), "--candidate", str(candidate)]
        args = cli.parser().parse_args(["simulate", str(trace), *policies, "--jobs", jobs])
        report, a, b = await cli.simulate(args)
        outputs.append((render_text(report, a, b), page(report, a, b)))
    assert outputs[0] == outputs[1] == outputs[2]
    text, html = outputs[0]
    assert "\nbilling  email" in text
    assert "<svg" in html
    assert "http" not in html.replace("http-equiv", "")


def test_a_policy_that_does_not_validate_gets_the_routers_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("queues:\n  - name: general\n    overflow_after_seconds: soon\n")
    trace = _write(tmp_path / "t.jsonl", [])
    assert cli.main(["simulate", str(trace), "--candidate", str(bad)]) == 2
    error = capsys.readouterr().err
    assert "switchboard: --candidate: invalid routing policy:" in error
    assert f"{bad}:3: queues[0].overflow_after_seconds:" in error


async def test_records_it_cannot_decode_are_counted_and_listed(tmp_path: Path) -> None:
    lines = await recorded(CURRENT, until=300)
    broken = [
        "not json at all",
        lines[0].replace('"support.agent.upserted"', '"support.agent.unknown"'),
        '{"topic": "support.inbound.v1", "data": {}}',
    ]
    trace = read_trace([*lines, *broken])
    assert trace.undecodable == 3
    assert [p.reason for p in trace.problems] == ["not_json", "unknown_type", "unknown_type"]
    assert [p.line for p in trace.problems] == [len(lines) + 1, len(lines) + 2, len(lines) + 3]
    model = HandlingModel.from_trace(trace)
    outcome = await replay(trace, CURRENT, model, label="current", detector=FixedLanguage())
    report = compare(outcome, outcome, trace)
    text = render_text(report, "a", "b")
    assert "Records that could not be decoded: 3" in text
    assert f"line {len(lines) + 1}: not_json" in text


def test_the_packaged_policy_is_the_default_current_one() -> None:
    assert load_policy() == cli._policy(None, "--policy")


async def test_another_agent_works_as_recorded_in_that_queue_and_channel() -> None:
    trace = read_trace(await recorded(CURRENT))
    model = HandlingModel.from_trace(trace)
    own = model.episodes["c00"][0]
    same = model.script("c00", 0, own.agent_id, own.queue, own.channel)
    assert same.source == "recorded"
    assert same.steps == own.steps
    other = model.script("c00", 0, "someone-else", own.queue, own.channel)
    assert other.source == "modelled"
    assert other == model.script("c00", 0, "someone-else", own.queue, own.channel)
    donors = [
        e
        for episodes in model.episodes.values()
        for e in episodes
        if (e.queue, e.channel) == (own.queue, own.channel) and e.resolved
    ]
    assert any(list(e.steps) == list(other.steps) for e in donors)
    # Nobody ever worked in that queue: the channel's episodes of any queue.
    assert model.script("c00", 0, "x", "nowhere", own.channel).source == "modelled"


async def test_a_range_of_a_file_keeps_the_team_it_starts_with() -> None:
    trace = read_trace(await recorded(CURRENT))
    since = T0 + timedelta(seconds=100)
    ranged = trace.between(since, T0 + timedelta(seconds=400))
    earlier = [r for r in ranged.records if r.time < since]
    assert len(earlier) == 6  # three agents' profile and presence
    assert all(since <= r.time < T0 + timedelta(seconds=400) for r in ranged.records[6:])
    outcome = await replay(
        ranged, CURRENT, HandlingModel.from_trace(ranged), label="current", detector=FixedLanguage()
    )
    assert any(d.state.agent_id for steps in outcome.decisions.values() for d in steps)


def _step(cid: str, seq: int, status: RouteStatus, at: float, agent: str | None = None) -> Decision:
    decided = T0 + timedelta(seconds=at)
    return Decision(
        state=state(cid, seq=seq, status=status, decided_at=decided, agent_id=agent),
        kind=None,
        reason={},
        token="replica-1",  # noqa: S106 - the replica that decided, not a secret
    )


def _outcome(decisions: dict[str, list[Decision]], replies: dict[str, float]) -> Outcome:
    return Outcome(
        label="current",
        policy=CURRENT,
        start=T0,
        end=T0 + timedelta(hours=2),
        decisions=decisions,
        opened={
            cid: activity(cid, received_at=T0, kind="opened" if cid != "old" else "message")
            for cid in decisions
        },
        first_reply={cid: T0 + timedelta(seconds=s) for cid, s in replies.items()},
        capacity_seconds={"email": 7200.0},
    )


def test_waits_end_when_an_agent_has_it_or_it_is_closed_and_offers_do_not_count() -> None:
    given_up = [
        _step("gone", 1, RouteStatus.WAITING, 0),
        _step("gone", 2, RouteStatus.RESOLVED, 60),
    ]
    expired = [
        _step("exp", 1, RouteStatus.WAITING, 0),
        _step("exp", 2, RouteStatus.OFFERED, 10, "a-1"),
        _step("exp", 3, RouteStatus.WAITING, 40),
    ]
    served = [
        _step("ok", 1, RouteStatus.WAITING, 0),
        _step("ok", 2, RouteStatus.OFFERED, 10, "a-1"),
        _step("ok", 3, RouteStatus.ASSIGNED, 25, "a-1"),
    ]
    end = T0 + timedelta(hours=2)
    assert wait_of(given_up, end) == 60
    assert wait_of(expired, end) == 7200  # the expired offer served nobody
    assert wait_of(served, end) == 25
    assert (still_waiting(given_up), still_waiting(expired), still_waiting(served)) == (
        False,
        True,
        False,
    )


def test_first_response_is_judged_as_the_sla_monitor_does() -> None:
    day = 86400
    resolved_unanswered = [
        _step("quiet", 1, RouteStatus.WAITING, 0),
        _step("quiet", 2, RouteStatus.RESOLVED, 600),
    ]
    decisions = {
        "fast": [_step("fast", 1, RouteStatus.WAITING, 0)],
        "slow": [_step("slow", 1, RouteStatus.WAITING, 0)],
        "quiet": resolved_unanswered,
        "old": [_step("old", 1, RouteStatus.WAITING, 0)],
    }
    outcome = _outcome(decisions, {"fast": 60, "slow": 400, "old": 9999})
    targets = {"email": 300.0}
    assert first_response_met(outcome, "fast", targets) is True
    assert first_response_met(outcome, "slow", targets) is False
    # Resolved within the target without a reply: the clock stopped, nothing to judge.
    assert first_response_met(outcome, "quiet", {"email": 900.0}) is None
    assert first_response_met(outcome, "quiet", targets) is False  # resolved after it
    assert first_response_met(outcome, "old", {"email": float(day)}) is None  # opened before
