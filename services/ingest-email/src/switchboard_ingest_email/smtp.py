"""The SMTP side: aiosmtpd on our own event loop, with the replies of the contract.

- a connection over the session limits (``admission``): ``421`` and closed;
- ``EHLO`` offers SIZE (the configured limit), 8BITMIME, SMTPUTF8 and STARTTLS when a
  certificate is configured.
- ``MAIL FROM`` with a declared ``SIZE`` over the limit: ``552`` before any data is read;
  data over the limit: ``552`` after it (aiosmtpd discards it while reading).
- ``MAIL FROM`` over the client's message rate: ``451 4.7.1``.
- ``RCPT TO`` outside the configured support domains/addresses: ``550 5.1.1`` (never an
  open relay); beyond the recipient limit: ``452 4.5.3``.
- ``DATA``: memory for the message is reserved before ``354`` and as the data arrives
  (``admission.Admission``); what does not fit gets ``451 4.3.1`` (at ``DATA``, or after
  the data, discarded while read). The data is read into one buffer here rather than by
  aiosmtpd, which keeps one object per line (tens of bytes each, so short lines cost
  many times their size) and could not be stopped mid-message.
- end of ``DATA``: ``250`` only after ``Ingestor.ingest`` returned (raw bytes stored,
  event acknowledged by Kafka); ``451 4.3.0`` when the store or Kafka is unavailable;
  malformed MIME is still accepted (stored raw, published with ``parse_errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from switchboard_common.logging import get_logger
from switchboard_ingest_email.admission import Admission, Reservation
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
REPLY_TOO_MANY_SESSIONS = "421 4.3.2 Too many connections, try again later; closing"
REPLY_TOO_MANY_SESSIONS_PER_IP = (
    "421 4.7.0 Too many connections from your address, try again later; closing"
)
REPLY_RATE_LIMITED = "451 4.7.1 Too many messages from your address, try again later"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_NO_MEMORY = "451 4.3.1 Not enough resources for the message now, try again later"
REPLY_LINE_TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
REPLY_MAIL_OK = "250 2.1.0 OK"

# aiosmtpd's own 552 replies carry no enhanced status code; ours do (RFC 3463).
_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size": REPLY_TOO_LARGE,
    "552 Error: Too much mail data": REPLY_TOO_MUCH_DATA,
}


class IngestHandler:
    """aiosmtpd handler: recipients by policy, DATA through the ingestor."""

    def __init__(
        self,
        ingestor: Ingestor,
        policy: RecipientPolicy,
        metrics: IngestEmailMetrics,
        admission: Admission,
    ) -> None:
        self.ingestor = ingestor
        self.policy = policy
        self.metrics = metrics
        self.admission = admission
        self.sessions: set[IngestSMTP] = set()

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002 - aiosmtpd's hook signature
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not self.admission.allow_message(client_of(session.peer)):
            self.metrics.rejected.labels("smtp", "rate_limited").inc()
            return REPLY_RATE_LIMITED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return REPLY_MAIL_OK

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,  # noqa: ARG002 - aiosmtpd's hook signature
        session: Session,  # noqa: ARG002 - aiosmtpd's hook signature
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.admission.limits.max_recipients:
            self.metrics.rejected.labels("smtp", "too_many_recipients").inc()
            return REPLY_TOO_MANY_RECIPIENTS
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


def client_of(peer: Any) -> str:
    """The client's IP address (the key of the per-client limits)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


def declared_size(mail_options: list[str]) -> int | None:
    """``SIZE=`` of ``MAIL FROM`` (aiosmtpd has checked it is digits within the limit)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


class IngestSMTP(SMTP):
    """aiosmtpd's SMTP protocol with the admission limits, its own bounded DATA reader,
    enhanced status codes and session tracking."""

    # RFC 5321 says 1000 octets per line; real mail sometimes has longer lines, and
    # refusing them would bounce customer mail. The bytes are stored as received anyway.
    line_length_limit = 64 * 1024

    def __init__(self, handler: IngestHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._ingest_handler = handler
        self._admission = handler.admission
        #: The admitted client while the session is open (None before and after).
        self._client: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._client is None:  # not the STARTTLS upgrade of an admitted session
            client = client_of(transport.get_extra_info("peername"))
            refusal = self._admission.open_session(client)
            if refusal is not None:
                # Refused before aiosmtpd sees the connection: no task, no buffers.
                self._refused = True
                self._ingest_handler.metrics.rejected.labels("smtp", refusal).inc()
                reply = (
                    REPLY_TOO_MANY_SESSIONS
                    if refusal == "too_many_sessions"
                    else REPLY_TOO_MANY_SESSIONS_PER_IP
                )
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(reply.encode() + b"\r\n")
                transport.close()  # after the reply is written
                return
            self._client = client
            self._ingest_handler.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        if self._client is not None:
            self._admission.close_session(self._client)
            self._client = None
        self._ingest_handler.sessions.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        return super().eof_received()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith("552"):
            self._ingest_handler.metrics.rejected.labels("smtp", "too_large").inc()
            await super().push(_REWRITES.get(status, status))
            return
        await super().push(status)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command name
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        reservation = self._admission.reserve(declared_size(envelope.mail_options))
        if reservation is None:
            self._ingest_handler.metrics.rejected.labels("smtp", "memory").inc()
            # The transaction is over: the sender may start again with MAIL FROM.
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd: untyped
            await self.push(REPLY_NO_MEMORY)
            return
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            refusal, raw = await self._read_data(reservation)
            if refusal is None:
                envelope.content = envelope.original_content = raw
                del raw  # the envelope holds the one copy until the reply
                status = await self._call_handler_hook("DATA")
            else:
                status = refusal
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd: untyped
            await self.push(status)
        finally:
            self._admission.release(reservation)

    async def _read_data(self, reservation: Reservation) -> tuple[str | None, bytes]:
        """Read the data up to the lone dot into one buffer, removing dot-stuffing; the
        refusal reply (too large, no memory, line too long) or None, and the bytes. Past a
        refusal the rest is read and discarded, so the reply comes after the data
        (RFC 5321 4.2.5)."""
        data = bytearray()
        refusal: str | None = None
        received = 0
        line_start = True
        reader = self._reader
        limit = self.data_size_limit or 0
        while True:
            # eof_received cancels this task, so readuntil never sees an incomplete read.
            try:
                chunk = await reader.readuntil(b"\r\n")
                complete = True
            except asyncio.LimitOverrunError as error:  # a line over the line limit
                chunk = await reader.read(error.consumed)
                complete = False
                if refusal is None:
                    refusal = REPLY_LINE_TOO_LONG
            if line_start and chunk == b".\r\n":
                break
            received += len(chunk)
            if refusal is None:
                if limit and received > limit:
                    refusal = REPLY_TOO_MUCH_DATA
                elif not self._admission.grow(reservation, received):
                    refusal = REPLY_NO_MEMORY
                elif line_start and chunk.startswith(b"."):
                    data += memoryview(chunk)[1:]
                else:
                    data += chunk
                if refusal is not None:
                    data = bytearray()  # discard what was read: the memory goes back now
            line_start = complete
        if refusal == REPLY_NO_MEMORY and limit and received > limit:
            refusal = REPLY_TOO_MUCH_DATA  # too large is final, whatever the memory
        if refusal == REPLY_NO_MEMORY:
            self._ingest_handler.metrics.rejected.labels("smtp", "memory").inc()
        return refusal, bytes(data)


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
            self._protocol,
            host=self.settings.smtp_host,
            port=self.settings.smtp_port,
            backlog=self.settings.smtp_listen_backlog,
        )
        log.info("SMTP listening", host=self.settings.smtp_host, port=self.port)
        limits = self.handler.admission.limits
        # The memory bound, so an operator can check it against the container's limit.
        log.info(
            "SMTP limits",
            max_sessions=limits.max_sessions,
            max_sessions_per_ip=limits.max_sessions_per_client,
            messages_per_ip_per_minute=limits.messages_per_client_per_minute,
            max_recipients=limits.max_recipients,
            max_message_bytes=limits.max_message_bytes,
            memory_budget_bytes=limits.memory_budget_bytes,
            memory_limit_bytes=limits.memory_limit_bytes,
            worst_case_bytes=limits.worst_case_bytes(),
            rss_at_start_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )

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
