"""Fault injection (``make faults``): break something while traffic flows, then count.

Everything runs on a Kafka broker and a FerretDB of this module's own (free ports), so
stopping them never disturbs anything else. For each fault a fresh stack of all four
services takes a steady stream of mail and WhatsApp messages (senders retry until
acknowledged), agents resolve what they are given, and three deliberately bad records
go onto the inbound topic. After the fault and recovery: every acknowledged message is
in the timeline exactly once, no agent was ever above capacity, only the deliberate bad
records were dead-lettered, and the consumers still consume.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator

import pytest

from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.local import LocalFerretDB, LocalKafka
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.faults import (
    Agents,
    Count,
    Traffic,
    dead_letters,
    send_bad_records,
    timeline_tokens,
)
from switchboard_devtools.frontend import eventually

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
BAD_RECORDS = 3
RESULTS: list[Count] = []


class PrivateServers:
    def __init__(self) -> None:
        self.kafka = LocalKafka(
            name="kafka-faults", host="127.0.0.1", port=free_port(), controller_port=free_port()
        )
        self.mongo = LocalFerretDB(name="ferretdb-faults", host="127.0.0.1", port=free_port())

    def start(self) -> None:
        self.kafka.start()
        self.mongo.start()

    def stop(self) -> None:
        self.kafka.stop()
        self.mongo.stop()
        shutil.rmtree(self.kafka.state, ignore_errors=True)
        shutil.rmtree(self.mongo.state, ignore_errors=True)


@pytest.fixture(scope="module")
def servers() -> Iterator[PrivateServers]:
    private = PrivateServers()
    private.start()
    try:
        yield private
    finally:
        private.stop()
        if RESULTS:
            print("\n" + Count.header())
            for result in RESULTS:
                print(result.row())


@pytest.fixture
def stack(servers: PrivateServers) -> Iterator[Stack]:
    stack = Stack(
        servers.kafka.bootstrap,
        servers.mongo.url,
        extra_env={
            # Refuse quickly when a dependency is down, so senders retry sooner.
            "INGEST_EMAIL_PUBLISH_TIMEOUT_SECONDS": "3",
            "INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS": "3",
        },
    )
    try:
        stack.start()
        yield stack
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        stack.stop()


async def run_with_fault(
    name: str, stack: Stack, fault: Callable[[], Awaitable[None]], *, seconds: float = 30.0
) -> Count:
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        agents = Agents(stack, probe)
        await agents.start()
        traffic = Traffic(stack)
        stop = asyncio.Event()
        working = asyncio.create_task(agents.work(stop))
        await send_bad_records(probe, BAD_RECORDS)
        offering = asyncio.create_task(traffic.run_for(seconds))
        await asyncio.sleep(seconds / 3)
        await fault()
        await offering
        await traffic.drain()
        acknowledged = traffic.acknowledged()

        async def all_stored() -> dict[str, int] | None:
            stored = await timeline_tokens(stack.mongodb_url, stack.database)
            return dict(stored) if acknowledged <= stored.keys() else None

        stored = await eventually(all_stored, timeout=240, what="acknowledged messages stored")

        # Consumers still consume: a message sent now goes all the way through.
        after = Traffic(stack)
        await after.run_for(1.0)
        await after.drain()

        async def fresh_stored() -> bool | None:
            found = await timeline_tokens(stack.mongodb_url, stack.database)
            return True if after.acknowledged() <= found.keys() else None

        consuming = await eventually(fresh_stored, timeout=120, what="a fresh message stored")
        stop.set()
        await working
        letters = await dead_letters(probe)
    count = Count(
        fault=name,
        sent=len(traffic.sent),
        acknowledged=len(acknowledged),
        in_timeline=sum(1 for t in acknowledged if t in stored),
        lost=len(acknowledged - stored.keys()),
        duplicates=sum(1 for n in stored.values() if n > 1),
        over_capacity=len(agents.over_capacity),
        dead_letters=letters,
        deliberate_bad=BAD_RECORDS,
        consuming_after=bool(consuming),
        retries=sum(s.attempts - 1 for s in traffic.sent.values()),
    )
    RESULTS.append(count)
    assert count.acknowledged == count.sent, "every sender was eventually acknowledged"
    assert count.lost == 0, "nothing acknowledged is lost"
    assert count.duplicates == 0, "redelivery is harmless"
    assert count.over_capacity == 0, agents.over_capacity[:5]
    assert agents.polls > 0, "capacity was actually watched"
    assert count.dead_letters == BAD_RECORDS, "only the deliberately bad records"
    return count


async def test_router_killed_and_restarted(stack: Stack) -> None:
    async def kill_router() -> None:
        await asyncio.to_thread(stack.restart, "router", kill=True)

    await run_with_fault("router SIGKILL + restart", stack, kill_router)


async def test_kafka_stopped_and_restarted(stack: Stack, servers: PrivateServers) -> None:
    async def bounce_kafka() -> None:
        await asyncio.to_thread(servers.kafka.stop)
        await asyncio.sleep(8)
        await asyncio.to_thread(servers.kafka.start)

    count = await run_with_fault("Kafka stop + restart", stack, bounce_kafka)
    assert count.retries > 0, "senders were refused while Kafka was down"


async def test_database_stopped_and_restarted(stack: Stack, servers: PrivateServers) -> None:
    async def bounce_database() -> None:
        await asyncio.to_thread(servers.mongo.stop)
        await asyncio.sleep(8)
        await asyncio.to_thread(servers.mongo.start)

    count = await run_with_fault("MongoDB-wire stop + restart", stack, bounce_database)
    assert count.retries > 0, "mail was refused (451) while the raw store was down"


async def test_ingest_killed_between_receiving_and_acknowledging(stack: Stack) -> None:
    async def kill_ingest() -> None:
        # Traffic is in flight on both: some SMTP transactions and webhooks are cut off
        # after the service received them and before it answered.
        await asyncio.to_thread(stack.restart, "ingest-email", kill=True)
        await asyncio.to_thread(stack.restart, "ingest-social", kill=True)

    await run_with_fault("ingest SIGKILL + restart", stack, kill_ingest)
