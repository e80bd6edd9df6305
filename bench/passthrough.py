"""The bare baseline for the pipeline cases: aiokafka consume → produce, nothing else.

It reads ``support.inbound.v1`` records in batches and republishes each value unchanged
to ``support.assignments.v1`` (same key), committing after the acks — the least a Kafka
consumer that keeps the "commit after write" rule can do on the same broker and topic
shape. The pipeline benchmarks run it beside the router in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from switchboard_common.contract import ASSIGNMENTS, INBOUND, TopicNames


async def passthrough(
    bootstrap: str, topics: TopicNames, stop: asyncio.Event, *, group: str = "bench-passthrough"
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
            futures = [
                await producer.send(
                    topics(ASSIGNMENTS),
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers or ()),
                )
                for records in batch.values()
                for record in records
            ]
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
                forwarded += len(futures)
    finally:
        await producer.stop()
        await consumer.stop()
    return forwarded


@contextlib.asynccontextmanager
async def running_passthrough(bootstrap: str, topics: TopicNames) -> AsyncIterator[None]:
    """Run the passthrough in the background for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(passthrough(bootstrap, topics, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def _serve(bootstrap: str, prefix: str) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("passthrough ready", flush=True)
    await passthrough(bootstrap, TopicNames(prefix), stop)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the bare passthrough as its own process")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    arguments = parser.parse_args()
    asyncio.run(_serve(arguments.bootstrap, arguments.prefix))
