"""Fault injection (``make faults``): break something while traffic flows, then count.

Everything runs on a Kafka broker and a FerretDB of this module's own (free ports), so
stopping them never disturbs anything else. For each fault a fresh stack of all four
services takes a steady stream of mail and WhatsApp messages (senders retry until
acknowledged), agents resolve what they are given, and three deliberately bad records
go onto the inbound topic. After the fault and recovery: every acknowledged message is
in the timeline exactly once, no agent was ever above capacity (neither in the router's
own ``GET /agents`` nor by the ``CapacityOracle`` replaying the public topics), only the
deliberate bad records were dead-lettered, and the consumers still consume.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import shutil
from collections.abc import Awaitable, Callable, Iterator
from email.message import Message

import pytest
from aiokafka import AIOKafkaProducer

from switchboard_common.consumer import subscribe_batch
from switchboard_common.contract import DeliveryStatus, DeliveryUpdated
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.local import LocalFerretDB, LocalKafka
from switchboard_devkit.servers.relay import LocalRelay
from switchboard_devkit.testing.kafka_probe import TopicProbe, unique
from switchboard_devtools.faults import (
    Agents,
    Count,
    Traffic,
    capacity_oracle,
    dead_letters,
    send_bad_records,
    timeline_tokens,
)
from switchboard_devtools.frontend import Customer, Helpdesk, customer_timeline, eventually
from switchboard_ingest_email.replies import reply_message_id
from switchboard_router.assignment.policy import load_policy
from switchboard_router.settings import RouterSettings

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
BAD_RECORDS = 3
RESULTS: list[Count] = []
#: Refuse quickly when a dependency is down, so senders retry sooner.
FAST_REFUSALS = {
    "INGEST_EMAIL_PUBLISH_TIMEOUT_SECONDS": "3",
    "INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS": "3",
}
#: The stalled replica's run: the repair loop runs every few seconds, so it looks at the
#: stalled replica's reservations many times while they are older than its grace.
REPAIR_OFTEN = {"ROUTER_ASSIGNMENT_REFRESH_SECONDS": "3"}


def _default(function: Callable[..., object], parameter: str) -> float:
    default = inspect.signature(function).parameters[parameter].default
    assert isinstance(default, int | float)
    return float(default)


#: Longer than every router timeout: a consumer's session (its partitions move to the
#: other replicas), the repair grace plus one repair period (slots it reserved are
#: released behind its back) and an offer's deadline. Not the poll interval (5 min):
#: the session timeout already takes the partitions away.
STALL_SECONDS = 5.0 + max(
    _default(subscribe_batch, "session_timeout_ms") / 1000,
    RouterSettings.model_fields["assignment_repair_after_seconds"].default
    + float(REPAIR_OFTEN["ROUTER_ASSIGNMENT_REFRESH_SECONDS"]),
    load_policy(None).offers.timeout_seconds,
)
#: Longer than every producer's retry budget: aiokafka fails a record it could not
#: deliver after ``request_timeout_ms`` (40 s by default; ingest-social and the router
#: keep it), ingest-email bounds it by its publish timeout (10 s by default).
OUTAGE_SECONDS = 5.0 + _default(AIOKafkaProducer.__init__, "request_timeout_ms") / 1000


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


def _stack(servers: PrivateServers, env: dict[str, str]) -> Iterator[Stack]:
    with running_stack(servers.kafka.bootstrap, servers.mongo.url, extra_env=env) as stack:
        yield stack


@pytest.fixture
def stack(servers: PrivateServers) -> Iterator[Stack]:
    yield from _stack(servers, FAST_REFUSALS)


@pytest.fixture
def often_repaired_stack(servers: PrivateServers) -> Iterator[Stack]:
    yield from _stack(servers, {**FAST_REFUSALS, **REPAIR_OFTEN})


@pytest.fixture
def default_stack(servers: PrivateServers) -> Iterator[Stack]:
    """The services' own publish timeouts."""
    yield from _stack(servers, {})


async def run_with_fault(
    name: str,
    stack: Stack,
    fault: Callable[[], Awaitable[None]],
    *,
    seconds: float = 30.0,
    agents_count: int = 6,
    capacity: int = 3,
) -> Count:
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        agents = Agents(stack, probe, count=agents_count, capacity=capacity)
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
        oracle = await capacity_oracle(probe)
        above = oracle.replay()
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
        oracle_over=len(above),
        oracle_assignments=oracle.assignments,
        refused=traffic.refusals(),
    )
    RESULTS.append(count)
    assert count.acknowledged == count.sent, "every sender was eventually acknowledged"
    assert count.lost == 0, "nothing acknowledged is lost"
    assert count.duplicates == 0, "redelivery is harmless"
    assert count.over_capacity == 0, agents.over_capacity[:5]
    assert agents.polls > 0, "capacity was actually watched"
    assert count.oracle_over == 0, "\n".join(oracle.explain(o) for o in above[:3])
    assert oracle.assignments > 0, "the oracle had assignments to check"
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


async def test_router_replica_stalled_past_every_timeout(often_repaired_stack: Stack) -> None:
    """Three router replicas; one is frozen (SIGSTOP) mid-work for longer than every
    timeout, then resumes (SIGCONT) with whatever it had in flight. Fewer agents with
    less room than traffic needs, so capacity is always contended and a slot counted
    twice shows as an agent above capacity."""
    stack = often_repaired_stack
    stalled = await asyncio.to_thread(stack.add_replica, "router")
    await asyncio.to_thread(stack.add_replica, "router")

    async def stall_replica() -> None:
        stack.pause(stalled)
        try:
            await asyncio.sleep(STALL_SECONDS)
        finally:
            stack.resume(stalled)

    await run_with_fault(
        f"1 of 3 routers SIGSTOP {STALL_SECONDS:g} s",
        stack,
        stall_replica,
        seconds=STALL_SECONDS + 20,
        agents_count=3,
        capacity=2,
    )
    process = stack.services[stalled].process
    assert process is not None
    assert process.poll() is None, "the stalled replica lives on"


async def test_kafka_down_longer_than_the_producers_retry_budget(
    default_stack: Stack, servers: PrivateServers
) -> None:
    """Kafka away for longer than any producer keeps retrying on its own: what was not
    acknowledged is refused (451, 503) and the senders retry; the services' own
    publish timeouts are the defaults."""

    async def long_outage() -> None:
        await asyncio.to_thread(servers.kafka.stop)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(servers.kafka.start)

    count = await run_with_fault(f"Kafka down {OUTAGE_SECONDS:g} s", default_stack, long_outage)
    assert count.refused["email smtp_451"] > 0, count.refused
    assert count.refused["whatsapp http_503"] > 0, count.refused


@pytest.fixture
def replying_stack(servers: PrivateServers) -> Iterator[tuple[Stack, LocalRelay]]:
    """The router and ingest-email with a slow local relay for replies."""
    with LocalRelay.started() as relay:
        relay.delay = 0.02
        env = {
            **FAST_REFUSALS,
            "OUTBOUND_SMTP_URL": f"{relay.url}?tls=none",
            "INGEST_EMAIL_REPLIES_BATCH_MAX_RECORDS": "20",
        }
        with running_stack(
            servers.kafka.bootstrap, servers.mongo.url, "router", "ingest-email", extra_env=env
        ) as stack:
            yield stack, relay


async def test_email_sender_killed_mid_send(replying_stack: tuple[Stack, LocalRelay]) -> None:
    """ingest-email is SIGKILLed while it submits a burst of replies to a slow relay. Every
    requested reply reaches the relay and ends ``sent``; a reply submitted again after the
    kill (the one window SMTP leaves, README "Replies") carries its same Message-ID, so
    the customer's mail store keeps one copy."""
    stack, relay = replying_stack
    conversations = []
    for n in range(5):
        customer = Customer(
            email=f"buyer{n}.{unique('c')}@example.org",
            phone="+34600000000",
            smtp_port=stack.smtp_port,
            social_url="http://127.0.0.1:9",  # mail only
            meta_secret=TEST_SECRETS["META_APP_SECRET"],
        )
        await customer.mail("My order", "Where is my order?")
        timeline = await customer_timeline(
            stack.url("router"), stack.router_auth(), f"email:{customer.email}"
        )
        conversations.append(timeline["items"][0]["conversation_id"])
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        requests = [
            await helpdesk.request_reply(c, "agent-1", f"Update {n} on your order.")
            for n in range(40)
            for c in conversations
        ]

        def agent_replies() -> list[Message]:
            # The conversations' acknowledgements go to the relay too; they are not counted.
            return [m for m in list(relay.messages) if m["Auto-Submitted"] is None]

        async def sending() -> bool | None:
            return True if agent_replies() else None

        await eventually(sending, what="the relay receiving replies")
        await asyncio.to_thread(stack.restart, "ingest-email", kill=True)
        before_restart = len(agent_replies())

        async def all_sent() -> dict[str, list[DeliveryUpdated]] | None:
            found = await helpdesk.deliveries()
            done = all(
                any(s.status is DeliveryStatus.SENT for s in found.get(r.reply_id, []))
                for r in requests
            )
            return found if done else None

        statuses = await eventually(all_sent, timeout=240, what="every reply sent")
    expected = {reply_message_id(r.reply_id, "help@support.example.com") for r in requests}
    received = collections.Counter(str(m["Message-ID"]) for m in agent_replies())
    again = sum(n - 1 for n in received.values())
    print(
        f"\nreplies: {len(requests)} requested, {before_restart} at the relay when the "
        f"sender was killed, {len(received)} distinct at the end, {again} submitted again"
    )
    assert 0 < before_restart < len(requests), "the kill landed mid-send"
    assert set(received) == expected, "every reply reached the relay, and nothing else"
    assert again <= 20, "only replies in flight at the kill (one batch) can go twice"
    failed = [s for s in itertools.chain(*statuses.values()) if s.status is DeliveryStatus.FAILED]
    assert failed == []
