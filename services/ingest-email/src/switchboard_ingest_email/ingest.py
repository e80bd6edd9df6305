"""Accepting one message durably: raw store write, then the Kafka acknowledgement.

``Ingestor.ingest`` is what SMTP and IMAP call before they acknowledge a message (SMTP
250, IMAP \\Seen). It returns only when the exact bytes are in the raw store and the
event is acknowledged by Kafka (``acks=all``); otherwise it raises ``IngestUnavailableError``
and the caller answers 451 (or leaves the message unseen), so the sender retries.

Why the retry after a 451 is published exactly once: publishing goes through the shared
``DurablePublisher`` (``switchboard_common.publishing``), which refuses with nothing
enqueued when Kafka is unreachable and remembers records by ``message_id`` while pending
and after delivery, so the sender's retry waits on the pending record or is answered 250
without a second copy. (Across replicas or restarts a retry may publish again; it
carries the same ``message_id`` and ``ce_id``, which consumers deduplicate.)
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal, Protocol

from switchboard_common.contract import INBOUND
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_ingest_email.authentication import Evidence, SenderChecker
from switchboard_ingest_email.metrics import IngestEmailMetrics
from switchboard_ingest_email.normalise import Delivery, InboundEmail, to_inbound
from switchboard_ingest_email.raw_store import RawStore, sha256_hex
from switchboard_ingest_email.replies import is_own_reply

log = get_logger(__name__)

#: Messages at least this big are hashed and parsed in a worker thread, so one large
#: message does not stall every other SMTP session on the event loop.
THREAD_THRESHOLD = 256 * 1024

Cause = Literal["store", "kafka", "overloaded"]


class Publisher(Protocol):
    """What ``Ingestor`` needs of ``switchboard_common.publishing.DurablePublisher``:
    return once Kafka acknowledged every item, raise otherwise."""

    async def publish(self, items: Sequence[Outgoing]) -> None: ...


class IngestUnavailableError(RuntimeError):
    """The message could not be made durable now; the sender should retry later."""

    def __init__(self, cause: Cause, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause: Cause = cause


class Ingestor:
    """Stores, publishes and reports one message at a time per caller; bounded in flight."""

    def __init__(
        self,
        *,
        store: RawStore,
        publisher: Publisher,
        metrics: IngestEmailMetrics,
        clock: Callable[[], datetime],
        timeout: float,
        max_in_flight: int,
        checker: SenderChecker | None = None,
        own_domains: frozenset[str] = frozenset(),
    ) -> None:
        #: Support domains whose own replies coming back are not ingested (no loops).
        self._own_domains = own_domains
        self._store = store
        self._checker = checker
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def ingest(self, raw: bytes, delivery: Delivery) -> InboundEmail | None:
        """Make ``raw`` durable (stored and published); raise ``IngestUnavailableError`` if not.

        Idempotent: ingesting the same bytes again stores nothing new and publishes the
        same event (same ``message_id`` and ``ce_id``) again. Switchboard's own reply
        coming back is taken (the caller answers 250, so nobody retries it) but neither
        stored nor published, and None is returned: it must not open a conversation.
        """
        if self._own_domains and is_own_reply(raw, self._own_domains):
            self._metrics.own_replies.labels(delivery.transport).inc()
            log.info("own reply came back; not ingested", transport=delivery.transport)
            return None
        try:
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise IngestUnavailableError("overloaded", "no free slot in time") from None
        self.in_flight += 1
        self._idle.clear()
        self._metrics.in_flight.inc()
        started = time.perf_counter()
        try:
            inbound = await self._ingest(raw, delivery)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            self._metrics.in_flight.dec()
            self._slots.release()
        transport = delivery.transport
        self._metrics.accept_seconds.labels(transport).observe(time.perf_counter() - started)
        self._metrics.received.labels(transport, delivery.tenant or "").inc()
        self._metrics.received_bytes.labels(transport).observe(len(raw))
        if inbound.event.parse_errors:
            self._metrics.parse_errors.labels(transport).inc()
        log.info(
            "message accepted",
            message_id=inbound.event.message_id,
            transport=transport,
            size=len(raw),
            parse_errors=len(inbound.event.parse_errors),
            auto_submitted=inbound.event.auto_submitted,
            sender_authenticated=inbound.event.sender_authenticated,
            tenant=delivery.tenant,
        )
        return inbound

    async def _ingest(self, raw: bytes, delivery: Delivery) -> InboundEmail:
        received_at = self._clock()
        big = len(raw) >= THREAD_THRESHOLD
        digest = await asyncio.to_thread(sha256_hex, raw) if big else sha256_hex(raw)
        stored = asyncio.create_task(self._put(raw, digest))
        try:
            evidence = await self._evidence(raw)
            build = functools.partial(
                to_inbound, received_at=received_at, raw_sha256=digest, evidence=evidence
            )
            if big:
                inbound = await asyncio.to_thread(build, raw, delivery)
            else:
                inbound = build(raw, delivery)
        finally:
            await stored  # raises IngestUnavailableError when the store failed
        await self._publish(inbound)
        return inbound

    async def _evidence(self, raw: bytes) -> Evidence | None:
        """The sender check's evidence. A check that does not finish in time (DNS) counts
        as a temporary error: the message is still accepted, only not authenticated."""
        checker = self._checker
        if checker is None:
            return None
        if not checker.may_block(raw):
            return checker.evidence(raw)
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.to_thread(checker.evidence, raw)
        except TimeoutError:
            if checker.mode == "dkim":
                return Evidence("dkim", (("temperror", None),))
            return Evidence("authentication-results")  # nothing vouched in time

    async def _put(self, raw: bytes, digest: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._store.put(raw, sha256=digest)
        except TimeoutError:
            raise IngestUnavailableError("store", "raw store did not answer in time") from None
        except Exception as error:
            raise IngestUnavailableError("store", type(error).__name__) from error

    async def _publish(self, inbound: InboundEmail) -> None:
        message_id = inbound.event.message_id
        item = Outgoing(INBOUND, inbound.key, inbound.event, event_id=message_id)
        try:
            await self._publisher.publish([item])
        except Exception as error:
            raise IngestUnavailableError("kafka", f"{type(error).__name__}: {error}") from error

    async def drain(self, timeout: float) -> bool:
        """Wait until no message is in flight (graceful stop); False if time ran out."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
