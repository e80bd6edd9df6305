"""``switchboard export`` → ``switchboard simulate`` on real Kafka: a sample recording
published to this test's topics (with a record no consumer could decode) is exported
and replayed, and the report is the one the recording itself gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_common.contract import AGENT_EVENTS, TopicNames
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_router.assignment.policy import parse_policy
from switchboard_router.simulation import cli
from switchboard_router.simulation.export import export_lines
from switchboard_router.simulation.render import text
from switchboard_router.simulation.sample import sample_trace
from switchboard_router.simulation.trace import TraceRecord, read_trace

pytestmark = pytest.mark.integration

POLICY = """
classification:
  language: {detect: false, default: en}
  topics: [{name: billing, keywords: [invoice, refund, charged], skills: {billing: 1}}]
queues:
  - name: billing
    when: {skills: [billing]}
    steps: [{after_seconds: 0, preferred: {billing: 5}}, {after_seconds: RELAX, preferred: {}}]
  - name: general
"""


async def _report(args: list[str]) -> str:
    report, current, candidate = await cli.simulate(cli.parser().parse_args(args))
    return text(report, current, candidate)


async def test_export_then_simulate_round_trip(
    probe: TopicProbe,
    topics: TopicNames,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)
    current = tmp_path / "current.yaml"
    candidate = tmp_path / "candidate.yaml"
    current.write_text(POLICY.replace("RELAX", "600"))
    candidate.write_text(POLICY.replace("RELAX", "30"))
    lines = await sample_trace(
        parse_policy(current.read_text()), conversations=60, agents=4, hours=1
    )
    original = tmp_path / "sample.jsonl"
    original.write_text("".join(f"{line}\n" for line in lines))
    for record in read_trace(lines).records:
        await probe.send(
            record.topic,
            record.event,
            key=record.key,
            event_id=record.attributes.id,
            time=record.time,
            source=record.attributes.source,
        )
    await probe.send_raw("support.conversation-events.v1", b"{not json", key="c-x")

    exported = await export_lines(cli._Settings.load(), None, None)
    trace = read_trace(exported)
    assert len(trace.records) == len(lines)
    assert trace.undecodable == 1
    assert trace.problems[0].reason == "bad_headers"
    assert {(r.topic, r.attributes.id) for r in trace.records} == {
        (r.topic, r.attributes.id) for r in read_trace(lines).records
    }

    # A range: what happened in it, and each agent's latest profile and presence before it.
    since = trace.records[len(trace.records) // 2].time
    ranged = read_trace(await export_lines(cli._Settings.load(), since, None))
    earlier = [r for r in ranged.records if r.time < since]
    assert all(r.topic == AGENT_EVENTS for r in earlier)
    kinds = [(r.key, r.attributes.type) for r in earlier]
    assert len(kinds) == len(set(kinds))
    assert {key for key, _ in kinds} == {r.key for r in trace.records if r.topic == AGENT_EVENTS}

    def ids(records: list[TraceRecord]) -> list[tuple[str, str]]:
        return sorted((r.topic, r.attributes.id) for r in records if r.time >= since)

    assert ids(ranged.records) == ids(trace.records)

    path = tmp_path / "exported.jsonl"
    path.write_text("".join(f"{line}\n" for line in exported))
    policies = ["--policy", str(current), "--candidate", str(candidate)]
    from_file = await _report(["simulate", str(original), *policies])
    from_export = await _report(["simulate", str(path), *policies])
    from_kafka = await _report(["simulate", "--kafka", *policies])
    assert "Fidelity: the current policy's replay made" in from_file
    # The same replay, plus the one record nobody could decode.
    assert from_export == from_kafka
    assert from_export.split("Records that could not be decoded")[0] == from_file
