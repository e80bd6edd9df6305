"""Web chat end to end, in a real browser: a visitor opens the shop's demo page in Debian's
headless Chromium and writes through the widget; the message reaches
``support.inbound.v1`` and is assigned; the acknowledgement and an agent's reply
(published as a frontend does) appear in the widget; the line is cut while the visitor
keeps typing and a reply goes out meanwhile; once it is back nothing is lost or doubled,
and a reload keeps the conversation. The router and the webchat service run as separate
processes on real Kafka and the database; screenshots go to the test's output directory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from switchboard_common.contract import (
    INBOUND,
    AssignmentDecision,
    Channel,
    DeliveryStatus,
    MessageReceived,
    SenderKind,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Customer, Helpdesk, customer_timeline, eventually
from switchboard_devtools.testing.browser import CuttableLine, chromium, output_dir

pytestmark = pytest.mark.e2e

ACKNOWLEDGEMENT = "Thanks for writing! An agent will be with you in a moment."


@pytest.fixture(scope="module")
def line() -> Iterator[CuttableLine]:
    """The visitor's network: the browser reaches the webchat service only through it."""
    with CuttableLine() as cuttable:
        yield cuttable


@pytest.fixture(scope="module")
def stack(infra: Infra, line: CuttableLine) -> Iterator[Stack]:
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "webchat",
        "ingest-email",
        extra_env={
            # The shop's page is served through the line: that is the origin it embeds from.
            "WEBCHAT_ALLOWED_ORIGINS": line.url,
            "ROUTER_ACKNOWLEDGE_CHANNELS": "webchat",
            "ROUTER_ACKNOWLEDGEMENT_TEXT": ACKNOWLEDGEMENT,
        },
    ) as running:
        line.target_port = int(running.url("webchat").rsplit(":", 1)[1])
        yield running


class Widget:
    """What the visitor sees and does in the embedded widget."""

    def __init__(self, browser: webdriver.Chrome, shots: Path) -> None:
        self.browser = browser
        self.shots = shots

    def open(self, url: str) -> None:
        self.browser.get(url)
        self.until(lambda: self.status() == "connected", "the widget to connect")

    def status(self) -> str:
        return str(self.browser.find_element(By.ID, "switchboard-chat-status").text).lower()

    def type_and_send(self, text: str) -> None:
        box = self.browser.find_element(By.ID, "switchboard-chat-input")
        box.send_keys(text)
        self.browser.find_element(By.ID, "switchboard-chat-send").click()

    def messages(self) -> list[dict[str, str]]:
        """Every message in the log, top to bottom: who wrote it, its state and text."""
        script = """
            return [...document.querySelectorAll('#switchboard-chat-log [data-from]')].map(
              e => ({from: e.dataset.from, state: e.dataset.state || '',
                     text: (e.querySelector('[data-text]') || e).innerText.trim()}));
        """
        found: list[dict[str, str]] = self.browser.execute_script(script)
        return found

    def texts(self, author: str) -> list[str]:
        return [m["text"] for m in self.messages() if m["from"] == author]

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.shot("timed-out")
                raise AssertionError(f"timed out waiting for {what}: {self.messages()}")
            time.sleep(0.2)

    async def until_async(self, condition: Callable[[], bool], what: str) -> None:
        await asyncio.to_thread(self.until, condition, what)

    def shot(self, name: str) -> None:
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))


async def on_kafka(probe: TopicProbe, text: str) -> list[MessageReceived]:
    """Every record of the message with this text on ``support.inbound.v1`` (copies too)."""

    async def found() -> list[MessageReceived] | None:
        records = [
            event
            for _, event in await probe.read_events(INBOUND, timeout=1.0)
            if isinstance(event, MessageReceived) and event.text == text
        ]
        return records or None

    return await eventually(found, what=f"{text!r} on support.inbound.v1")


async def status_of(helpdesk: Helpdesk, reply_id: str, wanted: DeliveryStatus) -> None:
    async def reached() -> bool | None:
        statuses = [s.status for s in (await helpdesk.deliveries()).get(reply_id, [])]
        return True if wanted in statuses else None

    await eventually(reached, what=f"{wanted.value} of reply {reply_id}")


async def test_a_visitor_chats_with_an_agent_and_a_cut_line_loses_nothing(
    stack: Stack, line: CuttableLine, request: pytest.FixtureRequest
) -> None:
    marker = uuid.uuid4().hex[:6]  # this run's messages, whatever else is on the topic
    said = [
        f"Hi, is my order {marker} on its way?",
        f"Can I still change the address? ({marker})",
        f"It is Calle Mayor 5, Madrid ({marker})",
    ]
    agent = f"agent-{marker}"
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        await helpdesk.agent(agent, capacity={Channel.WEBCHAT: 3})
        with chromium() as browser:
            widget = Widget(browser, output_dir(request.node.name))
            await asyncio.to_thread(widget.open, f"{line.url}/chat/demo")
            widget.type_and_send(said[0])
            await widget.until_async(
                lambda: (
                    [m["state"] for m in widget.messages() if m["from"] == "visitor"] == ["sent"]
                ),
                "the first message to be acknowledged",
            )
            widget.shot("1-sent")

            [first] = await on_kafka(probe, said[0])
            assert first.channel is Channel.WEBCHAT
            assert first.sender.kind is SenderKind.WEBCHAT_VISITOR
            assert first.account == "default"

            def assigned(decisions: list[AssignmentDecision]) -> AssignmentDecision | None:
                return next(
                    (d for d in decisions if d.channel is Channel.WEBCHAT and d.agent_id == agent),
                    None,
                )

            decision = await helpdesk.wait_for(assigned, what="the chat assigned to the agent")
            await widget.until_async(
                lambda: widget.texts("switchboard") == [ACKNOWLEDGEMENT.strip()],
                "the acknowledgement in the widget",
            )
            answer = await helpdesk.request_reply(
                decision.conversation_id, agent, f"Yes, it ships today ({marker})."
            )
            await widget.until_async(
                lambda: widget.texts("agent") == [answer.text], "the agent's reply in the widget"
            )
            await status_of(helpdesk, answer.reply_id, DeliveryStatus.DELIVERED)
            widget.shot("2-replied")

            # The line goes down while the visitor keeps typing, and the agent answers.
            line.cut()
            await widget.until_async(
                lambda: widget.status() != "connected", "the widget to notice the cut"
            )
            widget.type_and_send(said[1])
            widget.type_and_send(said[2])
            meanwhile = await helpdesk.request_reply(
                decision.conversation_id, agent, f"Of course, which one? ({marker})"
            )
            await status_of(helpdesk, meanwhile.reply_id, DeliveryStatus.SENT)
            assert [m["state"] for m in widget.messages() if m["from"] == "visitor"] == [
                "sent",
                "pending",
                "pending",
            ]
            widget.shot("3-cut")

            line.restore()
            await widget.until_async(
                lambda: (
                    sorted(widget.texts("agent")) == sorted([answer.text, meanwhile.text])
                    and all(
                        m["state"] == "sent" for m in widget.messages() if m["from"] == "visitor"
                    )
                ),
                "the resent messages acknowledged and the missed reply shown",
            )
            widget.shot("4-restored")
            assert widget.texts("visitor") == said

            # A reload keeps the conversation, each message once.
            await asyncio.to_thread(widget.open, f"{line.url}/chat/demo")
            await widget.until_async(
                lambda: len(widget.messages()) == 6, "the conversation after a reload"
            )
            widget.shot("5-reloaded")
            assert widget.texts("visitor") == said
            assert sorted(widget.texts("agent")) == sorted([answer.text, meanwhile.text])
            assert widget.texts("switchboard") == [ACKNOWLEDGEMENT.strip()]

        # On Kafka: every message once (a resend reuses its id; the router drops copies).
        received: dict[str, MessageReceived] = {}
        for text in said:
            records = await on_kafka(probe, text)
            assert len({r.message_id for r in records}) == 1, records
            received[text] = records[0]
        assert {r.sender.value for r in received.values()} == {first.sender.value}
    shots = {p.name for p in output_dir(request.node.name).glob("*.png")}
    assert {"1-sent.png", "3-cut.png", "5-reloaded.png"} <= shots


async def hello(line: CuttableLine, identity: dict[str, str] | None) -> ClientConnection:
    """A widget's socket as the shop's page opens it (its origin, its identity)."""
    socket = await connect(
        line.url.replace("http", "ws", 1) + "/chat/socket", origin=Origin(line.url)
    )
    await socket.send(
        json.dumps({"type": "hello", "token": None, "after": 0, "identity": identity})
    )
    return socket


async def next_frame(socket: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 60))
        if frame["type"] == kind:
            return frame


async def test_a_visitor_the_shop_vouches_for_chats_as_the_customer_who_mailed(
    stack: Stack, line: CuttableLine
) -> None:
    """The shop signs the signed-in customer's email (identity verification): the chat
    joins the timeline of the customer who mailed before, and the agent's reply reaches
    that customer on another device too, since it is addressed to them, not a browser."""
    address = f"c{uuid.uuid4().hex[:10]}@example.org"
    ana = Customer(
        email=address,
        phone="+34600000000",
        smtp_port=stack.smtp_port,
        social_url="http://127.0.0.1:1",  # not used: Ana mails and chats
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
        support_address="help@support.example.com",
    )
    await ana.mail("Order 5521", "Hello, my parcel has not arrived yet.")
    secret = TEST_SECRETS["WEBCHAT_IDENTITY_SECRET"].encode()
    vouched = {
        "email": address,
        "hash": hmac.new(secret, address.encode(), hashlib.sha256).hexdigest(),
    }
    laptop = await hello(line, vouched)
    welcome = await next_frame(laptop, "welcome")
    assert welcome["verified"] is True
    await laptop.send(json.dumps({"type": "send", "client_id": "c1", "text": "Any news?"}))
    assert (await next_frame(laptop, "ack"))["client_id"] == "c1"

    timeline = await customer_timeline(
        stack.url("router"), stack.router_auth(), f"email:{address}", messages=2
    )
    channels = sorted(item["channel"] for item in timeline["items"])
    assert channels == ["email", "webchat"], timeline
    [chat] = [item for item in timeline["items"] if item["channel"] == "webchat"]

    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        reply = await helpdesk.request_reply(chat["conversation_id"], "agent-5", "It is out.")
        shown = await next_frame(laptop, "message")
        while shown["from"] != "agent":
            shown = await next_frame(laptop, "message")
        assert shown["text"] == "It is out."
        await status_of(helpdesk, reply.reply_id, DeliveryStatus.SENT)
    await laptop.close()

    # Later, on the phone: the same signed-in customer sees the whole chat.
    phone = await hello(line, vouched)
    await next_frame(phone, "welcome")
    history = [await next_frame(phone, "message") for _ in range(3)]
    await phone.close()
    assert [(m["from"], m["text"]) for m in history] == [
        ("visitor", "Any news?"),
        ("switchboard", ACKNOWLEDGEMENT),
        ("agent", "It is out."),
    ]
