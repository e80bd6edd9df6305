"""Acknowledgement texts from the routing policy, end to end: the policy's
``acknowledgements`` rules choose by channel, by the queue the first message goes to and
by its language; the router and ingest-email run as processes on real Kafka and the
database, and the acknowledgements reach a local relay."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.servers.relay import LocalRelay
from switchboard_devtools.frontend import Customer, customer_timeline, eventually

pytestmark = pytest.mark.e2e

POLICY = Path(__file__).parent / "policies" / "routing-acknowledgements.yaml"
USER = "switchboard"
PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def relay(tls_files: tuple[Path, Path]) -> Iterator[LocalRelay]:
    with LocalRelay.started(tls=tls_files, user=USER, password=PASSWORD) as running:
        yield running


@pytest.fixture(scope="module")
def stack(infra: Infra, relay: LocalRelay, tls_files: tuple[Path, Path]) -> Iterator[Stack]:
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "ingest-email",
        extra_env={
            "ROUTER_POLICY_FILE": str(POLICY),
            "OUTBOUND_SMTP_URL": relay.url,
            "OUTBOUND_SMTP_PASSWORD": PASSWORD,
            "OUTBOUND_SMTP_CA_FILE": str(tls_files[0]),
        },
    ) as running:
        yield running


def customer(stack: Stack, prefix: str) -> Customer:
    return Customer(
        email=f"{prefix}{uuid.uuid4().hex[:8]}@example.org",
        phone="+34600000000",
        smtp_port=stack.smtp_port,
        social_url="http://127.0.0.1:9",  # not used: these customers only mail
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
    )


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
    stack: Stack, relay: LocalRelay
) -> None:
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
    stack: Stack, relay: LocalRelay
) -> None:
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
