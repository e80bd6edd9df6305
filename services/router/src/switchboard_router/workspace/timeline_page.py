"""One page of the complete timeline (pure): customer messages and activity items merged
into one list ordered by time, then item id.

Both stores answer "the first ``limit + 1`` after position (at, id)" in that order
(messages by ``(received_at, _id)``, activity by ``(at, _id)``), so the first ``limit +
1`` of the two lists merged are the first of the whole timeline after the position: one
read of each per page, whatever the mix. The cursor is the position of the page's last
item (``documents.encode_cursor``), the same form a messages-only page had, so a cursor
issued before activity items existed still pages on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from switchboard_common.mongo import Document
from switchboard_router.timeline.documents import encode_cursor


@dataclass(frozen=True)
class Entry:
    """One item of the merged list: a customer message or an activity item."""

    at: datetime
    item_id: str
    is_message: bool
    document: Document


@dataclass(frozen=True)
class TimelinePage:
    entries: tuple[Entry, ...]
    #: The cursor of the next page, or None on the last page.
    next: str | None


def merge_page(
    messages: Sequence[Document], activity: Sequence[Document], limit: int
) -> TimelinePage:
    """The first ``limit`` entries of ``messages`` and ``activity`` (each already in its
    store's order, each at least ``limit + 1`` long when more exist) in timeline order."""
    entries = [Entry(d["received_at"], d["_id"], True, d) for d in messages]
    entries += [Entry(d["at"], d["_id"], False, d) for d in activity]
    # Activity ids start with their kind and a colon (``reply:``...), so a message and an
    # item sharing one position would need a message id of that form; were it so, the
    # message comes first (and the cursor, naming the position, would skip the item).
    entries.sort(key=lambda e: (e.at, e.item_id, not e.is_message))
    page = entries[:limit]
    following = None
    if len(entries) > limit and page:
        following = encode_cursor(page[-1].at, page[-1].item_id)
    return TimelinePage(tuple(page), following)
