"""Fault runs: a steady stream of customer traffic while something breaks, then a count.

``Traffic`` sends mail over SMTP and WhatsApp messages through signed webhooks the way
the outside world does: a sender retries (same Message-ID, same WhatsApp message id)
until the service acknowledges (SMTP 250, HTTP 200), as mail servers and Meta do. Every
message carries a unique token in its text, so what is stored can be counted without
knowing any service's id scheme. ``Agents`` keeps agents online and resolves what they
are assigned, and watches ``GET /agents`` for any load above capacity. ``count`` reads
the timeline collection and the dead-letter topic and says what was lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import smtplib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from switchboard_common.contract import DEADLETTER, INBOUND, Channel, ConversationAssigned
from switchboard_common.mongo import Document
from switchboard_devkit.running.stack import TEST_SECRETS, Stack
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Helpdesk, post_meta_webhook, whatsapp_text_webhook

TOKEN = re.compile(r"\bFLT-[0-9a-f]{8}-\d+\b")


@dataclass
class Sent:
    token: str
    channel: str
    attempts: int = 0
    acknowledged: bool = False
    refusals: Counter[str] = field(default_factory=Counter)


class Traffic:
    """Customers writing at a steady rate, each message retried until acknowledged."""

    def __init__(self, stack: Stack, *, rate: float = 8.0, senders: int = 12) -> None:
        self.stack = stack
        self.rate = rate
        self.run = uuid.uuid4().hex[:8]
        self.emails = [f"buyer{i}.{self.run}@example.org" for i in range(senders)]
        self.phones = [f"+3462{random.randrange(10**7):07d}" for _ in range(senders)]  # noqa: S311 - test data, not secrets
        self.sent: dict[str, Sent] = {}
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(16)

    async def run_for(self, seconds: float) -> None:
        """Offer new messages for ``seconds`` (retries of earlier ones continue after)."""
        started, n = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            token = f"FLT-{self.run}-{n}"
            channel = "email" if n % 2 == 0 else "whatsapp"
            self.sent[token] = Sent(token, channel)
            task = asyncio.create_task(self._deliver(token, n))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1
            await asyncio.sleep(1 / self.rate)

    async def drain(self, timeout: float = 300.0) -> None:
        """Wait until every message was acknowledged (senders keep retrying)."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                self._stop.set()
                stuck = [s for s in self.sent.values() if not s.acknowledged]
                refusals: Counter[str] = Counter()
                for sent in stuck:
                    refusals.update({f"{sent.channel} {k}": n for k, n in sent.refusals.items()})
                raise AssertionError(
                    f"{len(pending)} message(s) never acknowledged; their refusals: "
                    f"{dict(refusals.most_common(6))}"
                )

    async def _deliver(self, token: str, n: int) -> None:
        sent = self.sent[token]
        wamid = f"wamid.{self.run}.{n}"
        message_id = f"<{token}@mail.example.org>"
        while not self._stop.is_set():
            sent.attempts += 1
            async with self._slots:
                try:
                    if sent.channel == "email":
                        outcome = await asyncio.to_thread(self._smtp, n, token, message_id)
                    else:
                        outcome = await self._webhook(n, token, wamid)
                except (OSError, smtplib.SMTPException, httpx.HTTPError) as error:
                    outcome = type(error).__name__
            if outcome == "ok":
                sent.acknowledged = True
                return
            sent.refusals[outcome] += 1
            await asyncio.sleep(1.0)

    def _smtp(self, n: int, token: str, message_id: str) -> str:
        message = EmailMessage()
        sender = self.emails[n % len(self.emails)]
        message["From"] = sender
        message["To"] = "help@support.example.com"
        message["Subject"] = f"Order question {n}"
        message["Message-ID"] = message_id
        message.set_content(f"Hello, where is my order? Reference {token}.")
        with smtplib.SMTP("127.0.0.1", self.stack.smtp_port, timeout=30) as smtp:
            refused = smtp.send_message(message)
        return "ok" if not refused else "refused"

    async def _webhook(self, n: int, token: str, wamid: str) -> str:
        phone = self.phones[n % len(self.phones)]
        body = whatsapp_text_webhook(
            f"Any news on my order? {token}", wa_id=phone[1:], wamid=wamid, name="Buyer"
        )
        response = await post_meta_webhook(
            self.stack.url("ingest-social"), body, TEST_SECRETS["META_APP_SECRET"]
        )
        return "ok" if response.status_code == 200 else f"http_{response.status_code}"

    def acknowledged(self) -> set[str]:
        return {t for t, s in self.sent.items() if s.acknowledged}


class Agents:
    """Agents online, resolving what they get after a moment; capacity watched."""

    def __init__(self, stack: Stack, probe: TopicProbe, *, count: int = 6, capacity: int = 3):
        self.stack = stack
        self.helpdesk = Helpdesk(probe)
        self.ids = [f"agent-{i}" for i in range(count)]
        self.capacity = capacity
        self.over_capacity: list[dict[str, Any]] = []
        self.resolved: set[str] = set()
        self.polls = 0

    async def start(self) -> None:
        for agent_id in self.ids:
            await self.helpdesk.agent(
                agent_id,
                capacity={Channel.EMAIL: self.capacity, Channel.WHATSAPP: self.capacity},
                skills={"billing": 6, "orders": 6, "technical": 6},
            )

    async def work(self, stop: asyncio.Event) -> None:
        """Resolve assigned conversations and watch loads until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a fault may make either side unreachable
                await self._watch_loads()
                for conversation_id, decision in (await self.helpdesk.latest()).items():
                    if (
                        isinstance(decision, ConversationAssigned)
                        and conversation_id not in self.resolved
                    ):
                        self.resolved.add(conversation_id)
                        await self.helpdesk.resolve(conversation_id)
            await asyncio.sleep(1.0)

    async def _watch_loads(self) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{self.stack.url('router')}/agents", params={"limit": 100})
        if response.status_code != 200:
            return
        self.polls += 1
        for agent in response.json()["items"]:
            capacity = agent.get("capacity") or {}
            for channel, load in (agent.get("load") or {}).items():
                if load > capacity.get(channel, 0):
                    self.over_capacity.append(
                        {
                            "agent": agent["agent_id"],
                            "channel": channel,
                            "load": load,
                            "capacity": capacity.get(channel),
                        }
                    )


@dataclass
class Count:
    fault: str
    sent: int
    acknowledged: int
    in_timeline: int
    lost: int
    duplicates: int
    over_capacity: int
    dead_letters: int
    deliberate_bad: int
    consuming_after: bool
    retries: int

    def row(self) -> str:
        return (
            f"{self.fault:<28} {self.sent:>5} {self.acknowledged:>6} {self.in_timeline:>8} "
            f"{self.lost:>5} {self.duplicates:>5} {self.over_capacity:>6} "
            f"{self.dead_letters:>5}/{self.deliberate_bad:<3} "
            f"{'yes' if self.consuming_after else 'NO':>9} {self.retries:>7}"
        )

    @staticmethod
    def header() -> str:
        return (
            f"{'fault':<28} {'sent':>5} {'acked':>6} {'timeline':>8} {'lost':>5} {'dups':>5} "
            f"{'overcap':>6} {'DLQ/bad':>9} {'consuming':>9} {'retries':>7}"
        )


async def timeline_tokens(mongodb_url: str, database: str) -> Counter[str]:
    """How many times each traffic token is stored in the timeline."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        found: Counter[str] = Counter()
        async for doc in client[database]["timeline_messages"].find({}, {"text": 1}):
            for token in TOKEN.findall(str(doc.get("text") or "")):
                found[token] += 1
        return found
    finally:
        await client.close()


async def send_bad_records(probe: TopicProbe, count: int) -> None:
    """Deliberately bad records straight onto the inbound topic (not JSON, wrong type)."""
    for i in range(count):
        await probe.send_raw(
            INBOUND,
            b"\xff\x00 not json " + str(i).encode(),
            key=f"bad-{i}",
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", f"bad-{i}".encode()),
                ("ce_type", b"support.message.received"),
                ("ce_source", b"/faults"),
                ("ce_time", b"2026-01-01T00:00:00Z"),
                ("content-type", b"application/json"),
            ],
        )


async def dead_letters(probe: TopicProbe) -> int:
    return len(await probe.read(DEADLETTER, timeout=2.0))
