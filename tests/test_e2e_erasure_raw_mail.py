"""GDPR erasure reaches the raw mail: a customer's mail arrives over SMTP (its exact
bytes, attachment included, kept by ingest-email), the operator erases the customer
through the router's admin API, and the raw mail is gone; another customer's stays."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.mongo import Document
from switchboard_common.raw_mail import CHUNKS, MANIFESTS, digest_of
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devtools.testing.router_timeline import RunningRouter, eventually, running_router
from switchboard_ingest_email.app import build
from switchboard_ingest_email.settings import IngestEmailSettings

pytestmark = pytest.mark.e2e

SUPPORT = "help@support.example.com"


@dataclass
class Services:
    router: RunningRouter
    smtp_port: int


@pytest.fixture
async def services(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Services]:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SUPPORT_EMAIL_DOMAINS", "support.example.com")
    monkeypatch.setenv("INGEST_EMAIL_SMTP_PORT", str(free_port()))
    monkeypatch.setenv("INGEST_EMAIL_HTTP_PORT", str(free_port()))
    settings = IngestEmailSettings.load()
    async with running(build(settings).runtime), running_router(service_env) as router:
        yield Services(router, settings.smtp_port)


def send(port: int, sender: str, subject: str, attachment: bytes) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, SUPPORT, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@mail.example.com>"
    msg.set_content("My invoice is attached; my phone is +34 600 111 222.")
    msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="invoice.pdf")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(msg)


async def raw_digest(router: RunningRouter, identity: str) -> tuple[str, str]:
    """The customer id of ``identity`` and the digest of their one message's raw mail."""

    async def first_message() -> tuple[str, list[dict[str, Any]]] | None:
        customer = await router.customer_of(identity)
        if customer is None:
            return None
        items = await router.timeline(customer["customer_id"])
        return (customer["customer_id"], items) if items else None

    customer_id, items = await eventually(first_message)
    digest = digest_of(items[0]["raw_ref"] or "")
    assert digest is not None
    return customer_id, digest


async def test_erasing_a_customer_deletes_their_raw_mail(
    services: Services, mongo_client: AsyncMongoClient[Document], database_name: str
) -> None:
    db = mongo_client[database_name]
    # Ana's mail is big enough to be stored in chunks; Bob's fits in its manifest.
    big = b"%PDF-1.7 " + bytes(range(256)) * 6000
    await asyncio.to_thread(send, services.smtp_port, "ana@example.com", "ana invoice", big)
    await asyncio.to_thread(send, services.smtp_port, "bob@example.org", "bob invoice", b"%PDF")
    ana, ana_digest = await raw_digest(services.router, "email:ana@example.com")
    _, bob_digest = await raw_digest(services.router, "email:bob@example.org")
    manifest = await db[MANIFESTS].find_one({"_id": ana_digest})
    assert manifest is not None
    assert manifest["chunks"] > 0
    assert await db[CHUNKS].count_documents({"_id": {"$regex": f"^{ana_digest}:"}}) > 0

    response = await services.router.http.post(
        f"/admin/customers/{ana}/erasure",
        json={"actor": "dpo", "reason": "data subject request"},
        headers=services.router.admin,
    )
    assert response.status_code == 200, response.text
    assert await db[MANIFESTS].find_one({"_id": ana_digest}) is None
    assert await db[CHUNKS].count_documents({"_id": {"$regex": f"^{ana_digest}:"}}) == 0
    assert response.json()["counts"]["raw_messages"] == 1
    (skeleton,) = await services.router.timeline(ana)
    assert skeleton["raw_ref"] is None
    assert await db[MANIFESTS].find_one({"_id": bob_digest}) is not None
