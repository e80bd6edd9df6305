"""``make demo``: realistic support traffic through a running Switchboard, and what it did.

Works against ``make run`` (local processes) and ``make up`` (docker-compose): both
serve the contract ports on 127.0.0.1 and Kafka on 127.0.0.1:9092. It

1. checks every service answers ``/readyz``;
2. publishes agents as a helpdesk frontend does: ``support.agent.upserted`` (skills,
   capacity per channel, languages) and ``support.agent.status_changed`` online, on
   ``support.agent-events.v1``;
3. sends customer mail over SMTP (smtplib), signed WhatsApp, Telegram and Messenger
   webhooks, and a web chat visitor's message over the widget's socket (as the web
   chat's own demo page does), each run with fresh ids (re-running adds new
   conversations);
4. reads ``support.assignments.v1`` from the moment before the traffic and prints each
   routing decision (deduplicated by CloudEvents id, ordered by ``seq`` per
   conversation, as docs/integration.md tells frontends to do);
5. shows the acknowledgements of the new email conversations and answers one as its
   agent would (``support.reply.requested`` on ``support.outbound.v1``), with their
   delivery statuses; and, when Switchboard runs under ``make run``, the mail itself
   from its mail sink (``.run/outbox``, or ``SWITCHBOARD_DEMO_OUTBOX``);
6. prints the router's queue and agents (with its read token), the SLA monitor's
   clock metrics and the web chat's demo page, to chat as a visitor by hand;
7. ends with the agent console's address and a development agent token for one of the
   demo's agents (minted as ``python -m switchboard_router agent-token`` mints it, and
   checked with the router's ``GET /me``), to sign in and work the inbox by hand.

Environment (all optional): ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092),
``SWITCHBOARD_TOPIC_PREFIX``, ``SWITCHBOARD_DEMO_HOST`` (127.0.0.1), the services' port
variables of CONTRACT.md, ``META_APP_SECRET``, ``TELEGRAM_SECRET_TOKEN`` and
``ROUTER_READ_TOKEN`` (or ``ROUTER_READ_TOKEN_FILE``) and ``ROUTER_AGENT_TOKEN_SECRET``
(or ``ROUTER_AGENT_TOKEN_SECRET_FILE``) (the development secrets by default, as
``SWITCHBOARD_ENV=dev`` services use), and ``SWITCHBOARD_DEMO_DOMAIN``
(support.example.com).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import smtplib
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx

from switchboard_common.cloudevents import DecodeError, decode
from switchboard_common.contract.enums import AgentStatus, Channel
from switchboard_common.contract.events import (
    AgentStatusChanged,
    AgentUpserted,
    ContractModel,
    DeliveryUpdated,
)
from switchboard_common.contract.topics import AGENT_EVENTS, ASSIGNMENTS, OUTBOUND, TOPICS_BY_NAME
from switchboard_common.kafka import (
    EventPublisher,
    Outgoing,
    aiokafka_security_options,
    make_broker,
)
from switchboard_common.settings import ServiceSettings
from switchboard_devkit.running.processes import KNOWN_PORTS
from switchboard_devtools.demo_replies import outbox, show_outbox, show_replies
from switchboard_router.agent_tokens import DEFAULT_TTL_SECONDS, AgentTokens
from switchboard_router.settings import DEV_AGENT_TOKEN_SECRET, DEV_TOKENS

AGENTS = (
    AgentUpserted(
        agent_id="agent-ana",
        display_name="Ana García",
        skills={"billing": 8, "orders": 6, "vip": 5},
        capacity={
            Channel.EMAIL: 4,
            Channel.WHATSAPP: 3,
            Channel.TELEGRAM: 3,
            Channel.MESSENGER: 3,
            Channel.WEBCHAT: 3,
        },
        languages=["en", "es"],
    ),
    AgentUpserted(
        agent_id="agent-ben",
        display_name="Ben Okafor",
        skills={"technical": 9, "orders": 4},
        capacity={
            Channel.EMAIL: 5,
            Channel.WHATSAPP: 2,
            Channel.TELEGRAM: 2,
            Channel.MESSENGER: 2,
            Channel.WEBCHAT: 2,
        },
        languages=["en"],
    ),
    AgentUpserted(
        agent_id="agent-chloe",
        display_name="Chloé Martin",
        skills={"technical": 6, "billing": 5},
        capacity={
            Channel.EMAIL: 3,
            Channel.WHATSAPP: 3,
            Channel.TELEGRAM: 3,
            Channel.MESSENGER: 3,
            Channel.WEBCHAT: 4,
        },
        languages=["en", "fr", "es"],
    ),
)

MAILS = (
    (
        "maria.lopez@example.org",
        "Refund for order 10422",
        "Hello, I was charged twice for my last order. "
        "Could you refund the duplicate payment please?",
    ),
    (
        "j.smith@example.net",
        "Cannot log in since this morning",
        "Every time I try to log in I get error 500 and the app crashes. "
        "This is urgent, I need my invoices today.",
    ),
    (
        "sophie@example.fr",
        "Where is my parcel?",
        "Hello, my delivery was due yesterday and the tracking page has not changed "
        "for three days. Order 88812.",
    ),
)


@dataclass
class Demo:
    settings: ServiceSettings
    host: str
    domain: str
    seconds: float
    #: make run's mail sink, when there is one to read.
    outbox: Path | None = None
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def customer(self, address: str) -> str:
        """This run's address for a demo customer (``maria.lopez+<run>@example.org``), so
        a second run opens new conversations instead of threading into the first's."""
        local, _, domain = address.partition("@")
        return f"{local}+{self.run}@{domain}"

    @property
    def customers(self) -> list[str]:
        return [self.customer(sender) for sender, _, _ in MAILS]

    def url(self, port_env: str, default: int) -> str:
        return f"http://{self.host}:{os.environ.get(port_env, default)}"

    @property
    def services(self) -> dict[str, str]:
        return {name: self.url(env, port) for name, (env, port) in KNOWN_PORTS.items()}


def say(text: str) -> None:
    print(text, flush=True)


async def check_ready(demo: Demo) -> bool:
    ok = True
    async with httpx.AsyncClient(timeout=5) as client:
        for name, base in demo.services.items():
            try:
                response = await client.get(f"{base}/readyz")
                ready = response.status_code == 200
                detail = "" if ready else f" ({response.text})"
            except httpx.HTTPError as error:
                ready, detail = False, f" ({type(error).__name__})"
            say(f"  {'ready' if ready else 'NOT READY'}  {name:14} {base}{detail}")
            ok = ok and ready
    return ok


async def publish_agents(demo: Demo) -> None:
    broker = make_broker(demo.settings)
    await broker.connect()
    try:
        publisher = EventPublisher(
            broker, demo.settings.topics, "helpdesk-demo", publishes=[AGENT_EVENTS]
        )
        events: list[Outgoing] = [Outgoing(AGENT_EVENTS, a.agent_id, a) for a in AGENTS]
        events += [
            Outgoing(
                AGENT_EVENTS,
                a.agent_id,
                AgentStatusChanged(agent_id=a.agent_id, status=AgentStatus.ONLINE),
            )
            for a in AGENTS
        ]
        await publisher.publish_all(events)
    finally:
        await broker.stop()
    for agent in AGENTS:
        channels = ", ".join(f"{c}:{n}" for c, n in agent.capacity.items())
        say(f"  {agent.agent_id:12} online  skills {agent.skills}  capacity {channels}")


def send_mail(demo: Demo) -> int:
    port = int(os.environ.get("INGEST_EMAIL_SMTP_PORT", "2525"))
    sent = 0
    with smtplib.SMTP(demo.host, port, timeout=30) as smtp:
        smtp.ehlo("demo.example.org")
        for address, subject, text in MAILS:
            sender = demo.customer(address)
            message = EmailMessage()
            message["From"] = sender
            message["To"] = f"help@{demo.domain}"
            message["Subject"] = subject
            message["Message-ID"] = make_msgid(idstring=demo.run, domain="example.org")
            message.set_content(text)
            smtp.send_message(message)
            sent += 1
            say(f"  SMTP 250  {sender:36} {subject}")
    return sent


def webhooks(demo: Demo) -> list[tuple[str, str, dict[str, Any]]]:
    """(provider, path, payload) with fresh ids for this run."""
    from switchboard_devtools.testing.social import BOT, load_sample

    now = int(time.time())
    whatsapp = load_sample("whatsapp_text")
    value = whatsapp["entry"][0]["changes"][0]["value"]
    value["messages"][0].update(
        id=f"wamid.demo-{demo.run}-1",
        timestamp=str(now),
        text={"body": "Hola, mi pedido 55120 no ha llegado todavía. ¿Me podéis decir dónde está?"},
    )
    value["messages"][0]["from"] = value["contacts"][0]["wa_id"] = (
        f"3460011{demo.run[:4].encode().hex()[:4]}"
    )
    telegram = load_sample("telegram_message")
    telegram["update_id"] = now
    message = telegram["message"]
    message["message_id"] = int(demo.run[:6], 16)
    message["date"] = now
    message.pop("reply_to_message", None)
    message.pop("photo", None)
    message.pop("caption", None)
    message["text"] = "The app crashes with error E42 every time I open my invoices. Please help!"
    messenger = load_sample("messenger_text")
    for entry in messenger["entry"]:
        entry["time"] = now * 1000
        for item in entry.get("messaging", []):
            item["timestamp"] = now * 1000
            if "message" in item:
                item["message"]["mid"] = f"m_demo-{demo.run}"
                item["message"]["text"] = "I want a refund for the payment I made twice yesterday."
    return [
        ("meta", "/webhooks/meta", whatsapp),
        # Telegram updates do not name the bot: the URL registered with setWebhook does.
        ("telegram", f"/webhooks/telegram?bot={BOT}", telegram),
        ("meta", "/webhooks/meta", messenger),
    ]


async def send_webhooks(demo: Demo) -> int:
    from switchboard_devtools.testing.social import encode, signed_headers

    secrets = {
        "meta": os.environ.get("META_APP_SECRET", "dev-meta-app-secret"),
        "telegram": os.environ.get("TELEGRAM_SECRET_TOKEN", "dev-telegram-secret-token"),
    }
    sent = 0
    async with httpx.AsyncClient(base_url=demo.services["ingest-social"], timeout=15) as client:
        for provider, path, payload in webhooks(demo):
            body = encode(payload)
            response = await client.post(
                path, content=body, headers=signed_headers(provider, body, secrets[provider])
            )
            say(f"  HTTP {response.status_code}  {path.split('?')[0]:20} {response.text[:70]}")
            sent += response.status_code == 200
    return sent


#: What the demo's web chat visitor writes.
WEBCHAT_TEXT = "Hi! I ordered a gift card an hour ago and the code never arrived. Can you help?"


async def send_webchat(demo: Demo) -> int:
    """One visitor's message over the widget's socket, as the web chat's demo page sends
    it (the page's origin is the web chat's own): hello, the welcome, then the message,
    acknowledged once Kafka has it. Returns how many were acknowledged (0 or 1)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException
    from websockets.typing import Origin

    base = demo.services["webchat"]
    url = base.replace("http://", "ws://", 1) + "/chat/socket"
    client_id = f"demo-{demo.run}"
    hello = {"type": "hello", "token": None, "after": 0, "identity": None, "name": None}
    send = {"type": "send", "client_id": client_id, "text": WEBCHAT_TEXT}
    try:
        async with asyncio.timeout(30), connect(url, origin=Origin(base)) as socket:
            await socket.send(json.dumps(hello))
            async for frame in socket:
                reply = json.loads(frame)
                if reply.get("type") == "error":
                    say(f"  error {reply.get('code')}  {url}")
                    return 0
                if reply.get("type") == "welcome":
                    await socket.send(json.dumps(send))
                elif reply.get("type") == "ack" and reply.get("client_id") == client_id:
                    say(f"  ack seq {reply.get('seq')}  {url:36} {WEBCHAT_TEXT[:50]}")
                    return 1
    except (OSError, TimeoutError, WebSocketException) as error:
        say(f"  not sent ({type(error).__name__})  {url}")
    return 0


@dataclass
class Seen:
    """What the demo read from the moment before its traffic: routing decisions by
    conversation and the delivery statuses of replies by ``reply_id``."""

    decisions: dict[str, list[ContractModel]] = field(default_factory=dict)
    deliveries: dict[str, list[DeliveryUpdated]] = field(default_factory=dict)


async def watch(demo: Demo, seen: Seen, started: asyncio.Event, stop: asyncio.Event) -> None:
    """Decisions on support.assignments.v1 (printed) and statuses on support.outbound.v1
    from now on, deduplicated by ce_id."""
    from aiokafka import AIOKafkaConsumer

    topics = demo.settings.topics
    consumer = AIOKafkaConsumer(
        topics.assignments,
        topics(OUTBOUND),
        bootstrap_servers=demo.settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        **aiokafka_security_options(demo.settings),
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        while not consumer.assignment():  # noqa: ASYNC110 - polling aiokafka's state, no event exists
            await asyncio.sleep(0.1)
        for tp in consumer.assignment():
            await consumer.position(tp)  # pin "latest" before any traffic is sent
        started.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    topic = TOPICS_BY_NAME[topics.contract_name(record.topic)]
                    try:
                        attributes, payload = decode(topic, record.headers, record.value)
                    except DecodeError:
                        continue
                    if attributes.id in ids:
                        continue  # the router may publish a decision twice: same id, same seq
                    ids.add(attributes.id)
                    if isinstance(payload, DeliveryUpdated):
                        seen.deliveries.setdefault(payload.reply_id, []).append(payload)
                    elif topic.name == ASSIGNMENTS:
                        decided(seen, payload)
    finally:
        await consumer.stop()


def decided(seen: Seen, payload: ContractModel) -> None:
    conversation = str(getattr(payload, "conversation_id", ""))
    seen.decisions.setdefault(conversation, []).append(payload)
    say(
        f"  seq {getattr(payload, 'seq', '?'):>3}  {payload.ce_type:34} "
        f"{conversation[:24]:24} agent={getattr(payload, 'agent_id', None)} "
        f"queue={getattr(payload, 'queue', None)} "
        f"priority={getattr(payload, 'priority', None)}"
    )


def _secret(name: str, development: str) -> str:
    """``name`` from the environment, or the file ``<name>_FILE`` names, or the value a
    ``SWITCHBOARD_ENV=dev`` router uses."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get(name) or development


def router_read_token() -> str:
    return _secret("ROUTER_READ_TOKEN", DEV_TOKENS["ROUTER_READ_TOKEN"])


def agent_token_secret() -> str:
    return _secret("ROUTER_AGENT_TOKEN_SECRET", DEV_AGENT_TOKEN_SECRET)


#: The agent whose token the demo prints (the first of ``AGENTS``).
CONSOLE_AGENT = AGENTS[0].agent_id


async def show_console(demo: Demo) -> None:
    """The console's address and a token for ``CONSOLE_AGENT``, minted with the same
    code as the router's ``agent-token`` command, and whether the router takes it."""
    router = demo.services["router"]
    token = AgentTokens(agent_token_secret()).mint(CONSOLE_AGENT, now=datetime.now(UTC))
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            me = await client.get(f"{router}/me", headers={"Authorization": f"Bearer {token}"})
        verdict = (
            f"the router signs it in as {me.json().get('agent_id')}"
            if me.status_code == 200
            else f"the router answered {me.status_code}: set ROUTER_AGENT_TOKEN_SECRET to "
            "the router's, or mint one with `python -m switchboard_router agent-token`"
        )
    except (httpx.HTTPError, ValueError) as error:
        verdict = f"not checked ({type(error).__name__})"
    say(f"\nAgent console: {router}/console")
    hours = DEFAULT_TTL_SECONDS // 3600
    say(f"Development agent token for {CONSOLE_AGENT} ({hours} h; {verdict}):")
    say(f"  {token}")


async def show_state(demo: Demo) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        router = demo.services["router"]
        auth = {"Authorization": f"Bearer {router_read_token()}"}
        for path in ("/queue", "/agents"):
            try:
                response = await client.get(f"{router}{path}", headers=auth)
                if response.status_code in (401, 403):
                    say(f"\nrouter GET {path}: {response.status_code}: set ROUTER_READ_TOKEN")
                    continue
                items = response.json().get("items", [])
                say(f"\nrouter GET {path}: {len(items)} item(s)")
                for item in items[:10]:
                    say(f"  {json.dumps(item, default=str)[:160]}")
            except (httpx.HTTPError, ValueError) as error:
                say(f"\nrouter GET {path}: {type(error).__name__}")
        say("\nSLA monitor /metrics (clocks):")
        try:
            text = (await client.get(f"{demo.services['sla-monitor']}/metrics")).text
        except httpx.HTTPError as error:
            say(f"  unreachable ({type(error).__name__})")
            return
        for line in text.splitlines():
            if line.startswith(
                (
                    "switchboard_sla_open_clocks",
                    "switchboard_sla_at_risk_clocks",
                    "switchboard_sla_oldest_waiting_seconds",
                    "switchboard_sla_due_conversations",
                    "switchboard_consumer_records_total",
                )
            ):
                say(f"  {line}")


async def main_async(demo: Demo) -> int:
    say(
        f"Switchboard demo (run {demo.run}) against {demo.host}, "
        f"Kafka {demo.settings.kafka_bootstrap_servers}\n"
    )
    say("services:")
    if not await check_ready(demo):
        say("\nstart the system first: `make run` (local) or `make up` (docker-compose)")
        return 2
    say("\nagents (published on support.agent-events.v1 as a helpdesk frontend does):")
    await publish_agents(demo)
    seen, started, stop = Seen(), asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(watch(demo, seen, started, stop))
    await asyncio.wait_for(started.wait(), timeout=30)
    since = time.time()
    say("\ncustomer mail (SMTP):")
    mails = await asyncio.to_thread(send_mail, demo)
    say("\nsigned webhooks:")
    hooks = await send_webhooks(demo)
    say("\nweb chat (the widget's socket):")
    chats = await send_webchat(demo)
    say(f"\nrouting decisions on support.assignments.v1 (watching {demo.seconds:.0f} s):")
    await asyncio.sleep(demo.seconds)
    try:
        await show_replies(demo, seen, {"Authorization": f"Bearer {router_read_token()}"})
    finally:
        stop.set()
        await watcher
    show_outbox(demo.outbox, demo.customers, since)
    decisions = seen.decisions
    await show_state(demo)
    total = sum(len(v) for v in decisions.values())
    say(
        f"\n{mails} mail(s), {hooks} webhook(s) and {chats} web chat message(s) accepted; "
        f"{total} routing decision(s) for {len(decisions)} conversation(s) seen."
    )
    say(f"\nChat as a visitor yourself: {demo.services['webchat']}/chat/demo")
    if total == 0:
        say(
            "No decisions yet: check `make run` output or "
            "`docker-compose -p switchboard logs router`. "
            "Grafana (make up): http://127.0.0.1:3000; Prometheus: http://127.0.0.1:9090"
        )
    await show_console(demo)
    return 0 if total else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchboard-demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="how long to watch the assignments"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    demo = Demo(
        settings=ServiceSettings.load(),
        host=os.environ.get("SWITCHBOARD_DEMO_HOST", "127.0.0.1"),
        domain=os.environ.get("SWITCHBOARD_DEMO_DOMAIN", "support.example.com"),
        seconds=args.seconds,
        outbox=outbox(),
    )
    try:
        return asyncio.run(main_async(demo))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
