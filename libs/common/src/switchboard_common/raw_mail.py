"""Raw mail: the exact bytes of each received email, kept beside the events.

Part of the data contract, because more than one service acts on it: the message event's
``raw_ref`` is ``sha256:<hex digest of the bytes>``, and the bytes live in the database
the services share, in two collections addressed only by ``_id``:

- ``email_raw``: one manifest per message, ``{_id: <hex>, size, chunks, chunk_size,
  stored_at}``, holding the bytes itself (``data``, ``chunks: 0``) when they fit one chunk;
- ``email_raw_chunks``: ``{_id: "<hex>:<n>", data}`` for the chunks of larger messages.

Whoever stores mail keeps to this layout; whoever must forget it (a customer's erasure,
the retention limit) deletes with ``delete_raw_mail``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

MANIFESTS = "email_raw"
CHUNKS = "email_raw_chunks"
REF_PREFIX = "sha256:"


def raw_ref(digest: str) -> str:
    """The event's reference to raw mail with this SHA-256 (hex)."""
    return f"{REF_PREFIX}{digest}"


def digest_of(ref: str) -> str | None:
    """The SHA-256 a ``raw_ref`` names, or None for a reference of another kind."""
    return ref.removeprefix(REF_PREFIX) if ref.startswith(REF_PREFIX) else None


def chunk_id(digest: str, n: int) -> str:
    return f"{digest}:{n}"


async def delete_raw_mail(db: AsyncDatabase[dict[str, Any]], digests: Iterable[str]) -> int:
    """Delete the raw mail with these digests; returns how many messages were removed.

    Idempotent. Chunks go first and the manifest last, so a deletion cut short leaves
    the manifest behind to be found and finished by the next attempt.
    """
    keys = sorted(set(digests))
    if not keys:
        return 0
    manifests = db[MANIFESTS]
    found = await manifests.find({"_id": {"$in": keys}}, {"chunks": 1}).to_list()
    chunks = [chunk_id(m["_id"], n) for m in found for n in range(int(m.get("chunks", 0)))]
    if chunks:
        await db[CHUNKS].delete_many({"_id": {"$in": chunks}})
    result = await manifests.delete_many({"_id": {"$in": keys}})
    return result.deleted_count
