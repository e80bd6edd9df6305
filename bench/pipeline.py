"""Pipeline benchmarks: support.inbound.v1 → support.assignments.v1, beside a bare passthrough.

Two cases, each measuring the system and the baseline in the same run on the same broker
and topic shape (3 partitions), each side in its own process:

- ``throughput``: a backlog of N new-customer messages is produced as fast as the broker
  takes them; messages/s = N / (last decision − first acknowledgement). The system is the
  router (all three stages) with online agents; the baseline is ``passthrough.py``, an
  aiokafka consume → produce loop that commits after its acks.
- ``latency``: messages offered at a fixed rate; per message, the time from Kafka's
  acknowledgement of the inbound record to the arrival of its decision (the system's
  ``reason.message_id``) or of its forwarded copy (the baseline), p50/p99/p99.9.

    uv run python bench/pipeline.py throughput --messages 3000 --json out.json
    uv run python bench/pipeline.py latency --rate 500 --duration 15 --json out.json

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

from switchboard_common.cloudevents import encode, event_headers
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
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
from switchboard_common.topics import create_topics
from switchboard_devkit.running.processes import peak_rss_mb
from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.infra import ensure_infra
from switchboard_devkit.testing.kafka_probe import unique

HERE = Path(__file__).parent
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


def messages(count: int, run: str) -> list[Outbound]:
    """New customers, email and WhatsApp, realistic short texts; pre-encoded."""
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        whatsapp = i % 3 == 2
        message_id = f"bench:{run}:{i}"
        if whatsapp:
            value = f"+3460{hash((run, i)) % 10_000_000:07d}"
            sender = Sender(kind=SenderKind.PHONE, value=value, display_name=None)
            key = f"whatsapp:{value}"
        else:
            value = f"customer{i}.{run}@bench.example.com"
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
            subject=None if whatsapp else "Help needed",
            text=TEXTS[i % len(TEXTS)],
            account="support@support.example.com" if not whatsapp else "1055000001",
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


# --------------------------------------------------------------------------- the two sides


class RouterSide:
    """The router (three stages) as a process, with online agents."""

    name = "router"

    def __init__(self, bootstrap: str, mongodb_url: str, agents: int, capacity: int) -> None:
        self.stack = Stack(bootstrap, mongodb_url)
        self.agents = agents
        self.capacity = capacity

    @property
    def topics(self) -> TopicNames:
        return self.stack.topics

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
        async with httpx.AsyncClient(timeout=5) as http:
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


class PassthroughSide:
    """``passthrough.py`` as a process on its own topics."""

    name = "passthrough"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.topics = TopicNames(f"{unique('p')}.")
        self.process: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        await create_topics(self.bootstrap, prefix=self.topics.prefix, partitions=3)
        self.process = subprocess.Popen(  # noqa: ASYNC220 - start-up, not the measured path
            [
                sys.executable,
                str(HERE / "passthrough.py"),
                "--bootstrap",
                self.bootstrap,
                "--prefix",
                self.topics.prefix,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        await asyncio.to_thread(self.process.stdout.readline)  # "passthrough ready"
        await asyncio.sleep(3)  # its consumer joins the group and gets partitions

    def pids(self) -> dict[str, int]:
        return {"passthrough": self.process.pid} if self.process else {}

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 20)


# --------------------------------------------------------------------------- cases


async def measure(
    side: RouterSide | PassthroughSide, count: int, rate: float | None, run: str
) -> dict[str, Any]:
    bootstrap = side.stack.kafka_bootstrap if isinstance(side, RouterSide) else side.bootstrap
    items = messages(count, f"{run}-{side.name}")
    reader = Decisions(bootstrap, side.topics(ASSIGNMENTS), system=isinstance(side, RouterSide))
    await reader.start()
    following = asyncio.create_task(reader.follow())
    try:
        acked = await produce(bootstrap, side.topics(INBOUND), items, rate)
        await reader.until(set(acked), timeout=max(120.0, count / 20))
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await reader.stop()
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
        "peak_rss_mb": {name: peak_rss_mb(pid) for name, pid in side.pids().items()},
    }


async def run_case(args: argparse.Namespace) -> dict[str, Any]:
    infra = ensure_infra()
    run = unique("r")
    results: dict[str, Any] = {}
    try:
        sides: list[RouterSide | PassthroughSide] = [
            RouterSide(infra.kafka_bootstrap, infra.mongodb_url, args.agents, args.capacity),
            PassthroughSide(infra.kafka_bootstrap),
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
    system, baseline = results["router"], results["passthrough"]
    if args.case == "throughput":
        figures = {
            "case": "pipeline_throughput",
            "unit": "messages/s",
            "system": system["throughput"],
            "baseline": baseline["throughput"],
            "ratio": system["throughput"] / baseline["throughput"],
        }
    else:
        figures = {
            "case": f"pipeline_latency_{int(args.rate)}",
            "unit": "ms p99 (ack → decision)",
            "offered_rate": args.rate,
            "system": system["p99_ms"],
            "baseline": baseline["p99_ms"],
            "ratio": system["p99_ms"] / baseline["p99_ms"],
        }
    return {**figures, "detail": results, "agents": args.agents, "pid": os.getpid()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["throughput", "latency"])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--capacity", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = asyncio.run(run_case(args))
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
