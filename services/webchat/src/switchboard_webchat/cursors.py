"""Which mailbox entries a replica has already pushed to its sockets. Pure.

Every replica looks, once a tick and in one query, for entries newer than its cursor of
each mailbox it has sockets for, since a reply may be stored by another replica. Seqs
are reserved before the entry is written, so two writers can land out of order (7
visible before 6): a cursor stays below a gap and remembers what it pushed above it, so
6 is still found when it lands. A seq that never lands (a writer that died between
reserving and writing, a duplicate that used one up, one skipped under contention) is
given up after ``gap_wait`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Cursor:
    #: Every seq up to here is pushed (or given up).
    watermark: int
    #: Seqs above the watermark already pushed.
    ahead: set[int] = field(default_factory=set)
    #: When the oldest missing seq below ``ahead`` was first noticed.
    gap_since: float | None = None


class Cursors:
    """The cursors of the mailboxes with sockets in this replica."""

    def __init__(self, gap_wait: float = 10.0) -> None:
        self.gap_wait = gap_wait
        self._cursors: dict[str, Cursor] = {}

    def __contains__(self, mailbox: object) -> bool:
        return mailbox in self._cursors

    def watch(self, mailbox: str, seen_up_to: int) -> None:
        """Start following ``mailbox`` after ``seen_up_to`` (kept if followed already:
        a second tab's sockets dedup by seq, so an older cursor loses nothing)."""
        self._cursors.setdefault(mailbox, Cursor(seen_up_to))

    def forget(self, mailbox: str) -> None:
        self._cursors.pop(mailbox, None)

    def watermarks(self) -> dict[str, int]:
        """What to ask for: entries after each watermark."""
        return {mailbox: cursor.watermark for mailbox, cursor in self._cursors.items()}

    def fresh(self, mailbox: str, seqs: Iterable[int], now: float) -> list[int]:
        """Of the entries found in ``mailbox``, those not pushed yet (in seq order); the
        cursor moves past them and over gaps older than ``gap_wait``."""
        cursor = self._cursors.get(mailbox)
        if cursor is None:
            return []
        new = sorted({s for s in seqs if s > cursor.watermark and s not in cursor.ahead})
        cursor.ahead.update(new)
        self._advance(cursor, now)
        return new

    def _advance(self, cursor: Cursor, now: float) -> None:
        while cursor.watermark + 1 in cursor.ahead:
            cursor.watermark += 1
            cursor.ahead.discard(cursor.watermark)
        if not cursor.ahead:
            cursor.gap_since = None
            return
        if cursor.gap_since is None:
            cursor.gap_since = now
        elif now - cursor.gap_since >= self.gap_wait:
            # Give the missing seqs up: jump to the first pushed one and go on from it.
            cursor.watermark = min(cursor.ahead) - 1
            cursor.gap_since = None
            self._advance(cursor, now)
