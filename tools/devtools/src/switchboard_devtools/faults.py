"""Fault runs: a steady stream of customer traffic while something breaks, then a count.

``Traffic`` sends mail over SMTP and WhatsApp messages through signed webhooks the way
the outside world does: a sender retries (same Message-ID, same WhatsApp message id)
until the service acknowledges (SMTP 250, HTTP 200), as mail servers and Meta do. Every
message carries a unique token in its text, so what is stored can be counted without
knowing any service's id scheme. ``Agents`` keeps agents online and resolves what they
are assigned, and watches ``GET /agents`` for any load above capacity. ``count`` reads
the timeline collection and the dead-letter topic and says what was lost or doubled.
``CapacityOracle`` checks capacity a second way, from the public topics alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import smtplib
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    DEADLETTER,
    INBOUND,
    AgentUpserted,
    AssignmentDecision,
    Channel,
    ConversationAssigned,
    ConversationResolved,
    OfferRejected,
)
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
                # Said here: the services' logs printed after it may be cut short.
                raise AssertionError(
                    f"{len(pending)} message(s) never acknowledged; their refusals: "
                    f"{dict(refusals.most_common(6))}; services that ended: "
                    f"{self.stack.ended() or 'none'}"
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
                except smtplib.SMTPResponseException as error:  # 451: retry later
                    outcome = f"smtp_{error.smtp_code}"
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

    def refusals(self) -> Counter[str]:
        """Every refusal senders got, as ``"<channel> <answer>"`` (``email smtp_451``)."""
        total: Counter[str] = Counter()
        for sent in self.sent.values():
            total.update({f"{sent.channel} {k}": n for k, n in sent.refusals.items()})
        return total


class Agents:
    """Agents online, resolving what they get after a moment; capacity watched."""

    def __init__(self, stack: Stack, probe: TopicProbe, *, count: int = 6, capacity: int = 3):
        self.stack = stack
        self.helpdesk = Helpdesk(probe)
        self.ids = [f"agent-{i}" for i in range(count)]
        self.capacity = capacity
        self.over_capacity: list[dict[str, Any]] = []
        #: (conversation, seq) of each assignment resolved: a conversation the customer
        #: reopens is assigned again (higher seq) and resolved again.
        self.resolved: set[tuple[str, int]] = set()
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
                    step = (conversation_id, decision.seq)
                    if isinstance(decision, ConversationAssigned) and step not in self.resolved:
                        self.resolved.add(step)
                        await self.helpdesk.resolve(conversation_id)
            await asyncio.sleep(1.0)

    async def _watch_loads(self) -> None:
        async with httpx.AsyncClient(timeout=5, headers=self.stack.router_auth()) as http:
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


@dataclass(frozen=True)
class OverCapacity:
    """A moment the public record shows an agent holding more than their capacity."""

    agent_id: str
    channel: str  # a channel, or "*" for the agent's total capacity
    at: float  # seconds since the epoch (Kafka record time of the decision)
    load: int
    capacity: int
    conversations: tuple[str, ...]


class CapacityOracle:
    """Each agent's load over time, replayed from the public topics only.

    Inputs, each with the Kafka record time it was published at: the router's decisions
    on ``support.assignments.v1`` (an event with an ``agent_id`` holds that agent's
    capacity, one without releases it; per conversation only a higher ``seq`` counts,
    as CONTRACT.md tells frontends), the frontend's resolutions and offer rejections
    (they end a hold; the router publishes no event for a resolution) and agent
    profiles (capacity per channel and total). Nothing of the router's own records is
    read, so a double-booked capacity slot shows here even when the router's counts
    look right.

    Every interval is *inside* the real one: a decision is published after the router
    claimed it, and a conversation released by a resolution or a rejection is released
    by the router after the frontend published it. So legitimate work never overlaps
    here, and any overlap above capacity is real. At equal record times (milliseconds)
    releases are replayed first, for the same reason. Channel weights are taken as 1
    (the default policy).
    """

    _RELEASE, _PROFILE, _DECISION = 0, 1, 2

    def __init__(self) -> None:
        self._items: list[tuple[float, int, int, object]] = []
        #: Holds the last ``replay`` applied (distinct assignments).
        self.assignments = 0

    def profile(self, at: float, agent: AgentUpserted) -> None:
        self._add(at, self._PROFILE, agent)

    def decision(self, at: float, event: AssignmentDecision) -> None:
        self._add(at, self._DECISION, event)

    def released(self, at: float, conversation_id: str, agent_id: str | None = None) -> None:
        """The frontend resolved the conversation (``agent_id``: that agent rejected
        the offer, which releases only their hold)."""
        self._add(at, self._RELEASE, (conversation_id, agent_id))

    def _add(self, at: float, kind: int, item: object) -> None:
        self._items.append((at, kind, len(self._items), item))

    def replay(self) -> list[OverCapacity]:
        """Every moment a decision put an agent above a capacity, in time order."""
        capacity: dict[str, Mapping[str, int]] = {}
        total: dict[str, int | None] = {}
        seq: dict[str, int] = {}
        holder: dict[str, tuple[str, str]] = {}  # conversation -> (agent, channel)
        held: defaultdict[str, dict[str, str]] = defaultdict(dict)  # agent -> conv -> channel
        over: list[OverCapacity] = []
        self.assignments = 0
        for at, _, _, item in sorted(self._items, key=lambda i: i[:3]):
            if isinstance(item, AgentUpserted):
                capacity[item.agent_id] = {str(c): n for c, n in item.capacity.items()}
                total[item.agent_id] = item.total_capacity
            elif isinstance(item, tuple):
                conversation_id, rejecting = item
                if conversation_id in holder and rejecting in (None, holder[conversation_id][0]):
                    agent_id, _channel = holder.pop(conversation_id)
                    held[agent_id].pop(conversation_id, None)
            elif isinstance(item, AssignmentDecision):
                if item.seq <= seq.get(item.conversation_id, -1):
                    continue  # a republished or superseded decision
                seq[item.conversation_id] = item.seq
                if item.conversation_id in holder:
                    previous, _channel = holder.pop(item.conversation_id)
                    held[previous].pop(item.conversation_id, None)
                if item.agent_id is None:
                    continue
                self.assignments += 1
                channel = str(item.channel)
                holder[item.conversation_id] = (item.agent_id, channel)
                mine = held[item.agent_id]
                mine[item.conversation_id] = channel
                over += self._check(
                    at, item.agent_id, channel, mine, capacity=capacity, total=total
                )
        return over

    def history(self, conversation_id: str) -> list[str]:
        """What the oracle saw of one conversation, in time order (for failure messages:
        ids, steps, agents and slots only, no personal data)."""
        lines = []
        for at, _, _, item in sorted(self._items, key=lambda i: i[:3]):
            if isinstance(item, AssignmentDecision) and item.conversation_id == conversation_id:
                route = item.reason.get("route")
                slots = route.get("slots") if isinstance(route, dict) else None
                lines.append(
                    f"{at:.3f} seq={item.seq} {type(item).__name__} agent={item.agent_id} "
                    f"slots={slots} decided_at={item.decided_at:%H:%M:%S.%f}"
                )
            elif isinstance(item, tuple) and item[0] == conversation_id:
                lines.append(f"{at:.3f} released by the frontend (agent={item[1]})")
        return lines

    def explain(self, over: OverCapacity) -> str:
        """An over-capacity moment with the history of every conversation in it."""
        parts = [f"{over.agent_id} {over.channel}: {over.load} > {over.capacity} at {over.at:.3f}"]
        for conversation_id in over.conversations:
            parts.append(f"  {conversation_id}:")
            parts += [f"    {line}" for line in self.history(conversation_id)]
        return "\n".join(parts)

    @staticmethod
    def _check(
        at: float,
        agent_id: str,
        channel: str,
        mine: Mapping[str, str],
        *,
        capacity: Mapping[str, Mapping[str, int]],
        total: Mapping[str, int | None],
    ) -> list[OverCapacity]:
        found = []
        on_channel = tuple(sorted(c for c, ch in mine.items() if ch == channel))
        limit = capacity.get(agent_id, {}).get(channel, 0)  # unknown agent: no capacity
        if len(on_channel) > limit:
            found.append(OverCapacity(agent_id, channel, at, len(on_channel), limit, on_channel))
        overall = total.get(agent_id)
        if overall is not None and len(mine) > overall:
            found.append(OverCapacity(agent_id, "*", at, len(mine), overall, tuple(sorted(mine))))
        return found


async def capacity_oracle(probe: TopicProbe) -> CapacityOracle:
    """The oracle fed from the topics as they are now (decisions, resolutions, agents)."""
    oracle = CapacityOracle()
    for record, event in await probe.read_events(ASSIGNMENTS, timeout=5.0):
        if isinstance(event, AssignmentDecision):
            oracle.decision(record.timestamp_ms / 1000, event)
    for record, event in await probe.read_events(CONVERSATION_EVENTS, timeout=5.0):
        if isinstance(event, ConversationResolved):
            oracle.released(record.timestamp_ms / 1000, event.conversation_id)
    for record, event in await probe.read_events(AGENT_EVENTS, timeout=5.0):
        if isinstance(event, AgentUpserted):
            oracle.profile(record.timestamp_ms / 1000, event)
        elif isinstance(event, OfferRejected):
            oracle.released(record.timestamp_ms / 1000, event.conversation_id, event.agent_id)
    return oracle


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
    #: Moments above capacity by the ``CapacityOracle`` (public topics only).
    oracle_over: int = 0
    #: Assignments the oracle replayed (shows it had something to check).
    oracle_assignments: int = 0
    #: Refusals senders got, by ``"<channel> <answer>"`` (``email smtp_451``).
    refused: Counter[str] = field(default_factory=Counter)

    def row(self) -> str:
        return (
            f"{self.fault:<30} {self.sent:>5} {self.acknowledged:>6} {self.in_timeline:>8} "
            f"{self.lost:>5} {self.duplicates:>5} {self.over_capacity:>7} "
            f"{self.oracle_over:>6}/{self.oracle_assignments:<8} "
            f"{self.dead_letters:>5}/{self.deliberate_bad:<3} "
            f"{'yes' if self.consuming_after else 'NO':>9} {self.retries:>7}  "
            + " ".join(f"{k.replace(' ', ':')}={n}" for k, n in sorted(self.refused.items()))
        )

    @staticmethod
    def header() -> str:
        return (
            f"{'fault':<30} {'sent':>5} {'acked':>6} {'timeline':>8} {'lost':>5} {'dups':>5} "
            f"{'overcap':>7} {'oracle/assigned':>15} {'DLQ/bad':>9} {'consuming':>9} "
            f"{'retries':>7}  refusals"
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
