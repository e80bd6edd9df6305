"""A helpdesk frontend and a customer, as end-to-end tests (and fault runs) drive them.

``Helpdesk`` does what a frontend does with Switchboard: it publishes agent profiles,
presence, offer answers, replies and resolutions on the contract topics, and follows
``support.assignments.v1`` the way CONTRACT.md tells frontends to (keep the highest
``seq`` per conversation; the same event may arrive twice). ``Customer`` writes mail over
SMTP and WhatsApp messages through a signed Meta webhook, as the outside world does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, TypeVar

import httpx

from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    AssignmentDecision,
    Channel,
    ConversationResolved,
    OfferAccepted,
    OfferRejected,
    ReplySent,
)
from switchboard_devkit.testing.kafka_probe import TopicProbe

_T = TypeVar("_T")


def now() -> datetime:
    return datetime.now(UTC)


class Helpdesk:
    """Publishes what agents do and reads what the router decided."""

    def __init__(self, probe: TopicProbe) -> None:
        self.probe = probe

    async def agent(
        self,
        agent_id: str,
        *,
        capacity: dict[Channel, int],
        skills: dict[str, int] | None = None,
        languages: tuple[str, ...] = ("en", "es"),
        status: AgentStatus | None = AgentStatus.ONLINE,
    ) -> None:
        """Create or replace an agent's profile, then set their presence."""
        await self.probe.send(
            AGENT_EVENTS,
            AgentUpserted(
                agent_id=agent_id,
                display_name=agent_id.title(),
                skills=skills or {},
                capacity=capacity,
                languages=list(languages),
            ),
            key=agent_id,
        )
        if status is not None:
            await self.presence(agent_id, status)

    async def presence(self, agent_id: str, status: AgentStatus) -> None:
        await self.probe.send(
            AGENT_EVENTS, AgentStatusChanged(agent_id=agent_id, status=status), key=agent_id
        )

    async def accept(self, agent_id: str, conversation_id: str) -> None:
        await self.probe.send(
            AGENT_EVENTS,
            OfferAccepted(agent_id=agent_id, conversation_id=conversation_id),
            key=agent_id,
        )

    async def reject(self, agent_id: str, conversation_id: str) -> None:
        await self.probe.send(
            AGENT_EVENTS,
            OfferRejected(agent_id=agent_id, conversation_id=conversation_id),
            key=agent_id,
        )

    async def reply(self, conversation_id: str, agent_id: str) -> None:
        await self.probe.send(
            CONVERSATION_EVENTS,
            ReplySent(conversation_id=conversation_id, agent_id=agent_id, sent_at=now()),
            key=conversation_id,
        )

    async def resolve(self, conversation_id: str) -> None:
        await self.probe.send(
            CONVERSATION_EVENTS,
            ConversationResolved(conversation_id=conversation_id, at=now()),
            key=conversation_id,
        )

    async def decisions(self) -> list[AssignmentDecision]:
        """Every decision so far, each (conversation, seq) once, in topic order."""
        seen: set[tuple[str, int]] = set()
        out: list[AssignmentDecision] = []
        for _, event in await self.probe.read_events(ASSIGNMENTS, timeout=1.0):
            if isinstance(event, AssignmentDecision):
                key = (event.conversation_id, event.seq)
                if key not in seen:
                    seen.add(key)
                    out.append(event)
        return out

    async def latest(self) -> dict[str, AssignmentDecision]:
        """The current decision per conversation (highest seq), as a frontend keeps it."""
        current: dict[str, AssignmentDecision] = {}
        for event in await self.decisions():
            held = current.get(event.conversation_id)
            if held is None or event.seq > held.seq:
                current[event.conversation_id] = event
        return current

    async def wait_for(
        self,
        found: Callable[[list[AssignmentDecision]], _T | None],
        *,
        timeout: float = 60.0,
        what: str = "a decision",
    ) -> _T:
        """Poll the assignments topic until ``found`` returns something."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(await self.decisions())
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.5)


class Customer:
    """One person writing to support by email (SMTP) and WhatsApp (a signed webhook)."""

    def __init__(
        self,
        *,
        email: str,
        phone: str,
        smtp_port: int,
        social_url: str,
        meta_secret: str,
        support_address: str = "help@support.example.com",
    ) -> None:
        self.email = email
        self.phone = phone
        self.smtp_port = smtp_port
        self.social_url = social_url
        self.meta_secret = meta_secret
        self.support_address = support_address

    async def mail(
        self,
        subject: str,
        body: str,
        *,
        in_reply_to: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send an email as a mail server would; return its Message-ID."""
        message = EmailMessage()
        message["From"] = f"Customer <{self.email}>"
        message["To"] = self.support_address
        message["Subject"] = subject
        message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@mail.example.org>"
        message["Date"] = now().strftime("%a, %d %b %Y %H:%M:%S +0000")
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
            message["References"] = in_reply_to
        message.set_content(body)

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
                smtp.send_message(message)

        await asyncio.to_thread(send)
        return str(message["Message-ID"])

    async def whatsapp(
        self, text: str, *, phone_number_id: str = "106540352242922"
    ) -> httpx.Response:
        """Post a WhatsApp Cloud API text message webhook, signed as Meta signs it."""
        body = whatsapp_text_webhook(
            text,
            wa_id=self.phone[1:],
            wamid=f"wamid.{uuid.uuid4().hex}",
            name="Customer",
            phone_number_id=phone_number_id,
        )
        return await post_meta_webhook(self.social_url, body, self.meta_secret)


def whatsapp_text_webhook(
    text: str,
    *,
    wa_id: str,
    wamid: str,
    name: str | None = None,
    phone_number_id: str = "106540352242922",
    timestamp: int | None = None,
) -> bytes:
    """The body of a WhatsApp Cloud API webhook carrying one text message from ``wa_id``
    (with a contact profile when ``name`` is given), as Meta sends it."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
    }
    if name is not None:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": wa_id}]
    value["messages"] = [
        {
            "from": wa_id,
            "id": wamid,
            "timestamp": str(int(time.time()) if timestamp is None else timestamp),
            "type": "text",
            "text": {"body": text},
        }
    ]
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload).encode()


def meta_signed(body: bytes, secret: str) -> dict[str, str]:
    """Headers Meta sends with ``body``: JSON, and its HMAC-SHA256 under the app secret.
    Computed here, not with the service's code, as the outside world would."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


async def post_meta_webhook(social_url: str, body: bytes, secret: str) -> httpx.Response:
    """POST ``body`` to ingest-social's Meta webhook, signed with ``secret``."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{social_url}/webhooks/meta", content=body, headers=meta_signed(body, secret)
        )


async def eventually(
    probe: Callable[[], Awaitable[_T | None]], *, timeout: float = 60.0, what: str = "it"
) -> _T:
    """Poll until ``probe`` returns something other than None. The timeout only bounds a
    hang; it is not a speed requirement."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)
