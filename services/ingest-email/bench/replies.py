"""Benchmark: agent replies delivered by email per second.

Usage: ``uv run python services/ingest-email/bench/replies.py --replies 1000 --json out.json``

Both sides send the same messages to the same local relay, in the same run:

- system: ``python -m switchboard_ingest_email`` as its own process with
  ``OUTBOUND_SMTP_URL`` set, consuming ``ReplyDelivery`` orders from
  ``switchboard.router.reply-deliveries.v1`` (produced up front, as a backlog): for each
  reply a record before the relay sees it and after, the submission, and its statuses
  acknowledged by Kafka; replies/s = N / (first order produced → last message at the relay);
- baseline: a bare SMTP client (``smtplib``, one connection, as the system uses per batch)
  submitting the same composed messages one after another.

Writes ``{"case", "unit", "system", "baseline", "ratio", ...}`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import smtplib
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import MongoClient

from switchboard_common.cloudevents import encode, event_headers
from switchboard_common.contract import REPLY_DELIVERIES, Channel, ReplyDelivery, TopicNames
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import cpu_seconds, peak_rss_mb
from switchboard_devkit.servers.infra import ensure_infra
from switchboard_devkit.servers.relay import LocalRelay
from switchboard_ingest_email.replies import compose

TEXT = "Hello,\n\nyour order left our warehouse today and arrives on Monday.\n\nBest regards\n" * 4


def orders(count: int, run: str) -> list[ReplyDelivery]:
    now = datetime.now(UTC)
    return [
        ReplyDelivery(
            reply_id=f"{run}-{n}",
            conversation_id=f"co-{run}-{n % 200}",
            customer_id=f"cu-{n % 200}",
            agent_id="agent-1",
            channel=Channel.EMAIL,
            recipient=f"customer{n % 200}@example.org",
            account="help@support.example.com",
            text=TEXT,
            subject=f"Order {n} has not arrived",
            references=(f"<{run}-{n}@mail.example.org>",),
            requested_at=now,
            ordered_at=now,
        )
        for n in range(count)
    ]


async def produce(bootstrap: str, topic: str, items: list[ReplyDelivery]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for order in items:
            headers = event_headers(order, source="/bench")
            futures.append(
                await producer.send(
                    topic,
                    value=encode(order),
                    key=order.conversation_id.encode(),
                    headers=[(k, v.encode()) for k, v in headers.items()],
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def wait_for(relay: LocalRelay, count: int, timeout: float) -> float:
    """Seconds until the relay holds ``count`` messages (monotonic clock)."""
    deadline = time.monotonic() + timeout
    while len(relay.messages) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay got {len(relay.messages)} of {count} replies")
        time.sleep(0.01)
    return time.monotonic()


def bare_client(relay: LocalRelay, items: list[ReplyDelivery]) -> float:
    """Seconds a bare client takes to submit the same messages (one connection)."""
    messages = [compose(order) for order in items]
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
        for message in messages:
            smtp.send_message(message)
    return time.monotonic() - started


def run(count: int) -> dict[str, Any]:
    infra = ensure_infra()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    database = f"bench_{uuid.uuid4().hex[:8]}"
    topics = TopicNames(prefix)
    asyncio.run(create_topics(infra.kafka_bootstrap, prefix=prefix))
    http_port = free_port()
    figures: dict[str, Any] = {}
    try:
        with LocalRelay.started() as relay:
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
                "MONGODB_URL": infra.mongodb_url,
                "MONGODB_DATABASE": database,
                "SWITCHBOARD_TOPIC_PREFIX": prefix,
                "SWITCHBOARD_ENV": "test",
                "SUPPORT_EMAIL_DOMAINS": "support.example.com",
                "INGEST_EMAIL_SMTP_PORT": str(free_port()),
                "INGEST_EMAIL_HTTP_PORT": str(http_port),
                "OUTBOUND_SMTP_URL": f"{relay.url}?tls=none",
            }
            system = subprocess.Popen(
                [sys.executable, "-m", "switchboard_ingest_email"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                # Warm-up, not counted: imports, connections, the consumer's partitions.
                warm = orders(20, f"w{uuid.uuid4().hex[:6]}")
                asyncio.run(produce(infra.kafka_bootstrap, topics(REPLY_DELIVERIES), warm))
                wait_for(relay, len(warm), timeout=120)
                measured = orders(count, f"r{uuid.uuid4().hex[:6]}")
                cpu_before = cpu_seconds(system.pid)
                started = time.monotonic()
                asyncio.run(produce(infra.kafka_bootstrap, topics(REPLY_DELIVERIES), measured))
                ended = wait_for(relay, len(warm) + count, timeout=max(120.0, count / 5))
                figures["system_cpu_ms_per_reply"] = round(
                    (cpu_seconds(system.pid) - cpu_before) / count * 1000, 3
                )
                figures["system_peak_rss_mb"] = peak_rss_mb(system.pid)
            finally:
                system.terminate()
                system.wait(30)
            system_rate = count / (ended - started)
            baseline_rate = count / bare_client(relay, measured)
    finally:
        asyncio.run(delete_topics(infra.kafka_bootstrap, prefix=prefix))
        with MongoClient[dict[str, Any]](infra.mongodb_url) as client:
            client.drop_database(database)
        infra.close()
    return {
        "case": "replies_delivered",
        "unit": "replies/s",
        "system": round(system_rate, 1),
        "baseline": round(baseline_rate, 1),
        "ratio": round(system_rate / baseline_rate, 3),
        "replies": count,
        **figures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = run(args.replies)
    text = json.dumps(figures, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
