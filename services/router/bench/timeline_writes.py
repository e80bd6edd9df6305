"""Benchmark: messages applied to timelines per second, on real Kafka and FerretDB.

``system``: the router's identity and timeline steps running in this process (the shell
``make run`` starts) take a backlog of ``support.inbound.v1`` messages through identity
resolution, the customer-keyed internal topic, threading and storage, to the stored
timeline entry and the published ``ConversationActivity`` — and, since the timeline routes
what it stores in the same batch, each new conversation queued (no agent is online).
Counted from the router's own metric
(``switchboard_router_timeline_messages_total{outcome="stored"}``), from the first
stored batch for ``--duration`` seconds (or until the backlog is done).

``baseline``: a bare aiokafka consumer reads the same records from the beginning and
bulk-inserts them (``insert_many``, 500 a batch, offsets committed after) into a
collection of the same database, in the same run, for the same window.

The workload is ``--customers`` customers (half email, half WhatsApp) writing
``--messages`` messages in random interleaving; email customers reply to their earlier
messages or start new subjects. Every batch therefore touches hundreds of customers.

    uv run python services/router/bench/timeline_writes.py --duration 10 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from switchboard_common.contract import INBOUND, Channel, ContractModel, MessageReceived, TopicNames
from switchboard_common.logging import configure_logging
from switchboard_common.mongo import Document
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.baselines import insert_records
from switchboard_devkit.testing.builders import T0
from switchboard_devtools.testing.router_timeline import (
    inbound,
    message_ref,
    produce,
    running_router,
)
from switchboard_router.settings import RouterSettings
from switchboard_router.timeline.identity import identity_of

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
BATCH = 500


def workload(messages: int, customers: int, rng: random.Random) -> list[MessageReceived]:
    per_customer = max(1, messages // customers)
    streams: list[list[MessageReceived]] = []
    for c in range(customers):
        at = T0 + timedelta(seconds=c)
        stream: list[MessageReceived] = []
        for n in range(per_customer):
            at += timedelta(minutes=rng.choice([1, 30, 600]))
            message_id = f"b{c}-{n}"
            text = f"Message {n} from customer {c}: where is my order {rng.randint(1000, 9999)}?"
            if c % 2:
                phone = f"+3461{c:07d}"
                stream.append(
                    inbound(message_id, channel=Channel.WHATSAPP, sender=phone, at=at, text=text)
                )
                continue
            sender = f"customer{c}@example.com"
            if stream and rng.random() < 0.6:
                parent = rng.choice(stream)
                stream.append(
                    inbound(
                        message_id,
                        sender=sender,
                        subject=f"Re: {parent.subject}",
                        at=at,
                        text=text,
                        in_reply_to=message_ref(parent.message_id),
                        references=[message_ref(parent.message_id)],
                    )
                )
            else:
                subject = rng.choice(["Order", "Refund", "Delivery", "Invoice"])
                stream.append(inbound(message_id, sender=sender, subject=subject, at=at, text=text))
        streams.append(stream)
    cursors = [0] * len(streams)
    live = list(range(len(streams)))
    flow: list[MessageReceived] = []
    while live:
        i = rng.randrange(len(live))
        c = live[i]
        flow.append(streams[c][cursors[c]])
        cursors[c] += 1
        if cursors[c] == len(streams[c]):
            live[i] = live[-1]
            live.pop()
    return flow


def _sample(registry: Any, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def measure_system(prefix: str, database: str, total: int, duration: float) -> dict[str, Any]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "MONGODB_URL": MONGODB_URL,
        "MONGODB_DATABASE": database,
        "SWITCHBOARD_TOPIC_PREFIX": prefix,
    }
    # The tests' in-process router, with the producer's production linger.
    linger = RouterSettings.model_fields["kafka_linger_ms"].default
    async with running_router(env, log_level="WARNING", kafka_linger_ms=linger) as router:
        registry = router.ctx.registry

        def stored() -> float:
            return _sample(registry, "switchboard_router_timeline_messages_total", outcome="stored")

        def resolved() -> float:
            return _sample(
                registry, "switchboard_consumer_records_total", topic=INBOUND, outcome="processed"
            )

        # The clock starts once identity resolution has handled its first batch (the
        # baseline's starts at its first batch): waiting for the first *stored* batch
        # instead left that batch out, and a backlog that fits in one batch measured 0.
        deadline = time.monotonic() + 180
        while resolved() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the router resolved nothing")
            await asyncio.sleep(0.05)
        started, first, first_resolved = time.monotonic(), stored(), resolved()
        while time.monotonic() - started < duration and stored() < total:  # noqa: ASYNC110 - polling a metric; there is no event to wait on
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        applied = stored() - first
        return {
            "rate": applied / elapsed,
            "applied": int(applied),
            "elapsed": round(elapsed, 2),
            "identity_rate": (resolved() - first_resolved) / elapsed,
        }


async def measure_baseline(
    prefix: str, database: str, total: int, duration: float
) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        TopicNames(prefix).inbound,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{prefix}bench-baseline",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=BATCH,
    )
    client: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL, tz_aware=True)
    collection = client[database]["bench_baseline_messages"]
    await consumer.start()
    inserted, started = 0, None
    try:
        deadline = time.monotonic() + 120
        while inserted < total and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            if started is None:
                started = time.monotonic()
            await insert_records(collection, records)
            await consumer.commit()
            inserted += len(records)
            if time.monotonic() - started >= duration:
                break
        if started is None:
            raise RuntimeError("the baseline consumed nothing")
        elapsed = time.monotonic() - started
        return {"rate": inserted / elapsed, "applied": inserted, "elapsed": round(elapsed, 2)}
    finally:
        await consumer.stop()
        await client.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible workload, not a secret
    tag = uuid.uuid4().hex[:8]
    prefix, database = f"bench{tag}.", f"bench_timeline_{tag}"
    await create_topics(BOOTSTRAP, prefix=prefix, partitions=args.partitions)
    try:
        flow = workload(args.messages, args.customers, rng)
        records: list[tuple[str, str, ContractModel]] = [(INBOUND, identity_of(m), m) for m in flow]
        await produce(BOOTSTRAP, TopicNames(prefix), records)
        system = await measure_system(prefix, database, len(flow), args.duration)
        baseline = await measure_baseline(prefix, database, len(flow), args.duration)
    finally:
        await _clean_up(prefix, database)
    return {
        "case": "timeline_writes",
        "unit": "messages/s",
        "system": round(system["rate"], 1),
        "baseline": round(baseline["rate"], 1),
        "ratio": round(system["rate"] / baseline["rate"], 4),
        "system_messages": system["applied"],
        "system_seconds": system["elapsed"],
        "identity_messages_per_second": round(system["identity_rate"], 1),
        "baseline_messages": baseline["applied"],
        "baseline_seconds": baseline["elapsed"],
        "backlog": len(flow),
        "customers": args.customers,
        "partitions": args.partitions,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def _clean_up(prefix: str, database: str) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(MONGODB_URL)
    try:
        await client.drop_database(database)
    finally:
        await client.close()
    await delete_topics(BOOTSTRAP, prefix=prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    configure_logging(service="bench", level="WARNING", fmt="json")
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)  # noqa: T201 - the result is the program's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
