"""The reply records of ``switchboard_common.outbound``: one document per ``reply_id`` in
the sending service's own collection (where each reply stands: ``sending``, ``waiting``,
``sent``, ``failed``), and a lookup of sent replies by provider message id and by
recipient, for the provider's later receipts. A fixed number of commands per batch."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.bulk import find_by_ids, insert_new
from switchboard_common.contract import Channel, DeliveryError, ReplyDelivery
from switchboard_common.mongo import Document


@dataclass(frozen=True)
class ReplyRecord:
    reply_id: str
    #: ``sending`` from just before a hand-over until its answer; ``waiting`` when the
    #: provider answered "later" (so a redelivery may safely send it again).
    status: Literal["sending", "waiting", "sent", "failed"]
    at: datetime
    provider_message_id: str | None = None
    error: DeliveryError | None = None
    #: When the request that sent it left, when the sender knows (``Accepted``).
    handed_at: datetime | None = None


#: Channels whose receipts say "every message up to this time" (Messenger's and
#: Instagram's watermarks): only their replies keep who they went to (a digest).
WATERMARKED = frozenset({Channel.MESSENGER, Channel.INSTAGRAM})


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
    ) -> dict[str, SentReply]:
        """The replies these provider ids were sent as."""
        keys = [f"{channel.value}:{i}" for i in provider_message_ids]
        return {
            str(key).split(":", 1)[1]: SentReply(
                provider_message_id=str(key).split(":", 1)[1],
                reply_id=document["reply_id"],
                conversation_id=document["conversation_id"],
                handed_at=document["handed_at"],
                reported=frozenset(document.get("reported", ())),
            )
            for key, document in (await find_by_ids(self._by_provider_id, keys)).items()
        }

    async def sent_before(
        self, watermarks: Mapping[str, datetime], *, unless: str
    ) -> dict[str, list[SentReply]]:
        """For each ``recipient_key`` its replies handed to the provider at or before its
        watermark, except those already reported ``unless`` (one query for them all).

        ``handed_at`` is when a reply's request left: never after the provider's own
        send time, so a watermark equal to that time finds the reply."""
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

    async def mark(self, reply_ids: Sequence[str], status: Literal["sending", "waiting"]) -> None:
        """Set where unfinished replies stand (one command)."""
        if reply_ids:
            await self._replies.update_many(
                {"_id": {"$in": list(reply_ids)}}, {"$set": {"status": status}}
            )

    async def finish(self, finished: Sequence[tuple[ReplyRecord, ReplyDelivery]]) -> None:
        """Record the outcomes (one bulk write) and where each sent one can be found
        by its provider id, or by its recipient and ``handed_at`` (when its request left;
        its record's time when the sender did not say) (one insert)."""
        index = [
            {
                "_id": f"{order.channel.value}:{record.provider_message_id}",
                "reply_id": record.reply_id,
                "conversation_id": order.conversation_id,
                "handed_at": record.handed_at or record.at,
            }
            | (
                {"to": recipient_key(order.channel, order.account, order.recipient)}
                if order.channel in WATERMARKED
                else {}
            )
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
