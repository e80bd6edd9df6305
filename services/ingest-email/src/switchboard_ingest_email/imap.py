"""The IMAP poller: unseen messages of configured mailboxes, published like SMTP mail.

One ``ImapPoller`` per mailbox runs as a background task of the service. A round:
``UID SEARCH UNSEEN``, then for each message ``UID FETCH (BODY.PEEK[])`` (peeking leaves
it unseen), ``Ingestor.ingest`` (raw store + Kafka ack), and only then ``\\Seen`` or a
move to ``move_to``. Between rounds it waits in IDLE when the server offers it, else
sleeps ``poll_interval_seconds``.

Restart-safe: a crash between publish and mark leaves the message unseen, so it is
fetched and published again; its deterministic ``message_id`` makes that harmless.
Any failure (server, store or Kafka unavailable) ends the session and a new one starts
after a backoff, so nothing is marked that was not published. TLS is implicit (IMAPS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import aioimaplib

from switchboard_common.logging import get_logger
from switchboard_ingest_email.ingest import Ingestor
from switchboard_ingest_email.metrics import IngestEmailMetrics
from switchboard_ingest_email.normalise import Delivery
from switchboard_ingest_email.recipients import RecipientPolicy
from switchboard_ingest_email.settings import MailboxConfig

log = get_logger(__name__)

MAX_BACKOFF = 60.0


class ImapError(RuntimeError):
    """The IMAP server refused a command; the message says which."""


def _check(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        raise ImapError(f"{what} failed: {response.result}")
    return response


def parse_search(response: aioimaplib.Response) -> list[str]:
    """UIDs from a ``UID SEARCH`` response, ascending."""
    uids: list[int] = []
    for line in response.lines[:-1]:
        text = bytes(line).decode("ascii", errors="ignore")
        text = text.removeprefix("SEARCH")
        uids.extend(int(token) for token in text.split() if token.isdigit())
    return [str(uid) for uid in sorted(set(uids))]


def parse_fetch(response: aioimaplib.Response) -> bytes | None:
    """The message literal of a ``UID FETCH (BODY.PEEK[])`` response, or None."""
    for line in response.lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


class ImapPoller:
    """Polls one mailbox forever (a background task); see the module docstring."""

    def __init__(
        self,
        box: MailboxConfig,
        ingestor: Ingestor,
        policy: RecipientPolicy,
        metrics: IngestEmailMetrics,
    ) -> None:
        self.box = box
        self.ingestor = ingestor
        self.metrics = metrics
        account = box.support_address
        self.delivery = Delivery(
            account=account,
            tenant=box.tenant or policy.tenant_for(account),
            mail_from=None,
            transport="imap",
        )
        self.rounds = 0
        self.published = 0

    async def run(self) -> None:
        """Serve forever: sessions with reconnect and exponential backoff."""
        backoff = 1.0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - log, back off, reconnect: never die
                self.metrics.imap_polls.labels(self.box.name, "error").inc()
                log.warning(
                    "IMAP session ended, reconnecting",
                    mailbox=self.box.name,
                    error_type=type(error).__name__,
                    error=str(error)[:200],
                    retry_in=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            else:
                backoff = 1.0

    def _ssl_context(self) -> ssl.SSLContext:
        cafile = str(self.box.ca_file) if self.box.ca_file else None
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)

    async def _session(self) -> None:
        box = self.box
        client = aioimaplib.IMAP4_SSL(
            host=box.host, port=box.port, ssl_context=self._ssl_context(), timeout=30
        )
        try:
            await client.wait_hello_from_server()
            password = box.password.get_secret_value() if box.password else ""
            _check(await client.login(box.username, password), "LOGIN")
            if box.move_to is not None:
                # Make sure the target exists; "already exists" is the usual answer.
                await client.create(box.move_to)
            _check(await client.select(box.mailbox), "SELECT")
            capabilities = client.protocol.capabilities
            use_idle = box.idle and "IDLE" in capabilities
            can_move = "MOVE" in capabilities
            log.info("IMAP session started", mailbox=box.name, idle=use_idle)
            while True:
                fetched = await self.poll_once(client, can_move=can_move)
                if fetched >= box.batch_size:
                    continue  # more may be waiting
                if use_idle:
                    await self._idle(client)
                else:
                    await asyncio.sleep(box.poll_interval_seconds)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 5)

    async def poll_once(self, client: aioimaplib.IMAP4, *, can_move: bool) -> int:
        """One round: publish unseen messages, then mark them. Returns how many."""
        uids = parse_search(_check(await client.uid_search("UNSEEN"), "UID SEARCH"))
        count = 0
        for uid in uids[: self.box.batch_size]:
            response = _check(await client.uid("fetch", uid, "(BODY.PEEK[])"), "UID FETCH")
            raw = parse_fetch(response)
            if raw is None:
                continue  # expunged meanwhile
            await self.ingestor.ingest(raw, self.delivery)  # raises: nothing gets marked
            await self._mark(client, uid, can_move=can_move)
            count += 1
            self.published += 1
        self.rounds += 1
        self.metrics.imap_polls.labels(self.box.name, "ok").inc()
        return count

    async def _mark(self, client: aioimaplib.IMAP4, uid: str, *, can_move: bool) -> None:
        _check(await client.uid("store", uid, r"+FLAGS.SILENT (\Seen)"), "UID STORE")
        target = self.box.move_to
        if target is None:
            return
        if can_move:
            _check(await client.uid("move", uid, target), "UID MOVE")
        else:
            _check(await client.uid("copy", uid, target), "UID COPY")
            _check(await client.uid("store", uid, r"+FLAGS.SILENT (\Deleted)"), "UID STORE")
            _check(await client.expunge(), "EXPUNGE")

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        """Wait in IDLE until the server reports a change or the poll interval passes."""
        wait = self.box.poll_interval_seconds
        idle = await client.idle_start(timeout=wait + 5)
        try:
            with contextlib.suppress(TimeoutError):
                await client.wait_server_push(timeout=wait)
        finally:
            client.idle_done()
            await asyncio.wait_for(idle, 10)
