"""A helpdesk frontend and a customer, as end-to-end tests (and fault runs) drive them.

``Helpdesk`` does what a frontend does with Switchboard: it publishes agent profiles,
presence, offer answers, replies and resolutions on the contract topics, asks for
replies to be delivered and reads their statuses (``support.outbound.v1``), and follows
``support.assignments.v1`` the way CONTRACT.md tells frontends to (keep the highest
``seq`` per conversation; the same event may arrive twice). ``Customer`` writes mail over
SMTP and WhatsApp, X and Telegram messages through their providers' signed webhooks, as
the outside world does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import smtplib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, TypeVar

import httpx

from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    OUTBOUND,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    AssignmentDecision,
    Channel,
    ConversationResolved,
    DeliveryUpdated,
    OfferAccepted,
    OfferRejected,
    ReplyRequested,
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

    async def request_reply(
        self, conversation_id: str, agent_id: str, text: str, *, reply_id: str | None = None
    ) -> ReplyRequested:
        """Ask Switchboard to deliver a reply on the conversation's channel."""
        request = ReplyRequested(
            reply_id=reply_id or f"rep-{uuid.uuid4().hex}",
            conversation_id=conversation_id,
            agent_id=agent_id,
            text=text,
            requested_at=now(),
        )
        await self.probe.send(OUTBOUND, request, key=conversation_id)
        return request

    async def deliveries(self) -> dict[str, list[DeliveryUpdated]]:
        """Every delivery status so far, by ``reply_id``, in topic order."""
        found: dict[str, list[DeliveryUpdated]] = {}
        for _, event in await self.probe.read_events(OUTBOUND, timeout=1.0):
            if isinstance(event, DeliveryUpdated):
                found.setdefault(event.reply_id, []).append(event)
        return found

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
    """One person writing to support by email (SMTP), and by WhatsApp, X and Telegram
    (signed webhooks; X and Telegram when given the user id and the provider's secret)."""

    def __init__(
        self,
        *,
        email: str,
        phone: str,
        smtp_port: int,
        social_url: str,
        meta_secret: str,
        support_address: str = "help@support.example.com",
        x_user_id: str | None = None,
        x_secret: str | None = None,
        telegram_user_id: int | None = None,
        telegram_token: str | None = None,
    ) -> None:
        self.email = email
        self.phone = phone
        self.smtp_port = smtp_port
        self.social_url = social_url
        self.meta_secret = meta_secret
        self.support_address = support_address
        self.x_user_id = x_user_id
        self.x_secret = x_secret
        self.telegram_user_id = telegram_user_id
        self.telegram_token = telegram_token

    async def mail(
        self,
        subject: str,
        body: str,
        *,
        in_reply_to: str | None = None,
        references: Sequence[str] | None = None,
        message_id: str | None = None,
        auto_submitted: bool = False,
    ) -> str:
        """Send an email as a mail server would; return its Message-ID. ``references``
        defaults to ``in_reply_to`` alone (a mail client answering one message);
        ``auto_submitted`` makes it an auto-reply."""
        message = EmailMessage()
        message["From"] = f"Customer <{self.email}>"
        message["To"] = self.support_address
        message["Subject"] = subject
        message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@mail.example.org>"
        message["Date"] = now().strftime("%a, %d %b %Y %H:%M:%S +0000")
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
        chain = list(references) if references is not None else [in_reply_to] if in_reply_to else []
        if chain:
            message["References"] = " ".join(chain)
        if auto_submitted:  # an out-of-office or other auto-reply (RFC 3834)
            message["Auto-Submitted"] = "auto-replied"
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

    async def x_dm(self, text: str) -> httpx.Response:
        """Post an X Account Activity webhook with one direct message, signed as X signs."""
        if self.x_user_id is None or self.x_secret is None:
            raise ValueError("this customer has no X user id or no consumer secret")
        body = x_dm_webhook(text, sender_id=self.x_user_id, event_id=str(uuid.uuid4().int >> 65))
        return await _post(f"{self.social_url}/webhooks/x", body, x_signed(body, self.x_secret))

    async def telegram(self, text: str) -> httpx.Response:
        """Post a Telegram Bot API update with one text message, with the secret token."""
        if self.telegram_user_id is None or self.telegram_token is None:
            raise ValueError("this customer has no Telegram user id or no secret token")
        serial = uuid.uuid4().int >> 98  # unique enough per test run, within int32
        body = telegram_text_update(
            text, user_id=self.telegram_user_id, update_id=serial, message_id=serial
        )
        return await _post(
            f"{self.social_url}/webhooks/telegram", body, telegram_headers(self.telegram_token)
        )


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


def messenger_text_webhook(text: str, *, page_id: str, psid: str) -> bytes:
    """The body of a Messenger webhook carrying one text message from ``psid`` to the
    page, as Meta sends it."""
    now_ms = int(time.time() * 1000)
    payload = {
        "object": "page",
        "entry": [
            {
                "id": page_id,
                "time": now_ms,
                "messaging": [
                    {
                        "sender": {"id": psid},
                        "recipient": {"id": page_id},
                        "timestamp": now_ms,
                        "message": {"mid": f"m_{uuid.uuid4().hex}", "text": text},
                    }
                ],
            }
        ],
    }
    return json.dumps(payload).encode()


def x_dm_webhook(
    text: str,
    *,
    sender_id: str,
    event_id: str,
    for_user_id: str = "4337869213",
    created_ms: int | None = None,
) -> bytes:
    """The body of an X Account Activity webhook carrying one direct message from
    ``sender_id`` to the subscribed account ``for_user_id``, as X sends it (compact)."""
    created = int(time.time() * 1000) if created_ms is None else created_ms
    payload = {
        "for_user_id": for_user_id,
        "direct_message_events": [
            {
                "type": "message_create",
                "id": event_id,
                "created_timestamp": str(created),
                "message_create": {
                    "target": {"recipient_id": for_user_id},
                    "sender_id": sender_id,
                    "message_data": {"text": text},
                },
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def telegram_text_update(
    text: str, *, user_id: int, update_id: int, message_id: int, date: int | None = None
) -> bytes:
    """The body of a Telegram Bot API update: one text message in a private chat."""
    payload = {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "date": int(time.time()) if date is None else date,
            "from": {"id": user_id, "is_bot": False, "first_name": "Customer"},
            "chat": {"id": user_id, "type": "private"},
            "text": text,
        },
    }
    return json.dumps(payload).encode()


def meta_signed(body: bytes, secret: str) -> dict[str, str]:
    """Headers Meta sends with ``body``: JSON, and its HMAC-SHA256 under the app secret.
    Computed here, not with the service's code, as the outside world would."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


def x_signed(body: bytes, secret: str) -> dict[str, str]:
    """Headers X sends with ``body``: JSON, and its base64 HMAC-SHA256 under the consumer
    secret (computed here, as the outside world would)."""
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return {
        "content-type": "application/json",
        "x-twitter-webhooks-signature": f"sha256={digest.decode()}",
    }


def telegram_headers(secret_token: str) -> dict[str, str]:
    """Headers Telegram sends: JSON, and the ``secret_token`` given to ``setWebhook``."""
    return {"content-type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret_token}


async def _post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, content=body, headers=headers)


async def post_meta_webhook(social_url: str, body: bytes, secret: str) -> httpx.Response:
    """POST ``body`` to ingest-social's Meta webhook, signed with ``secret``."""
    return await _post(f"{social_url}/webhooks/meta", body, meta_signed(body, secret))


async def customer_timeline(
    router_url: str, headers: dict[str, str], identity: str, *, messages: int = 1
) -> dict[str, Any]:
    """The timeline of the customer behind ``identity`` (e.g. ``email:ana@example.org``)
    once it holds ``messages`` messages, through the router's read API; its ``items`` are
    the customer messages (type ``message``), the activity items left out."""

    async def timeline() -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=10, headers=headers) as http:
            found = await http.get(f"{router_url}/customers", params={"identity": identity})
            items = found.json()["items"]
            if not items:
                return None
            customer_id = items[0]["customer_id"]
            page: dict[str, Any] = (
                await http.get(f"{router_url}/customers/{customer_id}/timeline")
            ).json()
        page["items"] = [i for i in page["items"] if i["type"] == "message"]
        return page if len(page["items"]) >= messages else None

    return await eventually(timeline, what=f"{messages} message(s) in the customer's timeline")


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
