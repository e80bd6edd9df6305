"""A local SMTP relay standing in for the mail provider replies are submitted to: it keeps
what it accepts, refuses recipients starting with ``refuse.`` for good (550, as an unknown
mailbox), answers 451 to the next ``busy`` messages, takes ``delay`` seconds over each, and
with a certificate and a user
asks for STARTTLS and then AUTH first, as a submission server does. With an ``outbox``
directory it also writes each accepted message there as ``<n>.eml`` (``make run``'s mail
sink, which ``make demo`` reads).

    with LocalRelay.started(tls=(cert, key), user="switchboard", password=pw) as relay:
        ...  # OUTBOUND_SMTP_URL=relay.url
        relay.received("<reply.1f...@support.example.com>")
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from switchboard_devkit.running.inprocess import free_port

#: Recipients refused for good.
REFUSED = "refuse."


def text_of(mail: Message) -> str:
    """The decoded body of a single-part mail the relay received."""
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes), "a multipart mail has no single body"
    return body.decode()


@dataclass
class LocalRelay:
    port: int
    user: str | None = None
    #: Messages still to be answered 451 (a relay that is busy for a while).
    busy: int = 0
    #: Seconds each accepted message takes (a slow relay, so a fault lands mid-send).
    delay: float = 0.0
    messages: list[Message] = field(default_factory=list)
    #: The envelope sender (MAIL FROM) of each message kept: where bounces would go.
    envelope_senders: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Where accepted messages are also written, one file each (None: memory only).
    outbox: Path | None = None

    @property
    def url(self) -> str:
        """``OUTBOUND_SMTP_URL`` for this relay (plain SMTP when it has no certificate)."""
        user = f"{self.user}@" if self.user else ""
        return f"smtp://{user}127.0.0.1:{self.port}"

    def received(self, message_id: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m["Message-ID"] == message_id]

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name and arguments
        self,
        server: SMTP,  # noqa: ARG002
        session: Session,  # noqa: ARG002
        envelope: Envelope,
        address: str,
        options: Any,  # noqa: ARG002
    ) -> str:
        if address.startswith(REFUSED):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name and arguments
        self,
        server: SMTP,  # noqa: ARG002
        session: Session,  # noqa: ARG002
        envelope: Envelope,
    ) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            if self.busy > 0:
                self.busy -= 1
                return "451 4.3.2 Try again later"
            if not isinstance(envelope.content, bytes):
                return "554 5.6.0 Expected bytes"
            self.messages.append(message_from_bytes(envelope.content))
            self.envelope_senders.append(envelope.mail_from or "")
            if self.outbox is not None:
                # Written whole, then renamed: a reader never sees half a message.
                name = f"{time.time_ns()}-{len(self.messages)}.eml"
                partial = self.outbox / f"{name}.partial"  # not *.eml until whole
                partial.write_bytes(envelope.content)
                partial.rename(self.outbox / name)
        return "250 2.0.0 queued"

    @classmethod
    @contextlib.contextmanager
    def started(
        cls,
        *,
        tls: tuple[Path, Path] | None = None,
        user: str | None = None,
        password: str | None = None,
        outbox: Path | None = None,
        port: int | None = None,
    ) -> Iterator[LocalRelay]:
        """Listening on 127.0.0.1 until the block ends. ``tls`` (certificate, key) makes
        STARTTLS required; ``user`` and ``password`` make AUTH required after it."""
        if outbox is not None:
            outbox.mkdir(parents=True, exist_ok=True)
        relay = cls(port=port or free_port(), user=user, outbox=outbox)
        options: dict[str, Any] = {}
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            options.update(tls_context=context, require_starttls=True)
        if user is not None:

            def authenticate(
                server: SMTP,  # noqa: ARG001
                session: Session,  # noqa: ARG001
                envelope: Envelope,  # noqa: ARG001
                mechanism: str,  # noqa: ARG001
                data: Any,
            ) -> AuthResult:
                given = (data.login, data.password) if isinstance(data, LoginPassword) else None
                wanted = (user.encode(), (password or "").encode())
                return AuthResult(success=given == wanted)

            options.update(
                auth_required=True, auth_require_tls=tls is not None, authenticator=authenticate
            )
        controller = Controller(relay, hostname="127.0.0.1", port=relay.port, **options)
        controller.start()
        try:
            yield relay
        finally:
            controller.stop()
