"""Helpers for the timeline's tests (no test framework imports; not used in production)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from switchboard_common.cloudevents import encode, event_headers
from switchboard_common.contract import (
    AGENT_EVENTS,
    CONVERSATION_ACTIVITY,
    INBOUND,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    Channel,
    ContractModel,
    ConversationActivity,
    CustomerMessage,
    MessageReceived,
    Sender,
    SenderKind,
    TopicNames,
)
from switchboard_common.kafka import Outgoing
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.running.processes import ServiceProcess, ServiceSpec
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_router.agent_tokens import AgentTokens
from switchboard_router.app import Router, build
from switchboard_router.context import RouterContext
from switchboard_router.settings import RouterSettings
from switchboard_router.timeline.identity import identity_of

READ_TOKEN = "test-read-token"  # noqa: S105 - fixed tokens for tests only
ADMIN_TOKEN = "test-admin-token"  # noqa: S105
AGENT_TOKEN_SECRET = "test-agent-token-secret"  # noqa: S105
#: The router's token variables as tests set them.
TOKEN_ENV = {
    "ROUTER_READ_TOKEN": READ_TOKEN,
    "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
    "ROUTER_AGENT_TOKEN_SECRET": AGENT_TOKEN_SECRET,
}


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header presenting ``token``."""
    return {"Authorization": f"Bearer {token}"}


def agent_token(agent_id: str, ttl_seconds: int = 3600) -> str:
    """A token signing ``agent_id`` in, as the router's tests configure it."""
    return AgentTokens(AGENT_TOKEN_SECRET).mint(
        agent_id, now=datetime.now(UTC), ttl_seconds=ttl_seconds
    )


class RecordingPublisher:
    """A ``Publisher`` that keeps what it was given (and can be told to fail)."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self.fail_next: int = 0

    async def publish_all(self, items: Sequence[Outgoing]) -> list[None]:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable (test)")
        self.published.extend(items)
        return [None for _ in items]

    def events(self, kind: type[ContractModel]) -> list[Any]:
        return [o.event for o in self.published if isinstance(o.event, kind)]


_SENDERS: dict[Channel, SenderKind] = {
    Channel.EMAIL: SenderKind.EMAIL,
    Channel.WHATSAPP: SenderKind.PHONE,
    Channel.MESSENGER: SenderKind.PSID,
    Channel.INSTAGRAM: SenderKind.IGSID,
    Channel.X: SenderKind.X_USER_ID,
    Channel.TELEGRAM: SenderKind.TELEGRAM_USER_ID,
    Channel.WEBCHAT: SenderKind.WEBCHAT_VISITOR,
}


def inbound(
    message_id: str,
    *,
    channel: Channel = Channel.EMAIL,
    sender: str = "ana@example.com",
    at: datetime = T0,
    subject: str | None = None,
    text: str = "hello",
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    thread: str | None = None,
    account: str | None = None,
    display_name: str | None = None,
    sender_kind: SenderKind | None = None,
    **extra: Any,
) -> MessageReceived:
    """A ``MessageReceived`` on any channel; email gets a Message-ID from its id."""
    email = channel == Channel.EMAIL
    scoped = (Channel.MESSENGER, Channel.INSTAGRAM, Channel.TELEGRAM, Channel.WEBCHAT)
    if account is None and channel in scoped:
        account = "acct-1"
    if account is None and email:
        account = "support@example.com"
    return MessageReceived.model_validate(
        {
            "message_id": message_id,
            "channel": channel,
            "provider_message_id": f"<{message_id}@mail.example.com>" if email else message_id,
            "provider_thread_id": thread,
            "sender": Sender(
                kind=sender_kind or _SENDERS[channel], value=sender, display_name=display_name
            ),
            "received_at": at,
            "sent_at": None,
            "subject": subject if email else None,
            "text": text,
            "in_reply_to": in_reply_to,
            "references": list(references),
            "account": account,
            # Mail whose From domain checked out: it may link identities like any channel.
            "sender_authenticated": True if email else None,
            **extra,
        }
    )


def message_ref(message_id: str) -> str:
    """The Message-ID header ``inbound`` gives an email with this id."""
    return f"<{message_id}@mail.example.com>"


def customer_message(
    message: MessageReceived, customer_id: str, identity: str, **extra: Any
) -> CustomerMessage:
    return CustomerMessage(
        customer_id=customer_id,
        identity=identity,
        message=message,
        resolved_at=message.received_at,
        **extra,
    )


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 60.0, interval: float = 0.2
) -> Any:
    """Poll ``check`` until it returns something truthy (and return it), or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def agents_online(
    probe: TopicProbe,
    url: str,
    team: dict[str, dict[str, int]],
    *,
    capacity: dict[Channel, int],
) -> None:
    """Publish each agent's profile (skills by name) and presence as a helpdesk frontend
    would, then wait until the router at ``url`` lists them all online."""
    for agent_id, skills in team.items():
        profile = AgentUpserted(
            agent_id=agent_id,
            display_name=agent_id,
            skills=skills,
            capacity=capacity,
            languages=["en"],
        )
        await probe.send(AGENT_EVENTS, profile, key=agent_id)
        status = AgentStatusChanged(agent_id=agent_id, status=AgentStatus.ONLINE)
        await probe.send(AGENT_EVENTS, status, key=agent_id)

    async def all_online() -> bool:
        async with httpx.AsyncClient(base_url=url, headers=bearer(READ_TOKEN)) as http:
            items = (await http.get("/agents")).json()["items"]
        return {a["agent_id"] for a in items if a["status"] == "online"} >= set(team)

    await eventually(all_online)


async def customer_writes(probe: TopicProbe, message_id: str, **fields: Any) -> str:
    """Publish one customer's message (``customers_write``) and return its conversation.
    Fields as for ``inbound``; the sender is ``<message_id>@example.com`` (a customer of
    its own) unless given."""
    fields.setdefault("sender", f"{message_id}@example.com")
    fields.setdefault("at", datetime.now(UTC))
    (conversation_id,) = await customers_write(probe, [inbound(message_id, **fields)])
    return conversation_id


async def customers_write(probe: TopicProbe, messages: Sequence[MessageReceived]) -> list[str]:
    """Publish customers' messages where ingest does (``support.inbound.v1``, keyed by
    sender) and return, in the same order, the conversation the router stored each in,
    read from the public activity topic."""
    for message in messages:
        await probe.send(INBOUND, message, key=identity_of(message))

    async def stored() -> list[str] | None:
        placed = {
            event.message_id: event.conversation_id
            for _, event in await probe.read_events(CONVERSATION_ACTIVITY, timeout=2.0)
            if isinstance(event, ConversationActivity)
        }
        found = [placed.get(m.message_id) for m in messages]
        return None if None in found else [str(c) for c in found]

    conversations: list[str] = await eventually(stored)
    return conversations


@dataclass
class RunningRouter:
    """A router running in the test's event loop; ``http`` presents the read token."""

    url: str
    http: httpx.AsyncClient
    ctx: RouterContext
    parts: Router
    admin: dict[str, str] = field(default_factory=lambda: bearer(ADMIN_TOKEN))

    async def customer_of(self, identity: str) -> dict[str, Any] | None:
        response = await self.http.get("/customers", params={"identity": identity})
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items[0] if items else None

    async def items(self, customer_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """Every item of a customer's timeline (messages and activity), following the
        cursors."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            response = await self.http.get(f"/customers/{customer_id}/timeline", params=params)
            response.raise_for_status()
            body = response.json()
            items += body["items"]
            cursor = body["next"]
            if cursor is None:
                return items

    async def timeline(self, customer_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The customer messages of a customer's timeline (items of type ``message``), in
        its order: what the threading and identity tests are about."""
        return [i for i in await self.items(customer_id, limit) if i["type"] == "message"]

    async def conversation(
        self, conversation_id: str, *, messages_only: bool = True
    ) -> dict[str, Any]:
        """One conversation; its ``items`` are its customer messages unless
        ``messages_only`` is false (then every item, activity included)."""
        response = await self.http.get(f"/conversations/{conversation_id}", params={"limit": 200})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if messages_only:
            body["items"] = [i for i in body["items"] if i["type"] == "message"]
        return body


@contextlib.asynccontextmanager
async def running_router(env: dict[str, str], **overrides: Any) -> AsyncIterator[RunningRouter]:
    """Build the router from ``env`` (the ``service_env`` fixture) and run it in-process."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
        "mongodb_url": env["MONGODB_URL"],
        "mongodb_database": env["MONGODB_DATABASE"],
        "topic_prefix": env["SWITCHBOARD_TOPIC_PREFIX"],
        "environment": "test",
        "http_port": free_port(),
        "read_token": READ_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "agent_token_secret": AGENT_TOKEN_SECRET,
        "kafka_linger_ms": 1,
    }
    values.update(overrides)
    settings = RouterSettings.load(**values)
    router = build(settings)
    async with (
        running(router.runtime) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers=bearer(READ_TOKEN)) as http,
    ):
        yield RunningRouter(url, http, router.ctx, router)


# --------------------------------------------------------------------------- processes


async def produce(
    bootstrap: str, topics: TopicNames, items: Sequence[tuple[str, str, ContractModel]]
) -> None:
    """Publish (contract topic, key, event) records as a producer would: pipelined, all
    acknowledged (``acks=all``) before returning."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for topic, key, event in items:
            headers = event_headers(event, source="/tests")
            futures.append(
                await producer.send(
                    topics(topic),
                    encode(event),
                    key=key.encode(),
                    headers=[(k, v.encode()) for k, v in headers.items()],
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def router_process(env: dict[str, str], output: Any = None, **extra: str) -> ServiceProcess:
    """The router as a real process (``python -m switchboard_router``) on a free port."""
    spec = ServiceSpec("router", "switchboard_router", "ROUTER_HTTP_PORT", 8003)
    environment = {
        **os.environ,
        **env,
        "ROUTER_HTTP_PORT": str(free_port()),
        **TOKEN_ENV,
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return ServiceProcess(spec, environment, output=output)
