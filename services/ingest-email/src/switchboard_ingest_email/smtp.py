"""The SMTP side: aiosmtpd on our own event loop, with the replies of the contract.

- ``EHLO`` offers SIZE (the configured limit), 8BITMIME, SMTPUTF8 and STARTTLS when a
  certificate is configured.
- ``MAIL FROM`` with a declared ``SIZE`` over the limit: ``552`` before any data is read;
  data over the limit: ``552`` after it (aiosmtpd discards it while reading).
- ``RCPT TO`` outside the configured support domains/addresses: ``550 5.1.1`` (never an
  open relay).
- end of ``DATA``: ``250`` only after ``Ingestor.ingest`` returned (raw bytes stored,
  event acknowledged by Kafka); ``451 4.3.0`` when the store or Kafka is unavailable;
  malformed MIME is still accepted (stored raw, published with ``parse_errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from switchboard_common.logging import get_logger
from switchboard_ingest_email.ingest import Ingestor, IngestUnavailableError
from switchboard_ingest_email.metrics import IngestEmailMetrics
from switchboard_ingest_email.normalise import Delivery
from switchboard_ingest_email.recipients import RecipientPolicy, normalise_address
from switchboard_ingest_email.settings import IngestEmailSettings

log = get_logger(__name__)

REPLY_ACCEPTED = "250 2.0.0 OK: message stored and queued"
REPLY_UNAVAILABLE = "451 4.3.0 Temporarily unable to accept the message, try again later"
REPLY_OVERLOADED = "451 4.3.2 Too busy to accept the message now, try again later"
REPLY_UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: not a support address here"
REPLY_RECIPIENT_OK = "250 2.1.5 Recipient OK"
REPLY_TOO_LARGE = "552 5.3.4 Message size exceeds fixed maximum message size"
REPLY_TOO_MUCH_DATA = "552 5.3.4 Too much mail data"

# aiosmtpd's own 552 replies carry no enhanced status code; ours do (RFC 3463).
_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size": REPLY_TOO_LARGE,
    "552 Error: Too much mail data": REPLY_TOO_MUCH_DATA,
}


class IngestHandler:
    """aiosmtpd handler: recipients by policy, DATA through the ingestor."""

    def __init__(
        self, ingestor: Ingestor, policy: RecipientPolicy, metrics: IngestEmailMetrics
    ) -> None:
        self.ingestor = ingestor
        self.policy = policy
        self.metrics = metrics
        self.sessions: set[IngestSMTP] = set()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002 - aiosmtpd's hook signature
        session: Session,  # noqa: ARG002 - aiosmtpd's hook signature
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.policy.accepts(address):
            self.metrics.rejected.labels("smtp", "unknown_recipient").inc()
            return REPLY_UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return REPLY_RECIPIENT_OK

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002 - aiosmtpd's hook signature
        session: Session,  # noqa: ARG002 - aiosmtpd's hook signature
        envelope: Envelope,
    ) -> str:
        raw = envelope.original_content
        if not isinstance(raw, bytes) or not envelope.rcpt_tos:
            return "554 5.5.1 No valid recipients"  # aiosmtpd prevents this; be explicit
        account = normalise_address(envelope.rcpt_tos[0])
        mail_from = envelope.mail_from
        delivery = Delivery(
            account=account,
            tenant=self.policy.tenant_for(account),
            mail_from=normalise_address(mail_from) if mail_from is not None else None,
            transport="smtp",
        )
        return await self.accept(raw, delivery)

    async def accept(self, raw: bytes, delivery: Delivery) -> str:
        """The final reply to DATA for ``raw``: 250 only once it is durable."""
        try:
            await self.ingestor.ingest(raw, delivery)
        except IngestUnavailableError as error:
            reason = "overloaded" if error.cause == "overloaded" else "unavailable"
            self.metrics.rejected.labels("smtp", reason).inc()
            log.warning("message deferred (451)", cause=error.cause, error=str(error))
            return REPLY_OVERLOADED if error.cause == "overloaded" else REPLY_UNAVAILABLE
        except Exception:
            # A bug must never lose mail: defer it, the sender retries, the log says why.
            self.metrics.rejected.labels("smtp", "unavailable").inc()
            log.exception("message deferred after an unexpected error (451)")
            return REPLY_UNAVAILABLE
        return REPLY_ACCEPTED


class IngestSMTP(SMTP):
    """aiosmtpd's SMTP protocol with enhanced status codes and session tracking."""

    # RFC 5321 says 1000 octets per line; real mail sometimes has longer lines, and
    # refusing them would bounce customer mail. The bytes are stored as received anyway.
    line_length_limit = 64 * 1024

    def __init__(self, handler: IngestHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._ingest_handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ingest_handler.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ingest_handler.sessions.discard(self)
        super().connection_lost(exc)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith("552"):
            self._ingest_handler.metrics.rejected.labels("smtp", "too_large").inc()
            await super().push(_REWRITES.get(status, status))
            return
        await super().push(status)


def tls_context(settings: IngestEmailSettings) -> ssl.SSLContext | None:
    """The STARTTLS context when a certificate and key are configured."""
    if settings.tls_certfile is None or settings.tls_keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.tls_certfile), str(settings.tls_keyfile))
    return context


class SmtpServer:
    """The listening socket and its sessions, started and stopped with the service."""

    def __init__(self, handler: IngestHandler, settings: IngestEmailSettings) -> None:
        self.handler = handler
        self.settings = settings
        self.server: asyncio.Server | None = None
        self._tls = tls_context(settings)

    def _protocol(self) -> IngestSMTP:
        settings = self.settings
        return IngestSMTP(
            self.handler,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.smtp_hostname,
            ident="Switchboard ingest-email",
            tls_context=self._tls,
            require_starttls=settings.require_starttls,
            timeout=settings.smtp_idle_timeout_seconds,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._protocol, host=self.settings.smtp_host, port=self.settings.smtp_port
        )
        log.info("SMTP listening", host=self.settings.smtp_host, port=self.port)

    @property
    def port(self) -> int:
        if self.server is None or not self.server.sockets:
            return self.settings.smtp_port
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    async def stop(self, drain_timeout: float) -> None:
        """Stop accepting connections, let messages in flight finish, close sessions."""
        if self.server is not None:
            self.server.close()
        drained = await self.handler.ingestor.drain(drain_timeout)
        if not drained:
            log.warning("SMTP stopped with messages still in flight (they get no 250)")
        for session in list(self.handler.sessions):
            if session.transport is not None:
                with contextlib.suppress(Exception):
                    session.transport.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def serve(self) -> None:
        """Background task: serve until cancelled, then stop gracefully."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop(self.settings.publish_timeout_seconds))
