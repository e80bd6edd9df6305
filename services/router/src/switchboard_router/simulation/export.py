"""Reading the contract topics of a time range from Kafka into trace lines (the shell
of ``switchboard export``, and of ``switchboard simulate --kafka``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from switchboard_common.cloudevents import header_map
from switchboard_common.contract import AGENT_EVENTS, TopicNames
from switchboard_common.kafka import aiokafka_security_options
from switchboard_common.settings import ServiceSettings
from switchboard_router.simulation.trace import SIMULATED_TOPICS

#: How long one fetch waits for records (ms): reading stops at the end offsets taken at
#: the start, so an idle topic costs one empty fetch.
FETCH_TIMEOUT_MS = 500
SEEK_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class _Line:
    time: str
    topic: str
    partition: int
    offset: int
    text: str


def trace_line(contract_topic: str, record: ConsumerRecord[bytes, bytes]) -> str:
    """A consumed record as a trace line; whatever is wrong with it is left for the
    reader to count (a value that is not JSON goes out as ``data: null``)."""
    headers = header_map(record.headers or ())
    data = None
    if record.value is not None:
        try:
            data = json.loads(record.value)
        except ValueError:
            data = None
    envelope = {
        "topic": contract_topic,
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "id": headers.get("ce_id"),
        "type": headers.get("ce_type"),
        "source": headers.get("ce_source"),
        "time": headers.get("ce_time"),
        "data": data,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))


def _moment(record: ConsumerRecord[bytes, bytes]) -> datetime | None:
    """The record's CloudEvents time; None when missing, unreadable or without a zone
    (such a record is listed as undecodable, as reading a trace file does)."""
    raw = header_map(record.headers or ()).get("ce_time")
    try:
        moment = None if raw is None else datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


async def export_lines(
    settings: ServiceSettings, since: datetime | None, until: datetime | None
) -> list[str]:
    """The records of ``[since, until)`` (by their CloudEvents time) of every topic a
    replay reads, in time order. Agent events from before ``since`` are kept as each
    agent's latest profile and presence then, so agents are known from the start."""
    names = TopicNames(settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **aiokafka_security_options(settings),
    )
    try:
        await consumer.start()
        lines: list[_Line] = []
        before: dict[tuple[str, str], _Line] = {}
        # A consumer without subscriptions knows no topic yet: ask the cluster about all
        # of them before the first assignment narrows what it asks (as the benchmarks do;
        # aiokafka has no public call for it).
        await consumer._client.force_metadata_update()
        partitions = {
            topic: sorted(consumer.partitions_for_topic(names(topic)) or ())
            for topic in SIMULATED_TOPICS
        }
        for contract_topic in SIMULATED_TOPICS:
            deployed = names(contract_topic)
            tps = [TopicPartition(deployed, p) for p in partitions[contract_topic]]
            if not tps:
                continue
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await _seek(consumer, tps, None if contract_topic == AGENT_EVENTS else since)
            pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            continue
                        moment = _moment(record)
                        text = trace_line(contract_topic, record)
                        line = _Line(
                            "" if moment is None else moment.isoformat(),
                            contract_topic,
                            tp.partition,
                            record.offset,
                            text,
                        )
                        if until is not None and moment is not None and moment >= until:
                            continue
                        if since is not None and moment is not None and moment < since:
                            if contract_topic == AGENT_EVENTS:
                                kind = header_map(record.headers or ()).get("ce_type", "")
                                key = record.key.decode("utf-8", "replace") if record.key else ""
                                before[(key, kind)] = line
                            continue
                        lines.append(line)
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        kept = [
            line
            for (_, kind), line in sorted(before.items())
            if kind.endswith(("agent.upserted", "agent.status_changed"))
        ]
        ordered = sorted([*kept, *lines], key=lambda x: (x.time, x.topic, x.partition, x.offset))
        return [line.text for line in ordered]
    finally:
        await consumer.stop()


async def _seek(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None
) -> None:
    if since is None:
        await consumer.seek_to_beginning(*tps)
        return
    # Kafka's timestamps are the producers' clocks, a little after the CloudEvents time:
    # start a margin earlier and let the CloudEvents time decide.
    ms = int((since - SEEK_MARGIN).timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, ms))
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        at = found.get(tp)
        consumer.seek(tp, at.offset if at is not None else ends[tp])
