"""An agent's live stream (Server-Sent Events) through real HTTP, fed by the router's
per-replica consumer group from real Kafka: it opens with ``ready``, then carries the
agent's offers, and the customer messages, notes, delivery statuses and resolution of the
conversations they hold (never their text), and nothing of another agent's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from switchboard_common.contract import (
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    OUTBOUND,
    Channel,
    ConversationAssigned,
    ConversationResolved,
    DeliveryStatus,
    DeliveryUpdated,
    NoteAdded,
    Priority,
    ReplySent,
)
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_assignment import activity, state
from switchboard_devtools.testing.router_timeline import (
    READ_TOKEN,
    RunningRouter,
    agent_token,
    bearer,
    running_router,
)
from switchboard_router.assignment.model import RouteStatus

pytestmark = pytest.mark.integration

SECRET = "my card ends in 4242"  # noqa: S105 - message text, not a password

Event = tuple[str, dict[str, Any]]
#: An idle stream carries a heartbeat every 15 s: a read waiting longer means it is stuck.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=120.0)


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env) as handle:
        yield handle


@contextlib.asynccontextmanager
async def stream_of(router: RunningRouter, agent_id: str) -> AsyncIterator[asyncio.Queue[Event]]:
    """The agent's stream, read as a console does, its events parsed into a queue."""
    events: asyncio.Queue[Event] = asyncio.Queue()
    opened: asyncio.Future[httpx.Response] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        headers = bearer(agent_token(agent_id))
        async with (
            httpx.AsyncClient(base_url=router.url, timeout=STREAM_TIMEOUT) as http,
            http.stream("GET", f"/agents/{agent_id}/events", headers=headers) as response,
        ):
            opened.set_result(response)
            name, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = line.removeprefix("data: ")
                elif line == "" and name:
                    await events.put((name, json.loads(data)))
                    name, data = "", ""

    reader = asyncio.create_task(read())
    try:
        response = await asyncio.wait_for(asyncio.shield(opened), 30)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield events
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def offer(conversation_id: str, agent_id: str) -> ConversationAssigned:
    now = datetime.now(UTC)
    return ConversationAssigned(
        conversation_id=conversation_id,
        customer_id="cu-1",
        channel=Channel.EMAIL,
        priority=Priority.NORMAL,
        agent_id=agent_id,
        queue="general",
        seq=1,
        decided_at=now,
        offer_expires_at=now + timedelta(minutes=5),
    )


async def next_about(events: asyncio.Queue[Event], wanted: set[str]) -> Event:
    """The next event about one of ``wanted`` conversations (warm-up leftovers skipped)."""
    while True:
        name, data = await asyncio.wait_for(events.get(), 60)
        if data.get("conversation_id") in wanted:
            return name, data
        assert str(data.get("conversation_id", "")).startswith("warm-"), (name, data)


async def warmed_up(probe: TopicProbe, events: asyncio.Queue[Event], agent_id: str) -> None:
    """Offers until one reaches the stream: the live group, reading from the end of the
    topics, has its partitions now, and sees everything published from here on."""
    deadline = time.monotonic() + 90
    for attempt in range(1000):
        await probe.send(ASSIGNMENTS, offer(f"warm-{attempt}", agent_id), key=f"warm-{attempt}")
        try:
            name, data = await asyncio.wait_for(events.get(), 2)
        except TimeoutError:
            assert time.monotonic() < deadline, "the live stream never carried an update"
            continue
        assert (name, data["conversation_id"][:5]) == ("offer", "warm-")
        return


async def test_the_stream_opens_ready_then_carries_only_the_agents_own_updates(
    router: RunningRouter, probe: TopicProbe
) -> None:
    async with stream_of(router, "ana") as ana, stream_of(router, "bob") as bob:
        assert await asyncio.wait_for(ana.get(), 30) == (
            "ready",
            {"type": "ready", "agent_id": "ana"},
        )
        assert (await asyncio.wait_for(bob.get(), 30))[0] == "ready"
        await warmed_up(probe, ana, "ana")
        # ana holds c-held, as routing records it.
        now = datetime.now(UTC)
        held = state("c-held", seq=2, status=RouteStatus.ASSIGNED, agent_id="ana")
        await router.parts.assignment.store.put_head(held)
        await probe.send(ASSIGNMENTS, offer("c-offer", "ana"), key="c-offer")
        written = activity("c-held", kind="message", message_id="m-live-1", text=SECRET)
        await probe.send(CONVERSATION_ACTIVITY, written, key="c-held")
        # Assigned outright (no offer to accept): an "assigned" update.
        direct = offer("c-direct", "ana").model_copy(update={"offer_expires_at": None})
        await probe.send(ASSIGNMENTS, direct, key="c-direct")

        wanted = {"c-offer", "c-held", "c-direct"}
        got = dict([await next_about(ana, wanted) for _ in range(3)])
        assert set(got) == {"offer", "message", "assigned"}
        assert got["assigned"]["conversation_id"] == "c-direct"
        assert got["message"] == {
            "type": "message",
            "conversation_id": "c-held",
            "message_id": "m-live-1",
            "kind": "message",
        }
        assert got["offer"]["conversation_id"] == "c-offer"
        assert got["offer"]["offered_until"]
        assert SECRET not in json.dumps(got)

        # A note, a delivery status and the resolution of the conversation she holds:
        # each reaches her as its own update, still without any text.
        await probe.send(
            CONVERSATION_EVENTS,
            NoteAdded(
                note_id="n-live-1", conversation_id="c-held", agent_id="cho", text=SECRET, at=now
            ),
            key="c-held",
        )
        await probe.send(
            OUTBOUND,
            DeliveryUpdated(
                reply_id="r-live-1",
                conversation_id="c-held",
                channel=Channel.EMAIL,
                status=DeliveryStatus.DELIVERED,
                at=now,
            ),
            key="c-held",
        )
        await probe.send(
            CONVERSATION_EVENTS, ReplySent(conversation_id="c-held", agent_id="ana", sent_at=now),
            key="c-held",
        )  # fmt: skip
        await probe.send(
            CONVERSATION_EVENTS, ConversationResolved(conversation_id="c-held", at=now),
            key="c-held",
        )  # fmt: skip
        later = dict([await next_about(ana, {"c-held"}) for _ in range(4)])
        assert set(later) == {"note", "delivery", "conversation", "unassigned"}, later
        assert later["conversation"]["change"] == "reply_sent"
        assert later["unassigned"]["reason"] == "resolved"
        assert later["note"]["note_id"] == "n-live-1"
        assert later["note"]["agent_id"] == "cho"
        assert (later["delivery"]["reply_id"], later["delivery"]["status"]) == (
            "r-live-1",
            "delivered",
        )
        assert SECRET not in json.dumps(later)

        # All of ana's updates went through the hub before she read them; bob's first
        # update after them is his own offer: he never got hers.
        await probe.send(ASSIGNMENTS, offer("c-bob", "bob"), key="c-bob")
        name, data = await asyncio.wait_for(bob.get(), 60)
        assert (name, data["conversation_id"]) == ("offer", "c-bob")


async def test_only_the_agent_or_a_reader_opens_an_agents_stream(router: RunningRouter) -> None:
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        for headers, expected in ((bearer(agent_token("bob")), 403), ({}, 401)):
            answer = await http.get("/agents/ana/events", headers=headers)
            assert answer.status_code == expected
        async with http.stream("GET", "/agents/ana/events", headers=bearer(READ_TOKEN)) as read:
            assert read.status_code == 200
            first = await anext(read.aiter_lines())
            assert first == "event: ready"


async def test_an_idle_stream_carries_a_heartbeat(service_env: dict[str, str]) -> None:
    async with (
        running_router(service_env, live_heartbeat_seconds=0.3) as router,
        httpx.AsyncClient(base_url=router.url, timeout=STREAM_TIMEOUT) as http,
        http.stream("GET", "/agents/ana/events", headers=bearer(agent_token("ana"))) as read,
    ):
        lines = read.aiter_lines()
        assert await anext(lines) == "event: ready"
        # Nothing happens to ana: after ready, only keep-alive comments, several of them.
        beats = 0
        while beats < 3:
            line = await asyncio.wait_for(anext(lines), 30)
            assert not line.startswith("event: "), line
            beats += line == ": keep-alive"


async def test_a_stopping_router_ends_open_streams_with_reset(service_env: dict[str, str]) -> None:
    async with running_router(service_env) as router:
        stream = stream_of(router, "ana")
        ana = await stream.__aenter__()
        try:
            assert (await asyncio.wait_for(ana.get(), 30))[0] == "ready"
            metrics = (await router.http.get("/metrics")).text
            assert "switchboard_router_live_streams 1.0" in metrics
        except BaseException:
            await stream.__aexit__(None, None, None)
            raise
    # The router stopped with the stream open: the console was told to reconnect.
    try:
        assert await asyncio.wait_for(ana.get(), 30) == (
            "reset",
            {"type": "reset", "reason": "shutdown"},
        )
    finally:
        await stream.__aexit__(None, None, None)
