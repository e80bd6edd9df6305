"""The mailboxes: every message of a visitor's chat, theirs and the replies, in order.

A mailbox is a site and a recipient (the visitor id, or the email the site vouched for:
a signed-in customer reads the same mailbox from every device). Each entry has the next
``seq`` of its mailbox, reserved by inserting a slot document before the entry is
written; the entry's ``_id`` is the message's (a visitor's ``message_id``,
``reply:<reply_id>``) so writing it again is a no-op that answers the first entry. A few
commands per call, whatever the number of entries (one more per mailbox written to, and
per round lost to a concurrent writer).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from switchboard_common.bulk import find_by_ids, insert_each, insert_new
from switchboard_common.mongo import Document

From = Literal["visitor", "agent", "switchboard"]
#: Mailboxes per ``$or`` query of ``newer`` (one query per chunk).
CHUNK = 500
#: Attempts at reserving seqs before giving up (each one insert; writers to one
#: mailbox at the same moment are a visitor's tabs and a reply or two).
SLOT_ROUNDS = 20


class SlotsBusyError(PyMongoError):
    """No seq could be reserved (too many writers at once): try again later."""


def mailbox_key(site: str, recipient: str) -> str:
    """One string per mailbox (site ids have no ``/``)."""
    return f"{site}/{recipient}"


def reply_entry_id(reply_id: str) -> str:
    return f"reply:{reply_id}"


@dataclass(frozen=True)
class Fallback:
    """What an email copy of a reply needs beyond the entry (``fallback``)."""

    customer_id: str
    agent_id: str
    requested_at: datetime
    #: When the copy goes unless a widget showed the reply first.
    due: datetime


@dataclass(frozen=True)
class NewEntry:
    """An entry to write; the mailbox gives it its seq."""

    entry_id: str
    mailbox: str
    sender: From
    text: str
    at: datetime
    client_id: str | None = None
    reply_id: str | None = None
    conversation_id: str | None = None
    fallback: Fallback | None = None


@dataclass(frozen=True)
class Entry:
    entry_id: str
    mailbox: str
    seq: int
    sender: From
    text: str
    at: datetime
    client_id: str | None = None
    reply_id: str | None = None
    conversation_id: str | None = None


def _entry(document: Document) -> Entry:
    return Entry(
        entry_id=document["_id"],
        mailbox=document["mailbox"],
        seq=document["seq"],
        sender=document["from"],
        text=document["text"],
        at=document["at"],
        client_id=document.get("client_id"),
        reply_id=document.get("reply_id"),
        conversation_id=document.get("conversation_id"),
    )


class Mailboxes:
    """Entries in ``<collection>``, seq slots in ``<collection>_seq``, claims in
    ``<collection>_claims``."""

    def __init__(self, db: AsyncDatabase[Document], collection: str) -> None:
        self._entries = db[collection]
        self._slots = db[f"{collection}_seq"]
        # Who reports a reply delivered, who sends its email copy: one document each.
        self._claims = db[f"{collection}_claims"]

    async def create_indexes(self) -> None:
        await self._entries.create_index(
            [("mailbox", ASCENDING), ("seq", ASCENDING)], name="mailbox_seq"
        )
        await self._slots.create_index(
            [("mailbox", ASCENDING), ("seq", ASCENDING)], name="mailbox_seq"
        )
        # Only replies waiting for an email copy have the field (it is unset once shown
        # or sent), so the fallback's scan reads those alone.
        await self._entries.create_index(
            [("fallback_due", ASCENDING)], name="fallback_due", sparse=True
        )

    async def get(self, entry_id: str) -> Entry | None:
        document = await self._entries.find_one({"_id": entry_id})
        return _entry(document) if document is not None else None

    async def append(self, new: Sequence[NewEntry]) -> list[Entry]:
        """Write the entries not written yet; every entry as stored, in the given order.

        Idempotent by ``entry_id``: a second writer of the same entry (a redelivered
        reply, a resend on another replica) gets the first one back; the seq it took is
        then never used (``cursors`` gives such gaps up)."""
        found = {
            k: _entry(d)
            for k, d in (await find_by_ids(self._entries, [n.entry_id for n in new])).items()
        }
        fresh = list({n.entry_id: n for n in new if n.entry_id not in found}.values())
        by_mailbox: dict[str, list[NewEntry]] = {}
        for entry in fresh:
            by_mailbox.setdefault(entry.mailbox, []).append(entry)
        documents: list[Document] = []
        for mailbox, entries in by_mailbox.items():
            seqs = await self._take_seqs(mailbox, len(entries))
            documents += [_document(e, seq) for e, seq in zip(entries, seqs, strict=True)]
        taken = await insert_new(self._entries, documents)
        stored = {d["_id"]: _entry(d) for d in documents if d["_id"] not in taken}
        if taken:  # written meanwhile by another writer: theirs stands
            stored |= {k: _entry(d) for k, d in (await find_by_ids(self._entries, taken)).items()}
        stored |= found
        return [stored[n.entry_id] for n in new]

    async def _take_seqs(self, mailbox: str, count: int) -> list[int]:
        """Reserve ``count`` seqs of ``mailbox``, each by inserting its slot
        (``<mailbox>#<seq>``): an insert of a unique ``_id`` is exclusive on MongoDB and
        FerretDB alike, where an ``$inc`` of a counter is not (concurrent increments
        were seen to hand out one value twice). Each round starts after the highest
        slot; writers that lost a round spread out over the next few seqs (a seq left
        unused is a gap, which readers pass over)."""
        seqs: list[int] = []
        for attempt in range(SLOT_ROUNDS):
            last = await self._slots.find_one(
                {"mailbox": mailbox}, {"seq": 1}, sort=[("seq", DESCENDING)]
            )
            spread = random.randrange(min(2**attempt, 64))  # noqa: S311 - not a secret
            first = (int(last["seq"]) if last is not None else 0) + 1 + spread
            tries = list(range(first, first + count - len(seqs)))
            taken = await insert_each(
                self._slots,
                [{"_id": f"{mailbox}#{n}", "mailbox": mailbox, "seq": n} for n in tries],
            )
            seqs += [n for i, n in enumerate(tries) if i not in taken]
            if len(seqs) == count:
                return sorted(seqs)
        raise SlotsBusyError(f"no free seq after {SLOT_ROUNDS} rounds")

    async def after(self, mailbox: str, seq: int, limit: int = 500) -> list[Entry]:
        """The mailbox's entries after ``seq``, oldest first, at most ``limit``."""
        cursor = self._entries.find({"mailbox": mailbox, "seq": {"$gt": seq}})
        return [_entry(d) async for d in cursor.sort("seq", ASCENDING).limit(limit)]

    async def newer(self, watermarks: Mapping[str, int]) -> list[Entry]:
        """The entries after each mailbox's watermark, every mailbox in one query (per
        ``CHUNK`` mailboxes)."""
        items = list(watermarks.items())
        found: list[Entry] = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            clauses: list[dict[str, Any]] = [{"mailbox": m, "seq": {"$gt": w}} for m, w in chunk]
            query = clauses[0] if len(clauses) == 1 else {"$or": clauses}
            found += [_entry(d) async for d in self._entries.find(query)]
        return sorted(found, key=lambda e: (e.mailbox, e.seq))

    async def _claim(self, kind: str, entries: Sequence[Entry], now: datetime) -> list[Entry]:
        """Those of ``entries`` this call claims for ``kind`` (``delivered``, ``email``):
        a claim is an insert of a unique ``_id``, the one write that is exclusive on
        MongoDB and FerretDB alike, so of two replicas claiming at once one wins each."""
        documents = [{"_id": f"{kind}:{e.entry_id}", "at": now} for e in entries]
        taken = await insert_each(self._claims, documents)
        return [e for i, e in enumerate(entries) if i not in taken]

    async def _unclaim(self, kind: str, entries: Sequence[Entry]) -> None:
        ids = [f"{kind}:{e.entry_id}" for e in entries]
        if ids:
            await self._claims.delete_many({"_id": {"$in": ids}})

    async def claim_unreported(self, mailbox: str, up_to: int, now: datetime) -> list[Entry]:
        """The replies up to ``up_to`` whose delivery is not reported yet, claimed by
        this call: report them, then ``reported`` (or ``unclaim_unreported``)."""
        query = {
            "mailbox": mailbox,
            "seq": {"$lte": up_to},
            "from": {"$in": ["agent", "switchboard"]},
            "delivered": {"$ne": True},
        }
        found = [_entry(d) async for d in self._entries.find(query).sort("seq", ASCENDING)]
        return await self._claim("delivered", found, now) if found else []

    async def reported(self, entries: Sequence[Entry]) -> None:
        """Reported delivered: shown, so no email copy is needed either."""
        if entries:
            await self._entries.update_many(
                {"_id": {"$in": [e.entry_id for e in entries]}},
                {"$set": {"delivered": True}, "$unset": {"fallback_due": ""}},
            )

    async def unclaim_unreported(self, entries: Sequence[Entry]) -> None:
        """The report failed: the next ``seen`` claims them again."""
        await self._unclaim("delivered", entries)

    async def claim_fallbacks(self, now: datetime) -> list[tuple[Entry, Fallback]]:
        """The replies whose email copy is due and which no widget has shown, claimed by
        this call: send them, then ``fallbacks_sent`` (or ``unclaim_fallbacks``)."""
        query = {"fallback_due": {"$lte": now}, "delivered": {"$ne": True}}
        documents = {d["_id"]: d async for d in self._entries.find(query)}
        entries = sorted((_entry(d) for d in documents.values()), key=lambda e: (e.mailbox, e.seq))
        mine = await self._claim("email", entries, now) if entries else []
        found = []
        for entry in mine:
            extra = documents[entry.entry_id]["fallback"]
            fallback = Fallback(extra["customer_id"], extra["agent_id"], extra["requested_at"], now)
            found.append((entry, fallback))
        return found

    async def fallbacks_sent(self, entries: Sequence[Entry]) -> None:
        if entries:
            await self._entries.update_many(
                {"_id": {"$in": [e.entry_id for e in entries]}}, {"$unset": {"fallback_due": ""}}
            )

    async def unclaim_fallbacks(self, entries: Sequence[Entry]) -> None:
        """The copies were not published: still due (the next tick tries again)."""
        await self._unclaim("email", entries)


def _document(entry: NewEntry, seq: int) -> Document:
    fallback: Document = {}
    if entry.fallback is not None:
        fallback = {
            "fallback_due": entry.fallback.due,
            "fallback": {
                "customer_id": entry.fallback.customer_id,
                "agent_id": entry.fallback.agent_id,
                "requested_at": entry.fallback.requested_at,
            },
        }
    return {
        **fallback,
        "_id": entry.entry_id,
        "mailbox": entry.mailbox,
        "seq": seq,
        "from": entry.sender,
        "text": entry.text,
        "at": entry.at,
        "client_id": entry.client_id,
        "reply_id": entry.reply_id,
        "conversation_id": entry.conversation_id,
    }
