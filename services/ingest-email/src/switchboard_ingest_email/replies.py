"""Agent replies by email: the message and the relay. ``switchboard_common.outbound``
does the rest (once per ``reply_id``, retries, statuses); see the README's "Replies".

- ``compose`` (pure): the message — From the support domain's configured sender
  (``OUTBOUND_EMAIL_FROM``; otherwise the support address the customer wrote to, which
  then also is its ``Reply-To``), a
  ``Message-ID`` derived from ``reply_id`` (so every attempt of one reply carries the
  same one), ``In-Reply-To``/``References`` from the customer's Message-IDs so that their
  mail client threads it, and so that their answer threads back into the conversation
  (the router matches the customer's own Message-IDs in ``References``).
- ``SmtpRelay`` (a ``ChannelSender``): submission with STARTTLS (``smtp://``, required
  unless the URL says ``?tls=none``) or implicit TLS (``smtps://``), AUTH when a user is
  given, one connection per batch. A 4xx answer or a connection failure is
  ``Unavailable``, a 5xx ``Refused``.

The Message-ID is the idempotency key SMTP offers: a reply submitted again after a crash
between the relay's acceptance and its record carries the same one, and mail stores that
drop duplicates by Message-ID keep one copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
import ssl
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from switchboard_common.contract import Channel, ReplyDelivery
from switchboard_common.outbound import Accepted, Outcome, Refused, Unavailable

#: The collection of reply records (``_id`` = ``reply_id``).
REPLIES = "email_replies"


def reply_message_id(reply_id: str, account: str) -> str:
    """The reply's Message-ID: the same for every attempt of one ``reply_id``, in the
    support address's domain, and nothing personal in it."""
    digest = hashlib.sha256(reply_id.encode()).hexdigest()[:32]
    domain = account.rsplit("@", 1)[-1] or "switchboard.invalid"
    return f"<reply.{digest}@{domain}>"


#: A Message-ID ``reply_message_id`` made, in the header block of a raw message.
_OWN_MESSAGE_ID = re.compile(
    # The value may be folded onto the next line (RFC 5322 2.2.3).
    rb"^Message-ID:[ \t]*(?:\r?\n[ \t]+)?<reply\.[0-9a-f]{32}@([^<>@\s]+)>",
    re.IGNORECASE | re.MULTILINE,
)


def is_own_reply(raw: bytes, domains: Collection[str]) -> bool:
    """Whether ``raw`` is one of Switchboard's own replies or acknowledgements coming back
    (a customer address that forwards to support): its Message-ID is one
    ``reply_message_id`` makes, in a support domain. Only the header block is looked at,
    so a reply quoted or attached in a customer's mail still counts as theirs."""
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=-1)
    found = _OWN_MESSAGE_ID.search(raw, 0, end if end >= 0 else len(raw))
    return found is not None and found.group(1).decode("ascii", "replace").lower() in domains


def reply_subject(subject: str | None) -> str:
    if not subject:
        return "Re: your message"
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def parse_from_addresses(spec: str) -> dict[str, str]:
    """``OUTBOUND_EMAIL_FROM``: ``domain=Display Name <address>`` entries separated by
    ``;`` (display names may hold commas). Raises ``ValueError`` naming the bad entry."""
    senders: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(";")):
        if not entry:
            continue
        domain, _, sender = entry.partition("=")
        # "Name <address>" by hand: parseaddr would split an unquoted comma in the name.
        name, _, address = sender.strip().rpartition("<")
        name, address = name.strip().strip('"'), address.removesuffix(">").strip()
        domain = domain.strip().lower()
        if not domain or "@" in domain or parseaddr(address)[1] != address or "@" not in address:
            raise ValueError(
                f"OUTBOUND_EMAIL_FROM: {entry!r} is not 'domain=Display Name <address>'"
            )
        senders[domain] = formataddr((name, address)) if name else address
    return senders


def compose(order: ReplyDelivery, senders: Mapping[str, str] | None = None) -> EmailMessage:
    """The email for one reply (pure); ``senders`` maps support domains to the From of
    their replies."""
    account = order.account or ""
    message = EmailMessage()
    sender = (senders or {}).get(account.rsplit("@", 1)[-1].lower())
    message["From"] = sender or account
    if sender and parseaddr(sender)[1].lower() != account.lower():
        # The customer's answer goes where they wrote, so it threads and routes as before.
        message["Reply-To"] = account
    message["To"] = order.recipient
    message["Subject"] = reply_subject(order.subject)
    message["Date"] = format_datetime(order.ordered_at)
    message["Message-ID"] = reply_message_id(order.reply_id, account)
    if order.references:
        # The router keeps Message-IDs without their angle brackets; headers need them.
        ids = [ref if ref.startswith("<") else f"<{ref}>" for ref in order.references]
        message["In-Reply-To"] = ids[-1]
        message["References"] = " ".join(ids)
    if order.automatic:
        # RFC 3834: the customer's own auto-responder must not answer it (no loops), and
        # Exchange's neither.
        message["Auto-Submitted"] = "auto-replied"
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(order.text)
    if order.html:
        message.add_alternative(order.html, subtype="html")
    return message


# --------------------------------------------------------------------------- the relay


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
    """The email ``ChannelSender``: submits replies to the configured relay, one
    connection per batch."""

    channels = frozenset({Channel.EMAIL})

    def __init__(self, config: RelayConfig, senders: Mapping[str, str] | None = None) -> None:
        self.config = config
        #: Support domain → the From of its replies (``OUTBOUND_EMAIL_FROM``).
        self.senders = dict(senders or {})

    def planned_id(self, order: ReplyDelivery) -> str | None:
        return reply_message_id(order.reply_id, order.account or "")

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
        """Blocking: every message on one connection, one outcome each. A failure to
        connect or log in answers for them all."""
        try:
            smtp = self._connect()
        except smtplib.SMTPAuthenticationError as error:
            failure: Outcome = _answer(error.smtp_code, error.smtp_error)
            return [failure for _ in messages]
        except (OSError, smtplib.SMTPException) as error:
            failure = Unavailable(f"{type(error).__name__}: {error}")
            return [failure for _ in messages]
        try:
            outcomes = [_submit(smtp, message) for message in messages]
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return outcomes

    async def send_all(self, orders: Sequence[ReplyDelivery]) -> list[Outcome]:
        return await asyncio.to_thread(
            self._send_all, [compose(order, self.senders) for order in orders]
        )


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _submit(smtp: smtplib.SMTP, message: EmailMessage) -> Outcome:
    # The envelope sender is the support address the customer wrote to (Reply-To when
    # From is the domain's sender): bounces come back where ingest-email takes mail.
    envelope_from = parseaddr(str(message["Reply-To"] or message["From"]))[1]
    try:
        refused = smtp.send_message(message, from_addr=envelope_from)
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()))
        return _answer(code, text)
    except smtplib.SMTPResponseException as error:
        return _answer(error.smtp_code, error.smtp_error)
    except (OSError, smtplib.SMTPException) as error:
        return Unavailable(f"{type(error).__name__}: {error}")
    if refused:  # one recipient only: refused means refused
        code, text = next(iter(refused.values()))
        return _answer(code, text)
    return Accepted(str(message["Message-ID"]))


def _answer(code: int, text: bytes | str) -> Refused | Unavailable:
    if 400 <= code < 500:
        return Unavailable(f"{code} {_text(text)}")
    return Refused(f"smtp_{code}", _text(text))
