"""Recorded traffic as the simulator reads it: contract records in time order.

A trace file holds one CloudEvents record per line (JSON): the contract topic it was
read from, the record key, the CloudEvents attributes and the payload as ``data``:

    {"topic": "support.agent-events.v1", "key": "a-1", "id": "…", "type":
     "support.agent.status_changed", "source": "/frontend", "time": "2026-…Z", "data": {…}}

Every line is checked by the contract's own ``cloudevents.decode``, as a consumer would
check the record; a line that does not decode is counted and listed, never fatal (one
bad record in a day of traffic should not hide the other hundred thousand).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from switchboard_common.cloudevents import (
    SPECVERSION,
    CloudEventAttributes,
    DecodeError,
    rfc3339,
)
from switchboard_common.cloudevents import decode as decode_record
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    SLA_EVENTS,
    TOPICS_BY_NAME,
    AgentStatusChanged,
    AgentUpserted,
)
from switchboard_common.contract.events import ContractModel

#: The contract topics a replay reads: what customers and agents did (activity, agent
#: and conversation events), SLA warnings, and the decisions the router made (which
#: agent had each conversation, and when, for the handling-time model and fidelity).
SIMULATED_TOPICS: tuple[str, ...] = (
    CONVERSATION_ACTIVITY,
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    SLA_EVENTS,
    ASSIGNMENTS,
)

#: Undecodable lines listed in full; beyond this only counted.
LISTED_PROBLEMS = 50


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One recorded contract event: when, on which topic, under which key and id."""

    topic: str
    key: str
    attributes: CloudEventAttributes
    event: ContractModel

    @property
    def time(self) -> datetime:
        return self.attributes.time


@dataclass(frozen=True, slots=True)
class Problem:
    """A line that could not be decoded: where, the bounded reason, and what is wrong."""

    line: int
    reason: str
    message: str


@dataclass
class Trace:
    """Decoded records in replay order (time, then position in the input), and the
    lines that did not decode."""

    records: list[TraceRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    undecodable: int = 0

    @property
    def start(self) -> datetime | None:
        return self.records[0].time if self.records else None

    @property
    def end(self) -> datetime | None:
        return self.records[-1].time if self.records else None

    def between(self, since: datetime | None, until: datetime | None) -> Trace:
        """The records of a time range (``since`` included, ``until`` excluded), and each
        agent's latest profile and presence from before it (as ``switchboard export``
        keeps them), so the team is known from the start."""
        state: dict[tuple[str, str], TraceRecord] = {}
        kept: list[TraceRecord] = []
        for record in self.records:
            if until is not None and record.time >= until:
                continue
            if since is None or record.time >= since:
                kept.append(record)
            elif isinstance(record.event, AgentUpserted | AgentStatusChanged):
                state[(record.key, record.attributes.type)] = record
        earlier = sorted(state.values(), key=lambda r: r.time)
        return Trace([*earlier, *kept], list(self.problems), self.undecodable)


def record_line(topic: str, key: str, attributes: CloudEventAttributes, data: bytes) -> str:
    """One trace line (no newline) from a record's parts; ``data`` is the JSON payload."""
    head = json.dumps(
        {
            "topic": topic,
            "key": key,
            "id": attributes.id,
            "type": attributes.type,
            "source": attributes.source,
            "time": rfc3339(attributes.time),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    # The payload is spliced in as the producer wrote it (no re-encoding: a float or a
    # datetime comes back exactly as it went out).
    return f'{head[:-1]},"data":{data.decode("utf-8")}}}'


def event_line(topic: str, key: str, attributes: CloudEventAttributes, event: ContractModel) -> str:
    """``record_line`` for an event in hand (samples, tests)."""
    return record_line(topic, key, attributes, event.model_dump_json().encode())


def decode_line(text: str) -> TraceRecord:
    """One trace line decoded as the contract says; raises ``DecodeError``."""
    try:
        envelope = json.loads(text)
    except json.JSONDecodeError:
        raise DecodeError("not_json", "line is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise DecodeError("not_json", "line is not a JSON object")
    topic = envelope.get("topic")
    spec = TOPICS_BY_NAME.get(topic) if isinstance(topic, str) else None
    if spec is None or topic not in SIMULATED_TOPICS:
        raise DecodeError("unknown_type", f"topic {topic!r} is not one the simulator reads")
    headers = [
        ("ce_specversion", SPECVERSION),
        ("ce_id", envelope.get("id")),
        ("ce_type", envelope.get("type")),
        ("ce_source", envelope.get("source")),
        ("ce_time", envelope.get("time")),
    ]
    encoded = [(k, v.encode() if isinstance(v, str) else None) for k, v in headers]
    data = envelope.get("data")
    value = None if data is None else json.dumps(data).encode()
    attributes, event = decode_record(spec, encoded, value)
    key = envelope.get("key")
    return TraceRecord(spec.name, key if isinstance(key, str) else "", attributes, event)


def read_trace(lines: Iterable[str]) -> Trace:
    """Decode trace lines (blank ones skipped) into a trace in replay order."""
    trace = Trace()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            trace.records.append(decode_line(text))
        except DecodeError as error:
            trace.undecodable += 1
            if len(trace.problems) < LISTED_PROBLEMS:
                trace.problems.append(Problem(number, error.reason, str(error)))
    # Stable: records of the same moment keep the order they were read in.
    trace.records.sort(key=lambda r: r.time)
    return trace
