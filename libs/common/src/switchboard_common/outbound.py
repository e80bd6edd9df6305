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

Replies still unavailable after the last round fail the batch, which is redelivered:
nothing is lost while a provider is away. The window the records leave: a process that
dies after the provider accepted a reply and before its record says so hands it over
again on redelivery. Where the provider takes an idempotency key (email's Message-ID),
``ChannelSender.planned_id`` gives it, and the record keeps it from the first attempt.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.bulk import find_by_ids, insert_new
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
from switchboard_common.mongo import Document

log = get_logger(__name__)

SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class Accepted:
    """The provider took the reply."""

    provider_message_id: str


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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ReplyRecord:
    reply_id: str
    status: Literal["sending", "sent", "failed"]
    at: datetime
    provider_message_id: str | None = None
    error: DeliveryError | None = None


def recipient_key(channel: Channel, account: str | None, recipient: str) -> str:
    """Who a reply went to, as the reply records keep it: a digest of the channel, the
    account it was sent from and the recipient, so the records hold no customer address
    yet a receipt naming that person on that account finds their replies."""
    return hashlib.sha256(f"{channel.value}\x00{account or ''}\x00{recipient}".encode()).hexdigest()


@dataclass(frozen=True)
class SentReply:
    """A reply the provider took, as a receipt finds it."""

    provider_message_id: str
    reply_id: str
    conversation_id: str
    #: When the attempt that sent it began (no later than the provider's send time).
    handed_at: datetime
    #: The statuses already reported of it (``mark_reported``).
    reported: frozenset[str] = frozenset()


class ReplyRecords:
    """One document per reply (``_id`` = ``reply_id``) in the service's own collection;
    a fixed number of commands per batch."""

    def __init__(self, db: AsyncDatabase[Document], collection: str) -> None:
        self._replies = db[collection]
        # ``<channel>:<provider message id>`` -> the reply: how a provider's later status
        # (delivered, read, failed) finds its reply, by ``_id``; and, by ``to`` and
        # ``handed_at``, how a receipt up to a time (Messenger's watermarks) finds them.
        self._by_provider_id = db[f"{collection}_by_provider_id"]

    async def create_indexes(self) -> None:
        """The index receipts by recipient and time are looked up with (``sent_before``)."""
        await self._by_provider_id.create_index(
            [("to", ASCENDING), ("handed_at", ASCENDING)], name="to_handed_at"
        )

    async def get(self, reply_ids: Sequence[str]) -> dict[str, ReplyRecord]:
        found: dict[str, ReplyRecord] = {}
        for reply_id, document in (await find_by_ids(self._replies, reply_ids)).items():
            error = document.get("error")
            found[reply_id] = ReplyRecord(
                reply_id=reply_id,
                status=document["status"],
                at=document["at"],
                provider_message_id=document.get("provider_message_id"),
                error=DeliveryError(**error) if error else None,
            )
        return found

    async def start(self, records: Sequence[tuple[ReplyRecord, ReplyDelivery]]) -> None:
        """Record ``sending``; a record already there (an attempt that died mid-send)
        stays as it is."""
        documents = [
            {
                "_id": record.reply_id,
                "conversation_id": order.conversation_id,
                "channel": order.channel.value,
                "status": record.status,
                "provider_message_id": record.provider_message_id,
                "at": record.at,
            }
            for record, order in records
        ]
        await insert_new(self._replies, documents)

    async def replies_of(
        self, channel: Channel, provider_message_ids: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """The replies (``reply_id``, ``conversation_id``) these provider ids were sent as."""
        keys = [f"{channel.value}:{i}" for i in provider_message_ids]
        return {
            str(key).split(":", 1)[1]: (document["reply_id"], document["conversation_id"])
            for key, document in (await find_by_ids(self._by_provider_id, keys)).items()
        }

    async def sent_before(
        self, watermarks: Mapping[str, datetime], *, unless: str
    ) -> dict[str, list[SentReply]]:
        """For each ``recipient_key`` its replies handed to the provider at or before its
        watermark, except those already reported ``unless`` (one query for them all).

        ``handed_at`` is when the attempt that sent a reply began: never after the
        provider's own send time, so a watermark equal to that time finds the reply."""
        if not watermarks:
            return {}
        cursor = self._by_provider_id.find(
            {
                "to": {"$in": sorted(watermarks)},
                "handed_at": {"$lte": max(watermarks.values())},
                "reported": {"$ne": unless},
            },
            sort=[("handed_at", ASCENDING)],  # reported in the order they were sent
        )
        found: dict[str, list[SentReply]] = {}
        async for document in cursor:
            to = document["to"]
            if document["handed_at"] > watermarks[to]:
                continue
            found.setdefault(to, []).append(
                SentReply(
                    provider_message_id=str(document["_id"]).split(":", 1)[1],
                    reply_id=document["reply_id"],
                    conversation_id=document["conversation_id"],
                    handed_at=document["handed_at"],
                    reported=frozenset(document.get("reported", ())),
                )
            )
        return found

    async def mark_reported(
        self, channel: Channel, status: str, provider_message_ids: Sequence[str]
    ) -> None:
        """Note that ``status`` was reported for these replies, so that later receipts
        up to a watermark do not report it again (one write)."""
        if provider_message_ids:
            keys = [f"{channel.value}:{i}" for i in provider_message_ids]
            await self._by_provider_id.update_many(
                {"_id": {"$in": keys}}, {"$addToSet": {"reported": status}}
            )

    async def finish(
        self,
        finished: Sequence[tuple[ReplyRecord, ReplyDelivery]],
        handed_at: datetime | None = None,
    ) -> None:
        """Record the outcomes (one bulk write) and where each sent one can be found
        by its provider id, or by its recipient and ``handed_at`` (when the attempt that
        sent it began; its record's time when not given) (one insert)."""
        index = [
            {
                "_id": f"{order.channel.value}:{record.provider_message_id}",
                "reply_id": record.reply_id,
                "conversation_id": order.conversation_id,
                "to": recipient_key(order.channel, order.account, order.recipient),
                "handed_at": handed_at or record.at,
            }
            for record, order in finished
            if record.status == "sent" and record.provider_message_id
        ]
        await insert_new(self._by_provider_id, index)
        updates = []
        for record, _ in finished:
            fields: dict[str, Any] = {
                "status": record.status,
                "at": record.at,
                "provider_message_id": record.provider_message_id,
            }
            if record.error is not None:
                fields["error"] = record.error.model_dump()
            updates.append(UpdateOne({"_id": record.reply_id}, {"$set": fields}))
        if updates:
            await self._replies.bulk_write(updates, ordered=False)


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
        for reply_id, (delivery, order) in orders.items():
            record = known.get(reply_id)
            if record is not None and record.status != "sending":
                finished.append((delivery, order, record))
            else:
                pending.append((delivery, order))
        handed, left = await self._hand_over(pending, known)
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
        handed: list[Finished] = []
        left = pending
        reasons: list[str] = []
        for attempt in range(self._attempts):
            handed_at = self._clock()
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
            await self._records.finish(done, handed_at)
            if not retry:
                return handed, []
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

    def _record(self, order: ReplyDelivery, outcome: Accepted | Refused) -> ReplyRecord:
        now = self._clock()
        if isinstance(outcome, Accepted):
            return ReplyRecord(order.reply_id, "sent", now, outcome.provider_message_id)
        error = DeliveryError(code=outcome.code, text=outcome.text)
        return ReplyRecord(order.reply_id, "failed", now, self._sender.planned_id(order), error)


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
