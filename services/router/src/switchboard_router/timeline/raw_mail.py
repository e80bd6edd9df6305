"""Erasing the raw mail a customer's messages point at (GDPR: the full MIME, attachments
included, is the most personal data the system holds).

Email ingest keeps the exact bytes of each message in the shared raw-mail collections
(``switchboard_common.raw_mail``) and the timeline entry keeps its ``raw_ref``. Erasure
deletes the raw mail first and drops the references after, a page at a time, so an
erasure cut short leaves references to find and finish; messages stored while it runs
still carry theirs and are caught by the timeline's erasure of the same customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.raw_mail import delete_raw_mail, digest_of
from switchboard_router.timeline.ports import RawMail, TimelineStore

#: Messages whose raw mail is deleted per round.
PAGE = 500


async def erase_raw_mail(
    timeline: TimelineStore, raw_mail: RawMail, customer_ids: Sequence[str]
) -> int:
    """Delete the raw mail of the customers' messages, then forget the references;
    returns how many raw messages were deleted. Idempotent."""
    erased = 0
    while refs := await timeline.raw_refs(customer_ids, PAGE):
        erased += await raw_mail.erase(sorted(set(refs.values())))
        await timeline.forget_raw_refs(list(refs))
    return erased


class MongoRawMail:
    """``RawMail`` on the shared database."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def erase(self, raw_refs: Sequence[str]) -> int:
        digests = [d for d in map(digest_of, raw_refs) if d is not None]
        return await delete_raw_mail(self._db, digests)
