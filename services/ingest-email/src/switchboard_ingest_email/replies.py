"""Agent replies by email: each ``ReplyDelivery`` on the email channel, submitted once to
the relay (``OUTBOUND_SMTP_URL``), then ``support.delivery.updated`` and
``support.reply.sent``.

- ``compose`` (pure): the message — From the support address the customer wrote to, a
  ``Message-ID`` derived from ``reply_id`` (so every attempt of one reply carries the
  same one), ``In-Reply-To``/``References`` from the customer's Message-IDs so that their
  mail client threads it, and so that their answer threads back into the conversation
  (the router matches the customer's own Message-IDs in ``References``).
- ``SmtpRelay``: submission with STARTTLS (``smtp://``, required unless the URL says
  ``?tls=none``) or implicit TLS (``smtps://``), AUTH when a user is given. A 4xx answer
  or a connection failure is temporary, a 5xx one permanent.
- ``ReplySender``: the batch handler. Per reply it records ``email_replies/<reply_id>``
  (``sending``) before the relay sees it, ``sent``/``failed`` after, then publishes.

Once per ``reply_id``: a redelivered order whose record says ``sent`` or ``failed`` is
not submitted again; its statuses are published again with the same event ids. The one
window left is a process that dies after the relay accepted the message and before the
record says so: the order comes back with the record at ``sending`` and is submitted
again, with the same ``Message-ID`` (mail stores that drop a second copy by Message-ID
keep one). The relay is the boundary: nothing in SMTP lets a client ask whether a
message was accepted before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    OUTBOUND,
    Channel,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    ReplyDelivery,
    ReplySent,
)
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.mongo import Document
from switchboard_ingest_email.metrics import ReplyMetrics

log = get_logger(__name__)

#: The collection of reply records (``_id`` = ``reply_id``).
REPLIES = "email_replies"
#: Attempts at the relay per reply within one batch before the batch is retried.
ATTEMPTS = 3


def reply_message_id(reply_id: str, account: str) -> str:
    """The reply's Message-ID: the same for every attempt of one ``reply_id``, in the
    support address's domain, and nothing personal in it."""
    digest = hashlib.sha256(reply_id.encode()).hexdigest()[:32]
    domain = account.rsplit("@", 1)[-1] or "switchboard.invalid"
    return f"<reply.{digest}@{domain}>"


def reply_subject(subject: str | None) -> str:
    if not subject:
        return "Re: your message"
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def compose(order: ReplyDelivery) -> EmailMessage:
    """The email for one reply (pure)."""
    account = order.account or ""
    message = EmailMessage()
    message["From"] = account
    message["To"] = order.recipient
    message["Subject"] = reply_subject(order.subject)
    message["Date"] = format_datetime(order.ordered_at)
    message["Message-ID"] = reply_message_id(order.reply_id, account)
    if order.references:
        # The router keeps Message-IDs without their angle brackets; headers need them.
        ids = [ref if ref.startswith("<") else f"<{ref}>" for ref in order.references]
        message["In-Reply-To"] = ids[-1]
        message["References"] = " ".join(ids)
    message.set_content(order.text)
    if order.html:
        message.add_alternative(order.html, subtype="html")
    return message


# --------------------------------------------------------------------------- the relay


class RelayUnavailableError(Exception):
    """The relay did not take the message now (4xx, no connection): try again later."""


class RelayRefusedError(Exception):
    """The relay refused the message (5xx): trying again gives the same answer."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


#: What the relay made of one message: None for accepted.
Outcome = RelayRefusedError | RelayUnavailableError | None


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    #: ``starttls`` (smtp://, the default), ``implicit`` (smtps://), ``none`` (?tls=none:
    #: a relay on the same host only).
    tls: Literal["starttls", "implicit", "none"]
    username: str | None
    password: str | None
    ca_file: Path | None
    timeout: float

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        password: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> RelayConfig:
        """From ``OUTBOUND_SMTP_URL`` (``smtp://[user@]host[:587][?tls=none]`` or
        ``smtps://[user@]host[:465]``); the password comes from its own setting, not the
        URL, so that it can be a mounted file."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                "OUTBOUND_SMTP_URL must look like smtp://relay:587 or smtps://relay:465"
            )
        if parts.password:
            raise ValueError(
                "OUTBOUND_SMTP_URL must not carry a password: set OUTBOUND_SMTP_PASSWORD "
                "(or OUTBOUND_SMTP_PASSWORD_FILE)"
            )
        query = parse_qs(parts.query)
        implicit = parts.scheme == "smtps"
        tls: Literal["starttls", "implicit", "none"] = "implicit" if implicit else "starttls"
        if query.get("tls") == ["none"]:
            if implicit:
                raise ValueError("OUTBOUND_SMTP_URL: smtps:// is TLS; drop ?tls=none")
            tls = "none"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=password,
            ca_file=ca_file,
            timeout=timeout,
        )


class SmtpRelay:
    """Submits messages to the configured relay, one connection per batch."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(
            cafile=str(self.config.ca_file) if self.config.ca_file else None
        )

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.tls == "implicit":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                c.host, c.port, timeout=c.timeout, context=self._context()
            )
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        smtp.ehlo()
        if c.tls == "starttls":
            # Required: a relay that does not offer STARTTLS fails the submission
            # (SMTPNotSupportedError) rather than getting the reply in clear text.
            smtp.starttls(context=self._context())
            smtp.ehlo()
        if c.username:
            smtp.login(c.username, c.password or "")
        return smtp

    def _send_all(self, messages: Sequence[EmailMessage]) -> list[Outcome]:
        """Blocking: every message on one connection; per message None (accepted) or why
        not. A failure to connect or log in fails them all alike."""
        try:
            smtp = self._connect()
        except smtplib.SMTPAuthenticationError as error:
            failure: Outcome = RelayRefusedError(str(error.smtp_code), _text(error.smtp_error))
            return [failure for _ in messages]
        except (OSError, smtplib.SMTPException) as error:
            failure = RelayUnavailableError(f"{type(error).__name__}: {error}")
            return [failure for _ in messages]
        try:
            outcomes = [_submit(smtp, message) for message in messages]
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return outcomes

    async def send_all(self, messages: Sequence[EmailMessage]) -> list[Outcome]:
        return await asyncio.to_thread(self._send_all, messages)


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _submit(smtp: smtplib.SMTP, message: EmailMessage) -> Outcome:
    try:
        refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()))
        return _answer(code, text)
    except smtplib.SMTPResponseException as error:
        return _answer(error.smtp_code, error.smtp_error)
    except (OSError, smtplib.SMTPException) as error:
        return RelayUnavailableError(f"{type(error).__name__}: {error}")
    if refused:  # one recipient only: refused means refused
        code, text = next(iter(refused.values()))
        return _answer(code, text)
    return None


def _answer(code: int, text: bytes | str) -> Outcome:
    if 400 <= code < 500:
        return RelayUnavailableError(f"{code} {_text(text)}")
    return RelayRefusedError(str(code), _text(text))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ReplyRecord:
    reply_id: str
    status: Literal["sending", "sent", "failed"]
    message_id: str
    at: datetime
    error: DeliveryError | None = None


class ReplyRecords:
    """``email_replies``: one document per reply, by ``_id``."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._replies = db[REPLIES]

    async def get(self, reply_ids: Sequence[str]) -> dict[str, ReplyRecord]:
        found: dict[str, ReplyRecord] = {}
        async for document in self._replies.find({"_id": {"$in": list(reply_ids)}}):
            error = document.get("error")
            found[document["_id"]] = ReplyRecord(
                reply_id=document["_id"],
                status=document["status"],
                message_id=document["message_id"],
                at=document["at"],
                error=DeliveryError(**error) if error else None,
            )
        return found

    async def start(self, record: ReplyRecord, conversation_id: str) -> None:
        # A duplicate: an earlier attempt died mid-send, and the record stays ``sending``.
        with contextlib.suppress(DuplicateKeyError):
            await self._replies.insert_one(
                {
                    "_id": record.reply_id,
                    "conversation_id": conversation_id,
                    "status": record.status,
                    "message_id": record.message_id,
                    "at": record.at,
                }
            )

    async def finish(self, record: ReplyRecord) -> None:
        fields: dict[str, Any] = {"status": record.status, "at": record.at}
        if record.error is not None:
            fields["error"] = record.error.model_dump()
        await self._replies.update_one({"_id": record.reply_id}, {"$set": fields})


# --------------------------------------------------------------------------- the handler


class Publisher(Protocol):
    """Publishes and returns once Kafka acknowledged every record (``EventPublisher``)."""

    async def publish_all(self, items: Sequence[Outgoing]) -> object: ...


class ReplySender:
    """The batch handler of group ``ingest-email-replies`` on
    ``switchboard.router.reply-deliveries.v1``: email orders only (others are for the
    services speaking their channels)."""

    def __init__(
        self,
        relay: SmtpRelay,
        records: ReplyRecords,
        publisher: Publisher,
        metrics: ReplyMetrics,
        clock: Callable[[], datetime],
        *,
        backoff: float = 1.0,
    ) -> None:
        self._relay = relay
        self._records = records
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._backoff = backoff

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        orders: dict[str, tuple[Delivery, ReplyDelivery]] = {}
        for delivery in deliveries:
            order = delivery.event
            if isinstance(order, ReplyDelivery) and order.channel is Channel.EMAIL:
                orders.setdefault(order.reply_id, (delivery, order))  # twice in a batch: once
        if not orders:
            return []
        known = await self._records.get(list(orders))
        finished = [
            (delivery, order, known[reply_id])
            for reply_id, (delivery, order) in orders.items()
            if reply_id in known and known[reply_id].status != "sending"
        ]
        pending = [
            (delivery, order)
            for reply_id, (delivery, order) in orders.items()
            if reply_id not in known or known[reply_id].status == "sending"
        ]
        sent_now = await self._send(pending)
        finished += sent_now
        await self._publisher.publish_all(
            [item for d, order, r in finished for item in _statuses(d, order, r)]
        )
        # A refusal is dead-lettered once, when it happens; its status is published above.
        return [
            (d, f"reply refused by the relay: {r.error.code} {r.error.text}")
            for d, _, r in sent_now
            if r.error is not None
        ]

    async def _send(
        self, pending: list[tuple[Delivery, ReplyDelivery]]
    ) -> list[tuple[Delivery, ReplyDelivery, ReplyRecord]]:
        if not pending:
            return []
        messages = {order.reply_id: compose(order) for _, order in pending}
        now = self._clock()
        for _, order in pending:
            start = ReplyRecord(
                order.reply_id, "sending", str(messages[order.reply_id]["Message-ID"]), now
            )
            await self._records.start(start, order.conversation_id)
        finished: list[tuple[Delivery, ReplyDelivery, ReplyRecord]] = []
        left = list(pending)
        for attempt in range(ATTEMPTS):
            started = time.monotonic()
            outcomes = await self._relay.send_all([messages[o.reply_id] for _, o in left])
            self._metrics.send_seconds.labels("email").observe(time.monotonic() - started)
            retry: list[tuple[Delivery, ReplyDelivery]] = []
            last: Outcome = None
            for (delivery, order), outcome in zip(left, outcomes, strict=True):
                if isinstance(outcome, RelayUnavailableError):
                    retry.append((delivery, order))
                    last = outcome
                    continue
                message_id = str(messages[order.reply_id]["Message-ID"])
                if outcome is None:
                    record = ReplyRecord(order.reply_id, "sent", message_id, self._clock())
                else:
                    error = DeliveryError(code=f"smtp_{outcome.code}", text=outcome.text)
                    record = ReplyRecord(order.reply_id, "failed", message_id, self._clock(), error)
                await self._records.finish(record)
                self._metrics.replies.labels("email", record.status).inc()
                finished.append((delivery, order, record))
            if not retry:
                return finished
            left = retry
            self._metrics.replies.labels("email", "retried").inc(len(retry))
            log.warning("reply submission failed, will retry", error=str(last), replies=len(retry))
            if attempt + 1 < ATTEMPTS:
                # Exponential backoff with full jitter: replicas do not retry in step.
                await asyncio.sleep(random.uniform(0, self._backoff * 4**attempt))  # noqa: S311
        # Still refused for now: publish what finished, then fail the batch so that it is
        # redelivered (the records keep the finished replies from going out twice).
        await self._publisher.publish_all(
            [o for d, order, r in finished for o in _statuses(d, order, r)]
        )
        raise RelayUnavailableError(f"the relay did not take {len(left)} replies: {last}")


def _statuses(delivery: Delivery, order: ReplyDelivery, record: ReplyRecord) -> list[Outgoing]:
    """What a finished reply publishes; ids from the order's, so a redelivered order
    publishes the same events again (consumers drop the copy by ``ce_id``)."""
    base = delivery.attributes.id
    updated = DeliveryUpdated(
        reply_id=order.reply_id,
        conversation_id=order.conversation_id,
        channel=Channel.EMAIL,
        status=DeliveryStatus.SENT if record.status == "sent" else DeliveryStatus.FAILED,
        provider_message_id=record.message_id if record.status == "sent" else None,
        error=record.error,
        at=record.at,
    )
    items = [Outgoing(OUTBOUND, order.conversation_id, updated, event_id=f"{base}:status")]
    if record.status == "sent":
        sent = ReplySent(
            conversation_id=order.conversation_id, agent_id=order.agent_id, sent_at=record.at
        )
        items.append(
            Outgoing(CONVERSATION_EVENTS, order.conversation_id, sent, event_id=f"{base}:sent")
        )
    return items
