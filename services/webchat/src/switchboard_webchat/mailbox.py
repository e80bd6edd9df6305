"""The mailboxes: every message of a visitor's chat, theirs and the replies, in order.

A mailbox is a site and a recipient (the visitor id, or the email the site vouched for:
a signed-in customer reads the same mailbox from every device). Each entry has the next
``seq`` of its mailbox, reserved by inserting a slot document before the entry is
written; the entry's ``_id`` is the message's (a visitor's ``message_id``,
``reply:<reply_id>``) so writing it again is a no-op that answers the first entry. A copy
of each stored entry is then written under ``<mailbox>#<seq>``, which is how entries are
read in seq order.

Every command goes by ``_id`` (one ``$in`` for many ids): on FerretDB v1 over SQLite a
query on any other field reads the whole collection, so its cost would grow with every
chat ever held (measured: the last slot of a mailbox by a sorted query took 73 ms at 1,000
slots and 2.3 s at 40,000; by ``_id`` a few ms whatever the size). So a call is a fixed
number of commands whatever the number of entries and mailboxes: the ids, the slots (one
more per round lost to a concurrent writer), the entries, their copies; a mailbox this
replica has not written to yet costs one read of its top (and its window of slots).
"""

from __future__ import annotations

import contextlib
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from switchboard_common.bulk import find_by_ids, insert_each, insert_new
from switchboard_common.mongo import Document

From = Literal["visitor", "agent", "switchboard"]
#: Attempts at reserving seqs before giving up (each one insert; writers to one
#: mailbox at the same moment are a visitor's tabs and a reply or two).
SLOT_ROUNDS = 20
#: Seq ids asked for at a time: ``after`` stops at a window with nothing in it (a seq
#: never written is a gap of one, or of a batch lost to a concurrent writer).
WINDOW = 1000
#: Seq ids ``newer`` asks for per mailbox and tick, and in all per tick (an id that is
#: not there costs about 8 us, one that is there about 80 us on FerretDB v1).
POLL_WINDOW = 16
POLL_IDS = 8000
#: A mailbox's top (``<collection>_top``, a hint: the slots decide) is written when it
#: crosses a multiple of this, so a replica new to the mailbox reads a window of slots
#: above it rather than every slot.
TOP_EVERY = 32
#: Slots read at a time above a top, looking for the highest.
TOP_WINDOW = 64
#: Mailboxes whose top this replica remembers.
KNOWN_TOPS = 100_000


class SlotsBusyError(PyMongoError):
    """No seq could be reserved (too many writers at once): try again later."""


def mailbox_key(site: str, recipient: str) -> str:
    """One string per mailbox (site ids have no ``/``)."""
    return f"{site}/{recipient}"


def seq_id(mailbox: str, seq: int) -> str:
    """The ``_id`` of a mailbox's slot and its entry's copy."""
    return f"{mailbox}#{seq}"


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
        entry_id=document["entry_id"] if "entry_id" in document else document["_id"],
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
    """Entries in ``<collection>``, seq slots in ``<collection>_seq``, the entries' copies
    by seq in ``<collection>_by_seq``, the mailboxes' tops in ``<collection>_top``, claims
    in ``<collection>_claims``."""

    def __init__(self, db: AsyncDatabase[Document], collection: str) -> None:
        self._entries = db[collection]
        self._slots = db[f"{collection}_seq"]
        self._by_seq = db[f"{collection}_by_seq"]
        self._tops = db[f"{collection}_top"]
        #: The highest seq seen taken, by mailbox (a hint: the slots decide).
        self._known_tops: OrderedDict[str, int] = OrderedDict()
        #: Where ``newer`` starts when it cannot ask for every mailbox at once.
        self._poll_turn = 0
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
        await self._copy_older_entries()

    async def _copy_older_entries(self) -> None:
        """Once per database: the copies by seq of entries stored before there were any
        (one read of every entry, then a marker)."""
        marker = "#copied"
        if await self._tops.find_one({"_id": marker}) is not None:
            return
        batch: list[Entry] = []
        async for document in self._entries.find({}):
            batch.append(_entry(document))
            if len(batch) == WINDOW:
                await self.index(batch)
                batch = []
        await self.index(batch)
        await insert_each(self._tops, [{"_id": marker}])

    async def get(self, entry_id: str) -> Entry | None:
        return (await self.find([entry_id])).get(entry_id)

    async def find(self, entry_ids: Iterable[str]) -> dict[str, Entry]:
        """The entries stored under these ids, by id (one ``$in`` per thousand)."""
        return {k: _entry(d) for k, d in (await find_by_ids(self._entries, entry_ids)).items()}

    async def index(self, entries: Iterable[Entry]) -> None:
        """Write the copies by seq of stored entries (those written already stay): after
        the entries, so a copy is always of the entry that won its id; again for an entry
        found stored, in case its writer stopped in between."""
        documents = {seq_id(e.mailbox, e.seq): _copy(e) for e in entries}
        await insert_each(self._by_seq, list(documents.values()))

    async def append(
        self, new: Sequence[NewEntry], *, found: Mapping[str, Entry] | None = None
    ) -> list[Entry]:
        """Write the entries not written yet; every entry as stored, in the given order.

        Idempotent by ``entry_id``: a second writer of the same entry (a redelivered
        reply, a resend on another replica) gets the first one back; the seq it took is
        then never used (``cursors`` gives such gaps up). ``found``: what ``find`` said
        of these ids just before (saves reading them again; one written meanwhile is
        still found out by its insert)."""
        if found is None:
            found = await self.find(n.entry_id for n in new)
        fresh = list({n.entry_id: n for n in new if n.entry_id not in found}.values())
        by_mailbox: dict[str, list[NewEntry]] = {}
        for entry in fresh:
            by_mailbox.setdefault(entry.mailbox, []).append(entry)
        seqs = await self._take_seqs({m: len(es) for m, es in by_mailbox.items()})
        documents: list[Document] = []
        for mailbox, entries in by_mailbox.items():
            documents += [_document(e, n) for e, n in zip(entries, seqs[mailbox], strict=True)]
        taken = await insert_new(self._entries, documents)
        stored = {d["_id"]: _entry(d) for d in documents if d["_id"] not in taken}
        if taken:  # written meanwhile by another writer: theirs stands
            stored |= await self.find(taken)
        stored |= {n.entry_id: found[n.entry_id] for n in new if n.entry_id in found}
        await self.index(stored.values())
        return [stored[n.entry_id] for n in new]

    async def _take_seqs(self, counts: Mapping[str, int]) -> dict[str, list[int]]:
        """Reserve ``count`` seqs of each mailbox, each by inserting its slot
        (``<mailbox>#<seq>``), every mailbox in one insert: an insert of a unique ``_id``
        is exclusive on MongoDB and FerretDB alike, where an ``$inc`` of a counter is not
        (concurrent increments were seen to hand out one value twice). Each round starts
        after the highest slot known; a mailbox that lost a round looks for its highest
        slot again and spreads out over the next few seqs (a seq left unused is a gap,
        which readers pass over)."""
        tops = await self._top_of(list(counts))
        before = dict(tops)
        seqs: dict[str, list[int]] = {m: [] for m in counts}
        for attempt in range(SLOT_ROUNDS):
            tries = [
                (m, tops[m] + 1 + i) for m, c in counts.items() for i in range(c - len(seqs[m]))
            ]
            if not tries:
                break
            taken = await insert_each(
                self._slots, [{"_id": seq_id(m, n), "mailbox": m, "seq": n} for m, n in tries]
            )
            lost: set[str] = set()
            for i, (mailbox, n) in enumerate(tries):
                tops[mailbox] = max(tops[mailbox], n)
                if i in taken:
                    lost.add(mailbox)
                else:
                    seqs[mailbox].append(n)
            if lost:
                spread = min(2**attempt, TOP_WINDOW // 4)
                for mailbox, top in (await self._find_tops({m: tops[m] for m in lost})).items():
                    tops[mailbox] = top + random.randrange(spread)  # noqa: S311 - no secret
        else:
            raise SlotsBusyError(f"no free seq after {SLOT_ROUNDS} rounds")
        self._remember_tops(tops)
        crossed = [
            UpdateOne({"_id": m}, {"$max": {"seq": top}}, upsert=True)
            for m, top in tops.items()
            if before[m] == 0 or before[m] // TOP_EVERY != top // TOP_EVERY
        ]
        if crossed:
            # A hint only: two first writers upserting at once may refuse one another.
            with contextlib.suppress(PyMongoError):
                await self._tops.bulk_write(crossed, ordered=False)
        return {m: sorted(n) for m, n in seqs.items()}

    async def _top_of(self, mailboxes: Sequence[str]) -> dict[str, int]:
        """Each mailbox's highest slot as this replica knows it, else as found: the top
        written last (one ``$in`` for every mailbox) and the slots above it."""
        tops = {m: self._known_tops[m] for m in mailboxes if m in self._known_tops}
        unknown = [m for m in mailboxes if m not in tops]
        if unknown:
            hints = await find_by_ids(self._tops, unknown)
            written = {m: int(hints[m]["seq"]) for m in unknown if m in hints}
            tops |= {m: 0 for m in unknown if m not in written}  # a new mailbox
            if written:
                tops |= await self._find_tops(written)
        return tops

    async def _find_tops(self, hints: Mapping[str, int]) -> dict[str, int]:
        """The highest slot of each mailbox at or above its hint: windows of slot ids
        above it (every mailbox in one ``$in``) until a window has none."""
        tops = dict(hints)
        looking = dict(hints)
        while looking:
            ids = [seq_id(m, h + k) for m, h in looking.items() for k in range(1, TOP_WINDOW + 1)]
            found = await find_by_ids(self._slots, ids, {"mailbox": 1, "seq": 1})
            higher: dict[str, int] = {}
            for document in found.values():
                mailbox, seq = document["mailbox"], int(document["seq"])
                higher[mailbox] = max(higher.get(mailbox, 0), seq)
            tops |= higher
            looking = higher
        self._remember_tops(tops)
        return tops

    def _remember_tops(self, tops: Mapping[str, int]) -> None:
        for mailbox, top in tops.items():
            self._known_tops[mailbox] = max(top, self._known_tops.get(mailbox, 0))
            self._known_tops.move_to_end(mailbox)
        while len(self._known_tops) > KNOWN_TOPS:
            self._known_tops.popitem(last=False)

    async def after(
        self, mailbox: str, seq: int, limit: int = 500, *, up_to: int | None = None
    ) -> list[Entry]:
        """The mailbox's entries after ``seq`` (and up to ``up_to``), oldest first, at
        most ``limit``: windows of seq ids until ``limit`` or a window with nothing."""
        found: list[Entry] = []
        start = seq
        while len(found) < limit and (up_to is None or start < up_to):
            end = start + WINDOW if up_to is None else min(start + WINDOW, up_to)
            ids = [seq_id(mailbox, n) for n in range(start + 1, end + 1)]
            window = [_entry(d) for d in (await find_by_ids(self._by_seq, ids)).values()]
            if not window:
                break
            found += window
            start = end
        return sorted(found, key=lambda e: e.seq)[:limit]

    async def newer(self, watermarks: Mapping[str, int]) -> list[Entry]:
        """The entries after each mailbox's watermark, by ``_id``: the next
        ``POLL_WINDOW`` seq ids of every mailbox in one ``$in`` (per thousand ids), then
        the next window of those whose window's last id was there; at most ``POLL_IDS``
        ids a call, the mailboxes beyond taken in turn on the next calls (and the rest
        of a long run of entries on the next call)."""
        items = list(watermarks.items())
        per_call = max(1, POLL_IDS // POLL_WINDOW)
        if len(items) > per_call:
            turn = self._poll_turn % len(items)
            items = (items[turn:] + items[:turn])[:per_call]
            self._poll_turn = turn + per_call
        found: list[Entry] = []
        looking, budget = dict(items), POLL_IDS
        while looking and budget >= POLL_WINDOW * len(looking):
            ids = [seq_id(m, w + k) for m, w in looking.items() for k in range(1, POLL_WINDOW + 1)]
            budget -= len(ids)
            window = [_entry(d) for d in (await find_by_ids(self._by_seq, ids)).values()]
            found += window
            full = {e.mailbox for e in window if e.seq == looking[e.mailbox] + POLL_WINDOW}
            looking = {m: w + POLL_WINDOW for m, w in looking.items() if m in full}
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
        this call: report them, then ``reported`` (or ``unclaim_unreported``). Read by
        ``_id``, the mailbox's entries and then their claims: the cost of the
        conversation, not of the collection."""
        replies = [
            e
            for e in await self.after(mailbox, 0, limit=max(up_to, 0), up_to=up_to)
            if e.sender in ("agent", "switchboard")
        ]
        claimed = await find_by_ids(self._claims, [f"delivered:{e.entry_id}" for e in replies])
        found = [e for e in replies if f"delivered:{e.entry_id}" not in claimed]
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


def _copy(entry: Entry) -> Document:
    """An entry's copy by seq: what readers show."""
    return {
        "_id": seq_id(entry.mailbox, entry.seq),
        "entry_id": entry.entry_id,
        "mailbox": entry.mailbox,
        "seq": entry.seq,
        "from": entry.sender,
        "text": entry.text,
        "at": entry.at,
        "client_id": entry.client_id,
        "reply_id": entry.reply_id,
        "conversation_id": entry.conversation_id,
    }


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
