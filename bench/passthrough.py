"""The bare baseline for the pipeline cases: aiokafka consume → produce, nothing else.

It reads ``support.inbound.v1`` records in batches and republishes each value unchanged
to ``support.assignments.v1`` (same key), committing after the acks — the least a Kafka
consumer that keeps the "commit after write" rule can do on the same broker and topic
shape. The pipeline benchmarks run it beside the router in the same run. The essential
pipeline (``essential.py``) is this loop with a write per batch added (``store``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from switchboard_common.contract import ASSIGNMENTS, INBOUND, TopicNames

#: Work done on each consumed batch before its records are produced (and committed).
Store = Callable[[Sequence[Any]], Awaitable[None]]


async def passthrough(
    bootstrap: str,
    topics: TopicNames,
    stop: asyncio.Event,
    *,
    group: str = "bench-passthrough",
    store: Store | None = None,
) -> int:
    """Forward records until ``stop``; return how many were forwarded."""
    consumer = AIOKafkaConsumer(
        topics(INBOUND),
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await consumer.start()
    await producer.start()
    forwarded = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=500)
            records = [record for records in batch.values() for record in records]
            if not records:
                continue
            if store is not None:
                await store(records)
            futures = [
                await producer.send(
                    topics(ASSIGNMENTS),
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers or ()),
                )
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            forwarded += len(futures)
    finally:
        await producer.stop()
        await consumer.stop()
    return forwarded


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every baseline process takes (the harness starts it with them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    return parser


async def serve(name: str, bootstrap: str, prefix: str, *, store: Store | None = None) -> None:
    """Run the loop as its own process until SIGTERM; say "<name> ready" once started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{name} ready", flush=True)
    await passthrough(bootstrap, TopicNames(prefix), stop, group=f"bench-{name}", store=store)


if __name__ == "__main__":
    options = arguments("the bare passthrough as its own process").parse_args()
    asyncio.run(serve("passthrough", options.bootstrap, options.prefix))
