"""Agent replies by email, end to end: a customer's mail comes in over SMTP, a frontend
publishes ``support.reply.requested``, the reply reaches a local relay (STARTTLS and
AUTH required, as a submission server asks) threaded on the customer's message, the
statuses come back on ``support.outbound.v1`` and ``support.reply.sent`` on the
conversation events, and the customer's answer lands in the same conversation; our own
reply forwarded back opens nothing; and, with a routing policy's rules, acknowledgement
texts by channel, queue and language. The router and ingest-email run as separate
processes on real Kafka and the database."""

from __future__ import annotations

import secrets
import smtplib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    DEADLETTER,
    INBOUND,
    OUTBOUND,
    ContractModel,
    DeadLetter,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    ReplyRequested,
    ReplySent,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.servers.relay import REFUSED, LocalRelay
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import Customer, customer_timeline, eventually

pytestmark = pytest.mark.e2e

USER = "switchboard"
PASSWORD = secrets.token_urlsafe(12)
RULES = Path(__file__).parent / "policies" / "routing-acknowledgements.yaml"
#: The From of the support domain's replies (the customers write to help@).
SENDER = "Example Support <care@support.example.com>"


@pytest.fixture(scope="module")
def relay(tls_files: tuple[Path, Path]) -> Iterator[LocalRelay]:
    with LocalRelay.started(tls=tls_files, user=USER, password=PASSWORD) as running:
        yield running


@contextmanager
def replying_stack(
    infra: Infra, relay: LocalRelay, tls_files: tuple[Path, Path], **env: str
) -> Iterator[Stack]:
    """The router and ingest-email as processes, replying through ``relay``."""
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "ingest-email",
        extra_env={
            "OUTBOUND_SMTP_URL": relay.url,
            "OUTBOUND_SMTP_PASSWORD": PASSWORD,
            "OUTBOUND_SMTP_CA_FILE": str(tls_files[0]),
            "INGEST_EMAIL_OUTBOUND_RETRY_SECONDS": "0.2",
            **env,
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stack(infra: Infra, relay: LocalRelay, tls_files: tuple[Path, Path]) -> Iterator[Stack]:
    with replying_stack(
        infra, relay, tls_files, OUTBOUND_EMAIL_FROM=f"support.example.com={SENDER}"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def rules_stack(infra: Infra, relay: LocalRelay, tls_files: tuple[Path, Path]) -> Iterator[Stack]:
    """Acknowledgement texts from a routing policy's rules (by channel, queue, language)."""
    with replying_stack(infra, relay, tls_files, ROUTER_POLICY_FILE=str(RULES)) as running:
        yield running


def customer(stack: Stack, prefix: str = "ana") -> Customer:
    return Customer(
        email=f"{prefix}{uuid.uuid4().hex[:8]}@example.org",
        phone="+34600000000",
        smtp_port=stack.smtp_port,
        social_url="http://127.0.0.1:9",  # not used: this customer only mails
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )


async def conversation_of(stack: Stack, email: str, count: int = 1) -> dict[str, Any]:
    """The customer's timeline once it holds ``count`` messages."""
    return await customer_timeline(
        stack.url("router"), stack.router_auth(), f"email:{email}", messages=count
    )


def request(conversation_id: str, text: str, reply_id: str | None = None) -> ReplyRequested:
    return ReplyRequested(
        reply_id=reply_id or f"r-{uuid.uuid4().hex}",
        conversation_id=conversation_id,
        agent_id="agent-7",
        text=text,
        requested_at=datetime.now(UTC),
    )


async def events_for(
    probe: TopicProbe, topic: str, kind: type[ContractModel], **match: object
) -> list[Any]:
    return [
        e
        for _, e in await probe.read_events(topic, timeout=5)
        if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
    ]


async def test_a_reply_reaches_the_customer_threaded_once_and_their_answer_threads_back(
    stack: Stack, relay: LocalRelay
) -> None:
    ana = customer(stack)
    asked = await ana.mail("Where is my order 4411?", "Hello, my order has not arrived.")
    first = await conversation_of(stack, ana.email)
    conversation_id = first["items"][0]["conversation_id"]

    reply = request(conversation_id, "It left our warehouse today; it arrives on Monday.")
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        await probe.send(OUTBOUND, reply, key=conversation_id)

        async def sent() -> list[Any] | None:
            found = await events_for(probe, OUTBOUND, DeliveryUpdated, reply_id=reply.reply_id)
            return found or None

        statuses = await eventually(sent, what="the reply's delivery status")
        assert [s.status for s in statuses] == [DeliveryStatus.SENT]
        message_id = statuses[0].provider_message_id
        [mail] = relay.received(message_id)
        assert mail["To"] == ana.email
        assert mail["From"] == SENDER
        assert mail["Reply-To"] == ana.support_address
        # Bounces go where ingest-email takes mail, not to the display sender.
        assert relay.envelope_senders[relay.messages.index(mail)] == ana.support_address
        assert mail["Subject"] == "Re: Where is my order 4411?"
        assert mail["In-Reply-To"] == asked
        assert asked in mail["References"]
        body = mail.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert "arrives on Monday" in body.decode()

        # The conversation was acknowledged when it opened, on the customer's thread and
        # marked automatic; only the agent's reply counts as a response.
        [ack] = [m for m in relay.to(ana.email) if m["Auto-Submitted"] == "auto-replied"]
        assert ack["In-Reply-To"] == asked
        assert ack["Subject"] == "Re: Where is my order 4411?"
        ack_body = ack.get_payload(decode=True)
        assert isinstance(ack_body, bytes)
        assert f"Your reference: {conversation_id}" in ack_body.decode()
        assert mail["Auto-Submitted"] is None
        replies_sent = await events_for(
            probe, CONVERSATION_EVENTS, ReplySent, conversation_id=conversation_id
        )
        assert [r.agent_id for r in replies_sent] == ["agent-7"]

        # The frontend sends the same request again (a retry after a timeout): the
        # customer still gets one mail.
        await probe.send(OUTBOUND, reply, key=conversation_id)

        async def settled() -> list[Any] | None:
            found = await events_for(probe, OUTBOUND, DeliveryUpdated, reply_id=reply.reply_id)
            return found if len(found) >= 2 else None

        again = await eventually(settled, what="the repeated request's status")
        assert {s.provider_message_id for s in again} == {message_id}
        assert len(relay.received(message_id)) == 1

    # Ana answers from her mail client: In-Reply-To is the reply, References the thread;
    # a new subject, so that only the headers can place it.
    await ana.mail(
        "Monday",
        "Thanks, Monday is fine.",
        in_reply_to=message_id,
        references=[*str(mail["References"]).split(), message_id],  # as mail clients do
    )
    both = await conversation_of(stack, ana.email, count=2)
    assert {m["conversation_id"] for m in both["items"]} == {conversation_id}


async def test_replies_that_cannot_be_sent_get_a_failed_status_with_the_reason(
    stack: Stack, relay: LocalRelay
) -> None:
    refused = customer(stack, prefix=REFUSED)
    await refused.mail("Invoice", "Please send my invoice again.")
    timeline = await conversation_of(stack, refused.email)
    conversation_id = timeline["items"][0]["conversation_id"]

    unknown = request(f"co_{uuid.uuid4().hex}", "Hello?")
    empty = request(conversation_id, "   ")
    bounced = request(conversation_id, "Here is your invoice.")
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        for item in (unknown, empty, bounced):
            await probe.send(OUTBOUND, item, key=item.conversation_id)

        wanted = {unknown.reply_id, empty.reply_id, bounced.reply_id}

        async def outcomes() -> dict[str, DeliveryUpdated] | None:
            found = {
                e.reply_id: e
                for _, e in await probe.read_events(OUTBOUND, timeout=5)
                if isinstance(e, DeliveryUpdated) and e.reply_id in wanted
            }
            return found if len(found) == len(wanted) else None

        found = await eventually(outcomes, what="a status for each of the three replies")
        assert {s.status for s in found.values()} == {DeliveryStatus.FAILED}
        errors = {reply_id: s.error for reply_id, s in found.items()}
        assert errors[unknown.reply_id] == DeliveryError(
            code="unknown_conversation", text="no conversation has this id"
        )
        assert errors[empty.reply_id] == DeliveryError(
            code="empty_text", text="the reply has no text"
        )
        assert errors[bounced.reply_id] == DeliveryError(
            code="smtp_550", text="5.1.1 No such mailbox"
        )
        assert relay.to(refused.email) == []

        # The relay's refusal is also a dead letter, with the reason, for operators.
        letters = [
            e
            for _, e in await probe.read_events(DEADLETTER, timeout=5)
            if isinstance(e, DeadLetter) and str(e.consumer_group).endswith("ingest-email-replies")
        ]
        # (the acknowledgement of the conversation was refused the same way)
        assert [letter.error for letter in letters] == 2 * [
            "reply refused: smtp_550 5.1.1 No such mailbox"
        ]


async def test_one_acknowledgement_per_customer_and_period_and_none_to_auto_replies(
    stack: Stack, relay: LocalRelay
) -> None:
    bea = customer(stack, prefix="bea")
    await bea.mail("Invoice 17", "Can you send invoice 17 again?")
    await bea.mail("Delivery address", "Please change my delivery address.")
    both = await conversation_of(stack, bea.email, count=2)
    assert len({m["conversation_id"] for m in both["items"]}) == 2, "two conversations"

    robot = customer(stack, prefix="robot")
    await robot.mail("Out of office", "I am away until Monday.", auto_submitted=True)
    await conversation_of(stack, robot.email)

    async def acknowledged() -> list[Any] | None:
        return relay.to(bea.email) or None

    await eventually(acknowledged, what="Bea's acknowledgement")
    # Settled: the router has stored all three, so their acknowledgements (if any) are out.
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        statuses = [
            e
            for _, e in await probe.read_events(OUTBOUND, timeout=5, settle=2.0)
            if isinstance(e, DeliveryUpdated) and e.reply_id.startswith("ack:")
        ]
    assert len(relay.to(bea.email)) == 1, "one per customer and period"
    assert relay.to(robot.email) == [], "never to an auto-reply"
    mine = {m["conversation_id"] for m in both["items"]}
    assert len([s for s in statuses if s.conversation_id in mine]) == 1


async def test_our_own_reply_forwarded_back_to_support_opens_no_conversation(
    stack: Stack, relay: LocalRelay
) -> None:
    """A customer address that forwards everything to support sends our acknowledgement
    straight back: it is taken (250, so no relay retries it) and not ingested."""
    cid = customer(stack, prefix="fwd")
    await cid.mail("Order 77", "Where is order 77?")

    async def acknowledged() -> list[Any] | None:
        return relay.to(cid.email) or None

    [ack] = await eventually(acknowledged, what="the acknowledgement")
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        before = len(await probe.read_events(INBOUND, timeout=5))
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=30) as smtp:
            # As forwarded: the customer's server relays the message unchanged.
            smtp.sendmail(cid.email, [cid.support_address], ack.as_bytes())
        # The 250 came after the drop decision: had it been ingested, it would already
        # be on the topic.
        after = await probe.read_events(INBOUND, timeout=5)
    assert len(after) == before
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{stack.url('ingest-email')}/metrics")).text
    assert 'switchboard_email_own_replies_total{transport="smtp"} 1.0' in metrics


# ------------------------------------------------ acknowledgement texts from the policy


async def acknowledgement_of(stack: Stack, relay: LocalRelay, who: Customer) -> tuple[str, str]:
    """The customer's conversation id and the text of the one mail they got."""
    timeline = await customer_timeline(
        stack.url("router"), stack.router_auth(), f"email:{who.email}", messages=1
    )
    conversation_id = timeline["items"][0]["conversation_id"]

    async def received() -> list[Any] | None:
        return relay.to(who.email) or None

    [mail] = await eventually(received, what="the customer's acknowledgement")
    assert mail["Auto-Submitted"] == "auto-replied"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    return conversation_id, body.decode().strip()


async def test_the_first_matching_rule_chooses_the_text_by_queue_and_language(
    rules_stack: Stack, relay: LocalRelay
) -> None:
    stack = rules_stack
    english, spanish, urgent = (customer(stack, p) for p in ("eve", "sol", "max"))
    await english.mail("Invoice", "Could you please send me the invoice for my last order?")
    await spanish.mail("Factura", "¿Podrían enviarme la factura de mi último pedido, por favor?")
    # Spanish too, but its keyword sends it to the urgent queue, whose rule comes first.
    await urgent.mail("urgent", "urgent: necesito la factura de mi pedido hoy mismo, por favor")

    conversation, text = await acknowledgement_of(stack, relay, english)
    assert text == f"We have your message. Reference: {conversation}"
    conversation, text = await acknowledgement_of(stack, relay, spanish)
    assert text == f"Hemos recibido tu mensaje. Referencia: {conversation}"
    conversation, text = await acknowledgement_of(stack, relay, urgent)
    assert text == f"We have your urgent message and are on it. Reference: {conversation}"


async def test_a_rule_without_text_sends_nothing_and_leaves_the_period_to_the_next_one(
    rules_stack: Stack, relay: LocalRelay
) -> None:
    stack = rules_stack
    lea = customer(stack, "lea")
    await lea.mail("Facture", "Pourriez-vous m'envoyer la facture de ma dernière commande ?")
    await customer_timeline(
        stack.url("router"), stack.router_auth(), f"email:{lea.email}", messages=1
    )
    # Stored, so its acknowledgement (none) was decided. A new conversation in English
    # within the same hour still gets one: the French one claimed nothing.
    await lea.mail("Delivery address", "Please change the delivery address of my order.")
    timeline = await customer_timeline(
        stack.url("router"), stack.router_auth(), f"email:{lea.email}", messages=2
    )
    english = next(
        m["conversation_id"] for m in timeline["items"] if m.get("subject") == "Delivery address"
    )

    async def received() -> list[Any] | None:
        return relay.to(lea.email) or None

    [mail] = await eventually(received, what="the English conversation's acknowledgement")
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert body.decode().strip() == f"We have your message. Reference: {english}"
