"""Pipeline benchmarks: support.inbound.v1 → support.assignments.v1, beside bare baselines.

Every case measures the system and the baselines in the same run on the same broker and
topic shape (3 partitions), each side in its own process. The baseline the targets read
against is ``essential.py``, the bare essential pipeline (consume → one ``insert_many``
per batch → produce); ``passthrough.py`` (consume → produce) is reported beside it for
reference.

- ``throughput``: a backlog of N new-customer messages is produced as fast as the broker
  takes them; messages/s = N / (last decision − first acknowledgement). The system is the
  router (identity, then the timeline that routes what it stores) with online agents.
  Also the CPU each side's process used per message (``/proc/<pid>/stat``) over the same
  window.
- ``latency``: messages offered at a fixed rate; per message, the time from Kafka's
  acknowledgement of the inbound record to the arrival of its decision (the system's
  ``reason.message_id``) or of its forwarded copy (a baseline), p50/p99/p99.9.
- ``operations``: the router's database work per inbound message, counted with PyMongo
  command monitoring (``probed_router.py``): documents inserted, updated, deleted or read
  (statements inside bulk commands included) and commands, for N fresh customers opening
  a conversation, then for the same customers writing again (follow-ups).

    uv run python bench/pipeline.py throughput --messages 3000 --json out.json
    uv run python bench/pipeline.py latency --rate 500 --duration 15 --json out.json
    uv run python bench/pipeline.py operations --customers 300 --json out.json

Also reports the peak RSS of every process it ran (``/proc/<pid>/status`` VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from switchboard_common.cloudevents import encode, event_headers
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CUSTOMER_MESSAGES,
    INBOUND,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    Channel,
    MessageReceived,
    Sender,
    SenderKind,
    TopicNames,
)
from switchboard_common.mongo import Document
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.database_operations import HTTP_PATH
from switchboard_devkit.running.processes import cpu_seconds, peak_rss_mb
from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.infra import ensure_infra
from switchboard_devkit.testing.kafka_probe import unique

ROOT = Path(__file__).resolve().parent.parent
TEXTS = (
    "Hello, my order 4411 has not arrived yet, can you check?",
    "I was charged twice on my last invoice, please refund one of them.",
    "Hola, no puedo entrar en mi cuenta desde ayer.",
    "The app crashes when I open the settings page.",
    "Bonjour, je voudrais changer mon adresse de livraison.",
    "Can I upgrade my plan to the business tier?",
)


@dataclass(frozen=True)
class Outbound:
    message_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def messages(count: int, run: str, *, follow_up_of: str | None = None) -> list[Outbound]:
    """New customers, email and WhatsApp, realistic short texts; pre-encoded. With
    ``follow_up_of``, the customers of that earlier run write again in their conversation
    (an email replies to their first message)."""
    now = datetime.now(UTC)
    customers = follow_up_of or run
    out = []
    for i in range(count):
        whatsapp = i % 3 == 2
        message_id = f"bench:{run}:{i}"
        reply_to = f"bench:{follow_up_of}:{i}" if follow_up_of else None
        if whatsapp:
            value = f"+3460{hash((customers, i)) % 10_000_000:07d}"
            sender = Sender(kind=SenderKind.PHONE, value=value, display_name=None)
            key = f"whatsapp:{value}"
        else:
            value = f"customer{i}.{customers}@bench.example.com"
            sender = Sender(kind=SenderKind.EMAIL, value=value, display_name=None)
            key = f"email:{value}"
        event = MessageReceived(
            message_id=message_id,
            channel=Channel.WHATSAPP if whatsapp else Channel.EMAIL,
            provider_message_id=message_id,
            provider_thread_id=None,
            sender=sender,
            received_at=now,
            sent_at=None,
            subject=None if whatsapp else "Re: Help needed" if reply_to else "Help needed",
            text=TEXTS[i % len(TEXTS)],
            account="support@support.example.com" if not whatsapp else "1055000001",
            in_reply_to=None if whatsapp else reply_to,
            references=[reply_to] if reply_to and not whatsapp else [],
        )
        headers = event_headers(event, source="/bench", event_id=message_id)
        out.append(
            Outbound(
                message_id,
                key.encode(),
                encode(event),
                [(k, v.encode()) for k, v in headers.items()],
            )
        )
    return out


async def produce(
    bootstrap: str, topic: str, items: Sequence[Outbound], rate: float | None
) -> dict[str, float]:
    """Send every item (paced at ``rate`` per second, or as fast as possible); return the
    monotonic time at which Kafka acknowledged each (acks=all)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    acked: dict[str, float] = {}
    try:
        futures = []
        started = time.monotonic()
        for i, item in enumerate(items):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            future = await producer.send(
                topic, value=item.value, key=item.key, headers=item.headers
            )
            future.add_done_callback(
                lambda f, m=item.message_id: (
                    acked.setdefault(m, time.monotonic()) if not f.exception() else None
                )
            )
            futures.append(future)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return acked


class Decisions:
    """Reads a topic from its current end and notes when each message's output arrives."""

    def __init__(self, bootstrap: str, topic: str, *, system: bool) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
        )
        self.system = system
        self.arrived: dict[str, float] = {}
        self._progress = asyncio.Event()

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.seek_to_end()
        # Make sure positions are resolved before anything is produced.
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)

    async def follow(self) -> None:
        """Note every arrival as it comes, until cancelled. Runs while the messages are
        produced: an arrival noted only after producing ended would count the rest of
        the run as latency."""
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    message_id = self._message_id(record.value or b"{}")
                    if message_id:
                        self.arrived.setdefault(message_id, now)
            self._progress.set()

    async def until(self, expected: set[str], timeout: float) -> None:
        """Wait (``follow`` running) until every expected message arrived, or timeout."""
        deadline = time.monotonic() + timeout
        while not expected <= self.arrived.keys() and time.monotonic() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=1.0)

    def _message_id(self, value: bytes) -> str | None:
        payload = json.loads(value)
        if self.system:
            reason = payload.get("reason") or {}
            found = reason.get("message_id")
        else:
            found = payload.get("message_id")
        return found if isinstance(found, str) else None

    async def stop(self) -> None:
        await self.consumer.stop()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --------------------------------------------------------------------------- the sides


class RouterSide:
    """The router (identity, timeline and routing) as a process, with online agents.
    ``probed``: run it through ``probed_router.py``, which counts its database commands."""

    name = "router"

    def __init__(
        self, bootstrap: str, mongodb_url: str, agents: int, capacity: int, *, probed: bool = False
    ) -> None:
        modules = {"router": "bench.probed_router"} if probed else {}
        # Probed, the periodic re-read of agents and queue (every 30 s) and the gauges'
        # queue and load aggregation (every 5 s), which are not per message, are held
        # off so that a phase counts only the work its messages cause.
        extra_env = (
            {"ROUTER_ASSIGNMENT_REFRESH_SECONDS": "3600", "ROUTER_GAUGES_SECONDS": "3600"}
            if probed
            else {}
        )
        self.stack = Stack(bootstrap, mongodb_url, extra_env=extra_env, modules=modules)
        self.agents = agents
        self.capacity = capacity

    @property
    def topics(self) -> TopicNames:
        return self.stack.topics

    @property
    def bootstrap(self) -> str:
        return self.stack.kafka_bootstrap

    async def start(self) -> None:
        await asyncio.to_thread(self.stack.start, "router")
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(self.agents):
                agent_id = f"agent-{i:03d}"
                for event in (
                    AgentUpserted(
                        agent_id=agent_id,
                        display_name=f"Agent {i}",
                        skills={"billing": 5 + i % 5, "technical": 4 + i % 6},
                        capacity={Channel.EMAIL: self.capacity, Channel.WHATSAPP: self.capacity},
                        languages=["en", "es", "fr"],
                    ),
                    AgentStatusChanged(agent_id=agent_id, status=AgentStatus.ONLINE),
                ):
                    headers = event_headers(event, source="/bench")
                    await producer.send_and_wait(
                        self.topics(AGENT_EVENTS),
                        value=encode(event),
                        key=agent_id.encode(),
                        headers=[(k, v.encode()) for k, v in headers.items()],
                    )
        finally:
            await producer.stop()
        await self._wait_for_agents()

    async def _wait_for_agents(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.stack.url('router')}/agents"
        async with httpx.AsyncClient(timeout=5, headers=self.stack.router_auth()) as http:
            while time.monotonic() < deadline:
                response = await http.get(url, params={"limit": 500})
                items = response.json().get("items", []) if response.status_code == 200 else []
                if sum(1 for a in items if a.get("status") == "online") >= self.agents:
                    return
                await asyncio.sleep(0.5)
        raise TimeoutError("the router did not see every agent online")

    def pids(self) -> dict[str, int]:
        return {
            name: p.process.pid for name, p in self.stack.services.items() if p.process is not None
        }

    async def stop(self) -> None:
        await asyncio.to_thread(self.stack.stop)
        await asyncio.to_thread(self.stack.remove_data)


class BaselineSide:
    """A bare baseline (``bench/<name>.py``) as a process on its own topics; the essential
    pipeline also gets a database of its own."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        mongodb_url: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.mongodb_url = mongodb_url
        self.options = list(options)
        self.database = unique("bench_essential_")
        self.topics = TopicNames(f"{unique(name[0])}.")
        self.process: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        await create_topics(self.bootstrap, prefix=self.topics.prefix, partitions=3)
        extra = []
        if self.mongodb_url is not None:
            extra = ["--mongodb-url", self.mongodb_url, "--database", self.database]
        self.process = subprocess.Popen(  # noqa: ASYNC220 - start-up, not the measured path
            [
                sys.executable,
                "-m",
                f"bench.{self.name}",
                "--bootstrap",
                self.bootstrap,
                "--prefix",
                self.topics.prefix,
                *extra,
                *self.options,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        await asyncio.to_thread(self.process.stdout.readline)  # "<name> ready"
        await asyncio.sleep(3)  # its consumer joins the group and gets partitions

    def pids(self) -> dict[str, int]:
        return {self.name: self.process.pid} if self.process else {}

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 20)
        await delete_topics(self.bootstrap, prefix=self.topics.prefix)
        if self.mongodb_url:
            client: AsyncMongoClient[Document] = AsyncMongoClient(self.mongodb_url)
            try:
                await client.drop_database(self.database)
            finally:
                await client.close()


Side = RouterSide | BaselineSide


# --------------------------------------------------------------------------- cases


async def measure(side: Side, count: int, rate: float | None, run: str) -> dict[str, Any]:
    items = messages(count, f"{run}-{side.name}")
    reader = Decisions(
        side.bootstrap, side.topics(ASSIGNMENTS), system=isinstance(side, RouterSide)
    )
    await reader.start()
    following = asyncio.create_task(reader.follow())
    cpu_before = {name: cpu_seconds(pid) for name, pid in side.pids().items()}
    try:
        acked = await produce(side.bootstrap, side.topics(INBOUND), items, rate)
        await reader.until(set(acked), timeout=max(120.0, count / 20))
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await reader.stop()
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in side.pids().items()}
    done = [m for m in acked if m in reader.arrived]
    latencies = [(reader.arrived[m] - acked[m]) * 1000 for m in done]
    elapsed = max(reader.arrived[m] for m in done) - min(acked.values()) if done else float("nan")
    return {
        "sent": len(items),
        "acknowledged": len(acked),
        "decided": len(done),
        "throughput": len(done) / elapsed if done else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "p999_ms": percentile(latencies, 99.9),
        # From the first produce to the last arrival; the process idles only at the edges.
        "cpu_ms_per_message": {
            name: 1000 * seconds / len(done) if done else float("nan")
            for name, seconds in cpu.items()
        },
        "peak_rss_mb": {name: peak_rss_mb(pid) for name, pid in side.pids().items()},
    }


def against(
    field: str, system: dict[str, Any], baseline: dict[str, Any], unit: str
) -> dict[str, Any]:
    """One report row: the system's figure beside a baseline's, and their ratio."""
    return {
        "unit": unit,
        "system": system[field],
        "baseline": baseline[field],
        "ratio": system[field] / baseline[field],
    }


async def run_case(args: argparse.Namespace) -> dict[str, Any]:
    infra = ensure_infra()
    run = unique("r")
    results: dict[str, Any] = {}
    try:
        sides: list[Side] = [
            RouterSide(infra.kafka_bootstrap, infra.mongodb_url, args.agents, args.capacity),
            BaselineSide("essential", infra.kafka_bootstrap, infra.mongodb_url),
            BaselineSide("passthrough", infra.kafka_bootstrap),
        ]
        for side in sides:
            await side.start()
            try:
                # A short warm-up (imports, connections, first rebalance) not counted.
                await measure(side, 50, None, f"{run}-warm")
                if args.case == "throughput":
                    results[side.name] = await measure(side, args.messages, None, run)
                else:
                    count = int(args.rate * args.duration)
                    results[side.name] = await measure(side, count, args.rate, run)
            finally:
                await side.stop()
    finally:
        infra.close()
    system, essential, passthrough = results["router"], results["essential"], results["passthrough"]
    if args.case == "throughput":
        unit = "messages/s"
        figures = {
            "case": "pipeline_throughput",
            **against("throughput", system, essential, unit),
            "rows": {
                "passthrough": against("throughput", system, passthrough, unit),
                "cpu": {
                    "unit": "ms CPU per message",
                    "system": system["cpu_ms_per_message"]["router"],
                    "baseline": essential["cpu_ms_per_message"]["essential"],
                    "ratio": system["cpu_ms_per_message"]["router"]
                    / essential["cpu_ms_per_message"]["essential"],
                },
            },
        }
    else:
        unit = "ms p99 (ack → decision)"
        figures = {
            "case": f"pipeline_latency_{int(args.rate)}",
            "offered_rate": args.rate,
            **against("p99_ms", system, essential, unit),
            "rows": {"passthrough": against("p99_ms", system, passthrough, unit)},
        }
    return {**figures, "detail": results, "agents": args.agents, "pid": os.getpid()}


# --------------------------------------------------------------------------- operations


class RouterProbe:
    """Reads a probed router's running totals: database work, consumed batches, CPU."""

    def __init__(self, side: RouterSide, http: httpx.AsyncClient) -> None:
        self.side = side
        self.http = http
        self.url = side.stack.url("router")

    async def snapshot(self) -> dict[str, Any]:
        response = await self.http.get(self.url + HTTP_PATH)
        response.raise_for_status()  # a refusal's body is no snapshot
        operations = response.json()
        metrics = (await self.http.get(self.url + "/metrics")).text
        processed: dict[str, float] = {}
        batches: dict[str, float] = {}
        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                topic = sample.labels.get("topic", "")
                if sample.name == "switchboard_consumer_records_total":
                    if sample.labels.get("outcome") == "processed":
                        processed[topic] = sample.value
                elif sample.name == "switchboard_consumer_batch_size_count":
                    batches[topic] = sample.value
        return {
            **operations,
            "processed": processed,
            "batches": batches,
            "cpu_seconds": cpu_seconds(self.side.pids()["router"]),
        }

    async def settled(self, before: dict[str, Any], count: int, timeout: float) -> dict[str, Any]:
        """Wait until the timeline (which routes what it stores) processed ``count`` more
        customer messages than at ``before`` and the database work stopped moving;
        return the snapshot."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            now = await self.snapshot()
            done = _delta(now["processed"], before["processed"]).get(CUSTOMER_MESSAGES, 0)
            if done >= count and last is not None and now["commands"] == last["commands"]:
                return now
            last = now
            await asyncio.sleep(0.5)
        raise TimeoutError("the router did not finish the phase")


#: The topics the two pipeline steps consume: identity, then the timeline, which routes
#: what it stores (the router also reads agent events for its views).
STAGES = (INBOUND, CUSTOMER_MESSAGES)


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def per_message(before: dict[str, Any], after: dict[str, Any], count: int) -> dict[str, Any]:
    """One phase's database work per inbound message, from two probe snapshots."""
    documents = _delta(after["documents"], before["documents"])
    commands = _delta(after["commands"], before["commands"])
    stages = _delta(after["batches"], before["batches"])
    batches = {topic: n for topic, n in stages.items() if topic in STAGES}
    return {
        "messages": count,
        "documents_per_message": sum(documents.values()) / count,
        "commands_per_message": sum(commands.values()) / count,
        # Batches of both consuming steps (inbound, customer messages) together.
        "commands_per_batch": sum(commands.values()) / max(1.0, sum(batches.values())),
        "documents": documents,
        "commands": commands,
        "batches": batches,
        "housekeeping_commands": _delta(after["housekeeping"], before["housekeeping"]),
        # Per message, by command and collection: where the documents go.
        "documents_by_collection": {
            name: round(n / count, 3)
            for name, n in sorted(_delta(after["by_collection"], before["by_collection"]).items())
        },
        "cpu_ms_per_message": 1000 * (after["cpu_seconds"] - before["cpu_seconds"]) / count,
    }


async def operations_case(args: argparse.Namespace) -> dict[str, Any]:
    infra = ensure_infra()
    run = unique("r")
    side = RouterSide(
        infra.kafka_bootstrap, infra.mongodb_url, args.agents, args.capacity, probed=True
    )
    try:
        await side.start()
        try:
            await measure(side, 50, None, f"{run}-warm")
            # The probe's route is a router route: it needs the read token too.
            async with httpx.AsyncClient(timeout=10, headers=side.stack.router_auth()) as http:
                probe = RouterProbe(side, http)
                phases: dict[str, Any] = {}
                start = await probe.settled(await probe.snapshot(), 0, 60)
                for phase, items in (
                    ("opening", messages(args.customers, f"{run}-open")),
                    (
                        "follow_up",
                        messages(args.customers, f"{run}-again", follow_up_of=f"{run}-open"),
                    ),
                ):
                    await produce(side.bootstrap, side.topics(INBOUND), items, None)
                    end = await probe.settled(start, len(items), max(120.0, len(items) / 10))
                    phases[phase] = per_message(start, end, len(items))
                    start = end
            rss = {name: peak_rss_mb(pid) for name, pid in side.pids().items()}
        finally:
            await side.stop()
    finally:
        infra.close()
    opening, follow_up = phases["opening"], phases["follow_up"]
    none = {"baseline": None, "ratio": None}
    return {
        "case": "database_operations",
        "unit": "documents per message",
        "system": opening["documents_per_message"],
        **none,
        "rows": {
            "follow_up": {
                "unit": "documents per message",
                "system": follow_up["documents_per_message"],
                **none,
            },
            "opening_batches": {
                "unit": "commands per batch",
                "system": opening["commands_per_batch"],
                **none,
            },
            "follow_up_batches": {
                "unit": "commands per batch",
                "system": follow_up["commands_per_batch"],
                **none,
            },
        },
        "detail": phases,
        "customers": args.customers,
        "peak_rss_mb": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["throughput", "latency", "operations"])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--customers", type=int, default=300, help="operations: per phase")
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--capacity", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    case = operations_case if args.case == "operations" else run_case
    figures = asyncio.run(case(args))
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
