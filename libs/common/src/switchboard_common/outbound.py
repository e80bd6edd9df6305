"""Replies to customers, whatever the channel: each ``reply_id`` handed to its provider
once, retried while the provider is away, and its outcome published.

A service that speaks a channel (ingest-email for email, ingest-social for the social
channels) gives a ``ChannelSender``: how to hand a batch of ``ReplyDelivery`` orders to the
provider and what each answer means — ``Accepted`` (with the provider's message id),
``Refused`` for good (a 5xx, a blocked user) or ``Unavailable`` for now (a 4xx, a 429
with ``Retry-After``, no connection). ``ReplyDispatcher`` is the batch handler around it:

1. one read of the batch's reply records; a finished reply is not handed over again,
   its statuses are published again with the same event ids;
2. one insert of ``sending`` records for the rest, before the provider sees them;
3. up to ``attempts`` rounds at the provider for what is unavailable, with exponential
   backoff and full jitter (at least the provider's ``Retry-After``, at most
   ``max_wait``);
4. one bulk write of the outcomes, then ``support.delivery.updated`` (``sent`` or
   ``failed`` with the provider's code and text) and, when sent,
   ``support.reply.sent``; a refusal is also dead-lettered, once.

Each sent reply can later be found by its provider message id (``replies_of``), or by
its recipient and the time its attempt began (``sent_before``: receipts that say "every
message up to this time", such as Messenger's watermarks).

Replies still unavailable after the last round are recorded ``waiting`` and fail the
batch, which the batch consumer retries and then hands back uncommitted (redelivered):
nothing is lost while a provider is away, and they are sent on redelivery.

At most once per ``reply_id``, across crashes: a record still ``sending`` on redelivery
is a hand-over that died before its answer, so the provider may have the reply. Where the
provider takes an idempotency key (email's Message-ID, which mail stores deduplicate by),
``ChannelSender.planned_id`` gives it, the record keeps it from the first attempt, and
the reply is handed over again under the same key. Where it takes none (the social send
APIs), the reply is not handed over again: it ends ``failed`` with ``delivery_uncertain``
and a dead letter, so the agent can decide, rather than risk a second copy.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from switchboard_common.consumer import Delivery, DependencyUnavailableError
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
from switchboard_common.outbound_records import ReplyRecord, ReplyRecords

log = get_logger(__name__)

SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class Accepted:
    """The provider took the reply."""

    provider_message_id: str
    #: When its request left (the provider's own send time is no earlier); a receipt
    #: "read up to" a time finds the reply by it.
    requested_at: datetime | None = None


@dataclass(frozen=True)
class Refused:
    """The provider refused the reply for good; ``code`` is the provider's, prefixed with
    the channel's protocol (``smtp_550``, ``whatsapp_131047``, ``telegram_403``)."""

    code: str
    text: str


@dataclass(frozen=True)
class Unavailable:
    """The provider did not take the reply now; ``retry_after`` when it said how long."""

    reason: str
    retry_after: float | None = None


Outcome = Accepted | Refused | Unavailable


class ChannelSender(Protocol):
    """Hands replies to the providers of some channels."""

    #: The channels whose orders this sender takes (the others are skipped).
    channels: frozenset[Channel]

    def planned_id(self, order: ReplyDelivery) -> str | None:
        """The provider message id the reply will have, when it is known before sending."""
        ...

    async def send_all(self, orders: Sequence[ReplyDelivery]) -> list[Outcome]:
        """One outcome per order, in order. Must not raise for one order's trouble."""
        ...


class DeliveryUnavailableError(DependencyUnavailableError):
    """Replies a provider did not take after every attempt: the batch consumer retries
    the batch, then hands it back uncommitted (redelivered), never dead-letters it."""


class Publisher(Protocol):
    """Publishes and returns once Kafka acknowledged every record (``EventPublisher``)."""

    async def publish_all(self, items: Sequence[Outgoing]) -> object: ...


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ReplyMetrics:
    """Replies to customers, by channel (bounded labels: channel and outcome)."""

    replies: Counter
    send_seconds: Histogram
    #: Those on the topic not yet consumed are the replies group's consumer lag.
    queued: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReplyMetrics:
        return cls(
            replies=Counter(
                "switchboard_outbound_replies",
                "Replies to customers by channel and outcome (sent, failed, retried).",
                ["channel", "outcome"],
                registry=registry,
            ),
            send_seconds=Histogram(
                "switchboard_outbound_send_seconds",
                "Time to hand a batch of replies to the provider, by channel.",
                ["channel"],
                buckets=SEND_BUCKETS,
                registry=registry,
            ),
            queued=Gauge(
                "switchboard_outbound_queued",
                "Replies taken from the topic and not yet handed to the provider (waiting "
                "to be retried included), by channel.",
                ["channel"],
                registry=registry,
            ),
        )


# --------------------------------------------------------------------------- the handler

Finished = tuple[Delivery, ReplyDelivery, ReplyRecord]
#: Replies in hand, by channel.
Tally = collections.Counter[str]


class ReplyDispatcher:
    """The batch handler of a sender's group on ``switchboard.router.reply-deliveries.v1``."""

    def __init__(
        self,
        sender: ChannelSender,
        records: ReplyRecords,
        publisher: Publisher,
        metrics: ReplyMetrics,
        clock: Callable[[], datetime],
        *,
        backoff: float = 1.0,
        attempts: int = 3,
        max_wait: float = 30.0,
    ) -> None:
        self._sender = sender
        self._records = records
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._backoff = backoff
        self._attempts = attempts
        self._max_wait = max_wait

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        orders: dict[str, tuple[Delivery, ReplyDelivery]] = {}
        for delivery in deliveries:
            order = delivery.event
            if isinstance(order, ReplyDelivery) and order.channel in self._sender.channels:
                orders.setdefault(order.reply_id, (delivery, order))  # twice in a batch: once
        if not orders:
            return []
        known = await self._records.get(list(orders))
        finished: list[Finished] = []
        pending: list[tuple[Delivery, ReplyDelivery]] = []
        uncertain: list[Finished] = []
        for reply_id, (delivery, order) in orders.items():
            record = known.get(reply_id)
            if record is not None and record.status in ("sent", "failed"):
                finished.append((delivery, order, record))
            elif (
                record is not None and record.status == "sending" and not record.provider_message_id
            ):
                # A hand-over that died before its answer, without an idempotency key
                # the provider honours: sending again could send it twice.
                uncertain.append((delivery, order, self._uncertain(order)))
            else:
                pending.append((delivery, order))
        if uncertain:
            await self._records.finish([(r, order) for _, order, r in uncertain])
            for _, order, _ in uncertain:
                self._metrics.replies.labels(order.channel.value, "failed").inc()
        handed, left = await self._hand_over(pending, known)
        handed += uncertain
        finished += handed
        await self._publisher.publish_all(
            [item for d, order, r in finished for item in statuses(d, order, r)]
        )
        if left:
            raise DeliveryUnavailableError(
                f"{len(left)} replies not taken after {self._attempts} attempts: {left[0]}"
            )
        # A refusal is dead-lettered once, when it happens; its status is published above.
        return [
            (d, f"reply refused: {r.error.code} {r.error.text}")
            for d, _, r in handed
            if r.error is not None
        ]

    async def _hand_over(
        self, pending: list[tuple[Delivery, ReplyDelivery]], known: dict[str, ReplyRecord]
    ) -> tuple[list[Finished], list[str]]:
        """Hand ``pending`` to the provider; what finished, and why the rest did not."""
        if not pending:
            return [], []
        queued = Tally(order.channel.value for _, order in pending)
        self._queue(queued, +1)
        try:
            return await self._attempt(pending, known, queued)
        finally:
            self._queue(queued, -1)  # what is left goes back to the topic (redelivered)

    def _queue(self, tally: Tally, sign: int) -> None:
        for channel, count in tally.items():
            self._metrics.queued.labels(channel).inc(sign * count)

    async def _attempt(
        self,
        pending: list[tuple[Delivery, ReplyDelivery]],
        known: dict[str, ReplyRecord],
        queued: Tally,
    ) -> tuple[list[Finished], list[str]]:
        now = self._clock()
        await self._records.start(
            [
                (ReplyRecord(order.reply_id, "sending", now, self._planned(order, known)), order)
                for _, order in pending
            ]
        )
        # Redelivered after "later": handed over again from here, so "sending" again.
        again = [o.reply_id for _, o in pending if _status(known, o.reply_id) == "waiting"]
        await self._records.mark(again, "sending")
        handed: list[Finished] = []
        left = pending
        reasons: list[str] = []
        for attempt in range(self._attempts):
            if attempt:
                await self._records.mark([o.reply_id for _, o in left], "sending")
            outcomes = await self._send([order for _, order in left])
            retry: list[tuple[Delivery, ReplyDelivery]] = []
            waits: list[float] = []
            done: list[tuple[ReplyRecord, ReplyDelivery]] = []
            for (delivery, order), outcome in zip(left, outcomes, strict=True):
                if isinstance(outcome, Unavailable):
                    retry.append((delivery, order))
                    waits.append(outcome.retry_after or 0.0)
                    reasons.append(outcome.reason)
                    continue
                record = self._record(order, outcome)
                done.append((record, order))
                handed.append((delivery, order, record))
                self._metrics.replies.labels(order.channel.value, record.status).inc()
                self._metrics.queued.labels(order.channel.value).dec()
                queued[order.channel.value] -= 1
            await self._records.finish(done)
            if not retry:
                return handed, []
            # The provider said "later": not handed over, so a redelivery may send them.
            await self._records.mark([o.reply_id for _, o in retry], "waiting")
            left = retry
            for _, order in retry:
                self._metrics.replies.labels(order.channel.value, "retried").inc()
            log.warning("replies not taken, will retry", reason=reasons[-1], replies=len(retry))
            if attempt + 1 < self._attempts:
                # Full jitter so replicas do not retry in step; never sooner than asked.
                jitter = random.uniform(0, self._backoff * 4**attempt)  # noqa: S311
                await asyncio.sleep(min(self._max_wait, max(jitter, *waits)))
        return handed, reasons[-len(left) :]

    async def _send(self, orders: list[ReplyDelivery]) -> list[Outcome]:
        """One call of the sender per channel in the batch, timed per channel."""
        outcomes: dict[int, Outcome] = {}
        for channel in dict.fromkeys(o.channel for o in orders):
            indexes = [i for i, o in enumerate(orders) if o.channel is channel]
            started = time.monotonic()
            answered = await self._sender.send_all([orders[i] for i in indexes])
            self._metrics.send_seconds.labels(channel.value).observe(time.monotonic() - started)
            outcomes.update(zip(indexes, answered, strict=True))
        return [outcomes[i] for i in range(len(orders))]

    def _planned(self, order: ReplyDelivery, known: dict[str, ReplyRecord]) -> str | None:
        earlier = known.get(order.reply_id)
        if earlier is not None and earlier.provider_message_id:
            return earlier.provider_message_id
        return self._sender.planned_id(order)

    def _uncertain(self, order: ReplyDelivery) -> ReplyRecord:
        error = DeliveryError(
            code="delivery_uncertain",
            text="the sender stopped while handing this reply to the provider, which may "
            "have delivered it; it is not sent again (request it again with a new reply_id "
            "if the customer did not get it)",
        )
        return ReplyRecord(order.reply_id, "failed", self._clock(), None, error)

    def _record(self, order: ReplyDelivery, outcome: Accepted | Refused) -> ReplyRecord:
        now = self._clock()
        if isinstance(outcome, Accepted):
            return ReplyRecord(
                order.reply_id,
                "sent",
                now,
                outcome.provider_message_id,
                handed_at=outcome.requested_at,
            )
        error = DeliveryError(code=outcome.code, text=outcome.text)
        return ReplyRecord(order.reply_id, "failed", now, self._sender.planned_id(order), error)


def _status(known: dict[str, ReplyRecord], reply_id: str) -> str | None:
    record = known.get(reply_id)
    return record.status if record is not None else None


def statuses(delivery: Delivery, order: ReplyDelivery, record: ReplyRecord) -> list[Outgoing]:
    """What a finished reply publishes; ids from the order's, so a redelivered order
    publishes the same events again (consumers drop the copy by ``ce_id``)."""
    base = delivery.attributes.id
    sent = record.status == "sent"
    updated = DeliveryUpdated(
        reply_id=order.reply_id,
        conversation_id=order.conversation_id,
        channel=order.channel,
        status=DeliveryStatus.SENT if sent else DeliveryStatus.FAILED,
        provider_message_id=record.provider_message_id if sent else None,
        error=record.error,
        at=record.at,
    )
    items = [Outgoing(OUTBOUND, order.conversation_id, updated, event_id=f"{base}:status")]
    if sent and not order.automatic:  # an acknowledgement is no response
        reply = ReplySent(
            conversation_id=order.conversation_id, agent_id=order.agent_id, sent_at=record.at
        )
        items.append(
            Outgoing(CONVERSATION_EVENTS, order.conversation_id, reply, event_id=f"{base}:sent")
        )
    return items
