"""The agent's workspace end to end, in a real browser: a customer writes on WhatsApp (a
signed Meta webhook), the helpdesk links her email to her profile, an agent is published
as a frontend publishes one and signs in to the router's console (``/console``) in
Debian's headless Chromium with a token from the admin API, goes online; the agent's line
to the router is cut while another customer's mail is offered, and the page reconnects
and reads it again; the customer's email (sent over SMTP) is offered live in the inbox;
the conversation shows her earlier WhatsApp message in the same timeline; the agent
accepts (keyboard), adds a note, replies (the reply reaches her mailbox on a local relay)
and resolves. The test asserts what the page shows and the events on the topics. The
router, ingest-email, ingest-social and the SLA monitor (the due times the console shows)
run as separate processes on real Kafka and the database; screenshots go to the test's
output directory."""

from __future__ import annotations

import asyncio
import random
import smtplib
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from switchboard_common.contract import (
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    OUTBOUND,
    AgentStatus,
    AgentStatusChanged,
    Channel,
    ContractModel,
    ConversationResolved,
    NoteAdded,
    OfferAccepted,
    ReplyRequested,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.servers.relay import LocalRelay, text_of
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Customer, Helpdesk, customer_timeline, eventually
from switchboard_devtools.testing.browser import CuttableLine, chromium, output_dir

pytestmark = pytest.mark.e2e

#: The mail exchanger in front of ingest-email whose Authentication-Results it trusts.
MX = "mx.support.example.com"
#: Offers wait for the agent's answer (long enough that none expires during the test).
POLICY = {
    "version": 1,
    "queues": [{"name": "general", "target": {"conversation_skills": "none"}}],
    "offers": {"require_acceptance": True, "timeout_seconds": 600},
}


@pytest.fixture(scope="module")
def line() -> Iterator[CuttableLine]:
    """The agent's network: the browser reaches the router only through it."""
    with CuttableLine() as cuttable:
        yield cuttable


@pytest.fixture(scope="module")
def relay() -> Iterator[LocalRelay]:
    with LocalRelay.started() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    infra: Infra, relay: LocalRelay, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    policy = tmp_path_factory.mktemp("workspace") / "routing.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "ingest-email",
        "ingest-social",
        "sla-monitor",
        extra_env={
            "OUTBOUND_SMTP_URL": f"{relay.url}?tls=none",
            # The support domain's MX checked the sender (DMARC) and says so: mail that
            # proves its From may join the customer whose verified email it is.
            "INGEST_EMAIL_SENDER_AUTH": "authentication-results",
            "INGEST_EMAIL_AUTHSERV_IDS": MX,
            "ROUTER_POLICY_FILE": str(policy),
        },
    ) as running:
        yield running


class Console:
    """What the agent sees and does in the console."""

    def __init__(self, browser: webdriver.Chrome, shots: Path) -> None:
        self.browser = browser
        self.shots = shots

    def find(self, css: str) -> Any:
        return self.browser.find_element(By.CSS_SELECTOR, css)

    def status(self) -> str:
        return str(self.find("#status").text)

    def visible(self, css: str) -> bool:
        return bool(self.find(css).is_displayed())

    def states(self) -> dict[str, str]:
        """The inbox: each conversation's state."""
        return {i["conversation"]: i["state"] for i in self.inbox()}

    def inbox(self) -> list[dict[str, str]]:
        script = """
            return [...document.querySelectorAll('#inbox-list button')].map(b => ({
              conversation: b.dataset.conversation, state: b.dataset.state,
              text: b.innerText}));
        """
        found: list[dict[str, str]] = self.browser.execute_script(script)
        return found

    def timeline(self) -> list[dict[str, str]]:
        """Every item of the open conversation's timeline, top to bottom."""
        script = """
            return [...document.querySelectorAll('#timeline > li')].map(e => ({
              type: e.dataset.type, channel: e.dataset.channel || '',
              conversation: e.dataset.conversation, other: e.classList.contains('other'),
              text: (e.querySelector('[data-text]') || {}).textContent || '',
              all: e.innerText}));
        """
        found: list[dict[str, str]] = self.browser.execute_script(script)
        return found

    def items(self, kind: str) -> list[dict[str, str]]:
        return [i for i in self.timeline() if i["type"] == kind]

    def facts(self) -> dict[str, str]:
        script = """
            return Object.fromEntries([...document.querySelectorAll('#facts dd')].map(
              d => [d.dataset.fact, d.textContent]));
        """
        found: dict[str, str] = self.browser.execute_script(script)
        return found

    def conversation_state(self) -> str:
        return str(self.find("#conversation-body").get_attribute("data-state") or "")

    def live(self) -> str:
        return str(self.find("#live").get_attribute("data-live"))

    def type_into(self, css: str, text: str) -> None:
        box = self.find(css)
        box.clear()
        box.send_keys(text)

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.shot("timed-out")
                raise AssertionError(
                    f"timed out waiting for {what}: status {self.status()!r}, "
                    f"inbox {self.inbox()}, timeline {self.timeline()}"
                )
            time.sleep(0.2)

    async def until_async(self, condition: Callable[[], bool], what: str) -> None:
        await asyncio.to_thread(self.until, condition, what)

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))


async def events_of(
    probe: TopicProbe, topic: str, kind: type[ContractModel], **match: object
) -> list[Any] | None:
    found = [
        e
        for _, e in await probe.read_events(topic, timeout=5)
        if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
    ]
    return found or None


async def on_topic(
    probe: TopicProbe, topic: str, kind: type[ContractModel], **match: object
) -> list[Any]:
    return await eventually(
        lambda: events_of(probe, topic, kind, **match), what=f"{kind.__name__} on {topic}"
    )


async def authenticated_mail(who: Customer, subject: str, body: str) -> None:
    """Mail from ``who`` as the support domain's MX hands it on: with its DMARC pass on
    top (unauthenticated mail never joins a customer by a verified email)."""
    domain = who.email.rpartition("@")[2]
    message = EmailMessage()
    message["Authentication-Results"] = (
        f"{MX}; dkim=pass header.d={domain}; spf=pass smtp.mailfrom={domain};"
        f" dmarc=pass header.from={domain}"
    )
    message["From"] = f"Ana García <{who.email}>"
    message["To"] = who.support_address
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=domain)
    message["Date"] = formatdate(usegmt=True)
    message.set_content(body)

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", who.smtp_port, timeout=30) as smtp:
            smtp.send_message(message)

    await asyncio.to_thread(send)


async def offered_to(stack: Stack, agent_id: str) -> str:
    """The conversation the router offers to the agent, from its inbox API (read
    directly, not through the agent's line)."""

    async def offered() -> str | None:
        async with httpx.AsyncClient(timeout=10, headers=stack.router_auth()) as http:
            inbox = await http.get(f"{stack.url('router')}/agents/{agent_id}/conversations")
        items = [i for i in inbox.json().get("items", []) if i["state"] == "offered"]
        return str(items[0]["conversation_id"]) if items else None

    return await eventually(offered, what=f"an offer to {agent_id}")


async def mint_token(stack: Stack, agent_id: str) -> str:
    async with httpx.AsyncClient(timeout=10, headers=stack.router_auth(admin=True)) as http:
        minted = await http.post(f"{stack.url('router')}/admin/agents/{agent_id}/tokens", json={})
    assert minted.status_code == 201, minted.text
    return str(minted.json()["token"])


async def test_an_agent_signs_in_takes_an_email_offer_sees_whatsapp_history_replies_and_resolves(
    stack: Stack, relay: LocalRelay, line: CuttableLine, request: pytest.FixtureRequest
) -> None:
    marker = uuid.uuid4().hex[:6]  # this run's texts, whatever else is on the topics
    agent = f"agent-{marker}"
    ana = Customer(
        email=f"ana.{marker}@example.org",
        phone=f"+3460{random.randrange(10**7):07d}",
        smtp_port=stack.smtp_port,
        social_url=stack.url("ingest-social"),
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )
    bo = Customer(
        email=f"bo.{marker}@example.org",
        phone="+34600000000",
        smtp_port=stack.smtp_port,
        social_url="http://127.0.0.1:9",  # not used: Bo only mails
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )
    router = stack.url("router")
    line.target_port = int(router.rsplit(":", 1)[1])
    whatsapp_text = f"Hi, my parcel {marker} has not arrived. Can you check?"
    mail_text = f"Hello again, still no parcel {marker}. I wrote on WhatsApp yesterday."
    reply_text = f"Sorry, Ana: parcel {marker} ships again today, tracking follows."
    note_text = f"Courier lost parcel {marker}; reshipped at our cost."

    # Ana writes on WhatsApp first; the helpdesk knows her email and records it.
    answer = await ana.whatsapp(whatsapp_text)
    assert answer.status_code == 200, answer.text
    first = await customer_timeline(
        router, stack.router_auth(), f"whatsapp:{ana.phone}", messages=1
    )
    customer_id = first["customer_id"]
    async with httpx.AsyncClient(timeout=10, headers=stack.router_auth(admin=True)) as http:
        linked = await http.post(
            f"{router}/admin/customers/{customer_id}/profile",
            json={"phones": [ana.phone], "verified_emails": [ana.email]},
        )
    assert linked.status_code == 200, linked.text

    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        # The agent exists (published as a frontend does) and gets a token; email only,
        # so the WhatsApp conversation waits in the queue for someone else.
        await Helpdesk(probe).agent(agent, capacity={Channel.EMAIL: 2}, status=None)
        token = await mint_token(stack, agent)

        with chromium(width=1280, height=1000) as browser:
            console = Console(browser, output_dir(request.node.name))
            browser.get(f"{line.url}/console")
            console.until(lambda: console.visible("#token"), "the sign-in form")
            console.shot("1-sign-in")

            # Sign in with the token; the page asks the router who it is.
            console.type_into("#token", token)
            console.find("#sign-in-form button[type=submit]").click()
            await console.until_async(
                lambda: console.visible("#workspace") and console.find("#agent-id").text == agent,
                "the agent signed in",
            )
            await console.until_async(
                lambda: console.live() == "connected", "the event stream connected"
            )
            assert console.inbox() == []
            assert browser.execute_script("return sessionStorage.length") == 1

            # Online: the select is a real control with its label.
            assert console.find("label[for=presence]").text == "Presence"
            Select(console.find("#presence")).select_by_value("online")
            await console.until_async(
                lambda: "Presence online: done" in console.status(), "presence saved"
            )
            [online] = await on_topic(probe, AGENT_EVENTS, AgentStatusChanged, agent_id=agent)
            assert online.status is AgentStatus.ONLINE
            console.shot("2-online")

            # The agent's line drops: the page says so and reconnects by itself, and
            # reads again what happened meanwhile (Bo's mail, offered to the agent).
            line.cut()
            await console.until_async(
                lambda: console.live() == "reconnecting", "the page to notice the cut"
            )
            await bo.mail(f"Invoice {marker}", f"Please send me invoice {marker} again.")
            bo_conversation = await offered_to(stack, agent)
            line.restore()
            await console.until_async(
                lambda: (
                    console.live() == "connected"
                    and console.states() == {bo_conversation: "offered"}
                ),
                "the stream back and Bo's offer read again",
            )
            console.shot("3-reconnected")

            # Ana mails; her offer shows up in the inbox by itself (the event stream).
            await authenticated_mail(ana, f"Parcel {marker}", mail_text)
            await console.until_async(
                lambda: len(console.states()) == 2, "Ana's offer in the inbox"
            )
            [offer] = [i for i in console.inbox() if i["conversation"] != bo_conversation]
            conversation_id = offer["conversation"]
            assert offer["state"] == "offered"
            assert "email" in offer["text"]
            console.shot("4-offer")

            # The offered conversation is Ana's email; its timeline holds her WhatsApp
            # message too, marked as an earlier conversation, each with its channel.
            both = await customer_timeline(
                router, stack.router_auth(), f"email:{ana.email}", messages=2
            )
            assert both["customer_id"] == customer_id
            console.find(f'#inbox-list button[data-conversation="{conversation_id}"]').click()

            def history_shown() -> bool:
                messages = console.items("message")
                return {(m["channel"], m["text"]) for m in messages} >= {
                    ("whatsapp", whatsapp_text),
                    ("email", mail_text),
                }

            await console.until_async(history_shown, "the WhatsApp and email messages")
            messages = console.items("message")
            [whatsapp] = [m for m in messages if m["channel"] == "whatsapp"]
            [email] = [m for m in messages if m["channel"] == "email"]
            assert messages.index(whatsapp) < messages.index(email)  # time order
            assert whatsapp["other"]  # an earlier conversation
            assert not email["other"]
            assert email["conversation"] == conversation_id
            assert console.conversation_state() == "offered"
            assert "SLA first response due" in console.facts(), console.facts()
            console.shot("5-conversation")

            # Accept, with the keyboard.
            console.find("#accept").send_keys(Keys.ENTER)
            await console.until_async(lambda: "Accept: done" in console.status(), "accepted")
            [accepted] = await on_topic(
                probe, AGENT_EVENTS, OfferAccepted, agent_id=agent, conversation_id=conversation_id
            )
            await console.until_async(
                lambda: (
                    console.conversation_state() == "assigned"
                    and console.states().get(conversation_id) == "assigned"
                ),
                "the conversation assigned",
            )
            console.shot("6-accepted")

            # An internal note, then the reply.
            console.type_into("#note-text", note_text)
            console.find("#note-form button").click()
            await console.until_async(
                lambda: [n["text"] for n in console.items("note")] == [note_text],
                "the note in the timeline",
            )
            [note] = await on_topic(
                probe, CONVERSATION_EVENTS, NoteAdded, conversation_id=conversation_id
            )
            assert (note.agent_id, note.text) == (agent, note_text)

            console.type_into("#reply-text", reply_text)
            console.find("#reply-form button").click()
            await console.until_async(
                lambda: [r["text"] for r in console.items("reply")] == [reply_text],
                "the reply in the timeline",
            )
            [requested] = await on_topic(
                probe, OUTBOUND, ReplyRequested, conversation_id=conversation_id
            )
            assert (requested.agent_id, requested.text) == (agent, reply_text)
            assert console.find("#reply-text").get_attribute("value") == ""

            async def mailed() -> list[Message] | None:
                found = [m for m in relay.to(ana.email) if reply_text in text_of(m)]
                return found or None

            [reply_mail] = await eventually(mailed, what="the reply in Ana's mailbox")
            assert reply_mail["Subject"] == f"Re: Parcel {marker}"
            await console.until_async(
                lambda: any("sent" in d["all"] for d in console.items("delivery")),
                "the reply's delivery status in the timeline",
            )
            console.shot("7-replied")

            # Resolve: the conversation leaves the inbox (Bo's offer stays).
            console.find("#resolve").click()
            await console.until_async(lambda: "Resolve: done" in console.status(), "resolved")
            [resolved] = await on_topic(
                probe, CONVERSATION_EVENTS, ConversationResolved, conversation_id=conversation_id
            )
            await console.until_async(
                lambda: (
                    console.states() == {bo_conversation: "offered"}
                    and bool(console.items("resolved"))
                ),
                "the conversation out of the inbox and resolved in the timeline",
            )
            console.shot("8-resolved")

            # The token went in headers only, never in a URL the browser asked for.
            urls: list[str] = browser.execute_script(
                "return [location.href, ...performance.getEntriesByType('resource')"
                ".map(e => e.name)]"
            )
            assert not [u for u in urls if token in u]

            # No script error and nothing the Content-Security-Policy refused.
            logs: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
            assert not [
                entry
                for entry in logs
                if entry.get("source") == "javascript"
                or "Content Security Policy" in str(entry.get("message"))
            ], logs

            # Sign out forgets the token.
            console.find("#sign-out").click()
            await console.until_async(
                lambda: console.visible("#token") and not console.visible("#workspace"),
                "signed out",
            )
            assert browser.execute_script("return sessionStorage.length") == 0
            console.shot("9-signed-out")

        # Each action once on its topic, for this agent and conversation.
        await asyncio.sleep(1)
        again = await events_of(
            probe, AGENT_EVENTS, OfferAccepted, agent_id=agent, conversation_id=conversation_id
        )
        assert again == [accepted]
        replies = await events_of(probe, OUTBOUND, ReplyRequested, conversation_id=conversation_id)
        assert {r.reply_id for r in replies or []} == {requested.reply_id}
        assert resolved.conversation_id == conversation_id

    shots = {p.name for p in output_dir(request.node.name).glob("*.png")}
    assert {
        "3-reconnected.png",
        "4-offer.png",
        "5-conversation.png",
        "7-replied.png",
        "8-resolved.png",
    } <= shots
