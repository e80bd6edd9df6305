"""The raw message store: the exact bytes received, content-addressed by SHA-256.

A port with two adapters, checked by one contract suite (``tests/test_email_raw_store.py``):

- ``MongoRawStore``: a manifest document ``{_id: <sha256>, size, chunks, chunk_size,
  stored_at}`` in ``email_raw`` and chunk documents ``{_id: "<sha256>:<n>", data}`` in
  ``email_raw_chunks`` (1 MiB each, far under the 16 MB document limit); a message of
  at most one chunk (most mail) is kept in the manifest itself (``data``, ``chunks: 0``),
  one document and one insert. Every document
  is addressed by ``_id`` only, the one lookup FerretDB v1 indexes (GridFS filters chunks
  on ``files_id``: a full scan there). Writes are inserts by ``_id`` with the manifest
  last, so a rewrite of the same bytes is harmless (an existing ``_id`` holds the same
  bytes: a duplicate-key error is success) and a manifest, once visible, always has all
  its chunks; ``get`` checks the reassembled bytes against the digest. Concurrent
  ``put`` calls are committed together (group commit: one insert of chunks, then one of
  manifests, per round), with write concern ``majority`` and journaling.
- ``InMemoryRawStore``: a dict, for unit tests of the pure core.

Why not GridFS: see above; why not one document per message: messages may be 25 MB.
The layout is shared data (``switchboard_common.raw_mail``): a customer's erasure deletes
the raw mail their messages point at. ``purge_stored_before`` and ``keep_for`` enforce
the retention limit (FerretDB v1 has no TTL indexes: a periodic, bounded purge instead).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bson import Binary
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from switchboard_common.logging import get_logger
from switchboard_common.raw_mail import CHUNKS, MANIFESTS, chunk_id, delete_raw_mail

log = get_logger(__name__)

CHUNK_SIZE = 1024 * 1024
#: Messages deleted per round of the retention purge (one find, two deletes).
PURGE_BATCH = 500
#: Bytes committed per bulk write at most (a bigger backlog takes several rounds).
GROUP_COMMIT_BYTES = 32 * 1024 * 1024
DUPLICATE_KEY = 11000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RawStore(Protocol):
    """Durable, content-addressed storage of raw messages."""

    async def put(self, data: bytes, *, sha256: str | None = None) -> str:
        """Store ``data`` durably and return its SHA-256 (hex).

        Idempotent: storing the same bytes again changes nothing. Returns only once the
        bytes are durable; raises (``PyMongoError`` and friends) if they may not be.
        ``sha256`` is the caller's digest of ``data`` when it has one already.
        """
        ...

    async def get(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256``, or None if there are none."""
        ...


class InMemoryRawStore:
    """A dict of bytes: the raw store for unit tests."""

    def __init__(self) -> None:
        self.messages: dict[str, bytes] = {}

    async def put(self, data: bytes, *, sha256: str | None = None) -> str:
        digest = sha256 or sha256_hex(data)
        self.messages.setdefault(digest, bytes(data))
        return digest

    async def get(self, sha256: str) -> bytes | None:
        return self.messages.get(sha256)


@dataclass
class _Pending:
    digest: str
    data: bytes
    done: asyncio.Future[None]


class MongoRawStore:
    """Manifest plus chunk documents, all addressed by ``_id``; puts are group-committed."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        chunk_size: int = CHUNK_SIZE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        durable = WriteConcern(w="majority", j=True)
        self.manifests: AsyncCollection[dict[str, Any]] = db.get_collection(
            MANIFESTS, write_concern=durable
        )
        self.chunks: AsyncCollection[dict[str, Any]] = db.get_collection(
            CHUNKS, write_concern=durable
        )
        self.chunk_size = chunk_size
        self._clock = clock
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def put(self, data: bytes, *, sha256: str | None = None) -> str:
        digest = sha256 or sha256_hex(data)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(digest, data, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="raw-store-flush")
        await done
        return digest

    async def _flush(self) -> None:
        """Commit everything pending, round after round, until nothing is left."""
        while self._pending:
            batch: list[_Pending] = []
            size = 0
            while self._pending and (not batch or size < GROUP_COMMIT_BYTES):
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item.data)
            error: BaseException | None = None
            try:
                await self._write(batch)
            except Exception as failure:  # noqa: BLE001 - handed to every waiting caller
                error = failure
            for item in batch:
                if item.done.done():
                    continue  # the caller gave up (timeout); the write is still harmless
                if error is None:
                    item.done.set_result(None)
                else:
                    item.done.set_exception(error)

    async def _write(self, batch: list[_Pending]) -> None:
        chunks: list[dict[str, Any]] = []
        manifests: list[dict[str, Any]] = []
        seen: set[str] = set()
        now = self._clock()
        for item in batch:
            if item.digest in seen:
                continue
            seen.add(item.digest)
            manifest: dict[str, Any] = {
                "_id": item.digest,
                "size": len(item.data),
                "chunk_size": self.chunk_size,
                "stored_at": now,
            }
            if len(item.data) <= self.chunk_size:
                # Most mail fits in one chunk: kept in the manifest itself (one document).
                manifest["chunks"] = 0
                manifest["data"] = Binary(item.data)
            else:
                count = -(-len(item.data) // self.chunk_size)
                for n in range(count):
                    piece = item.data[n * self.chunk_size : (n + 1) * self.chunk_size]
                    chunks.append({"_id": chunk_id(item.digest, n), "data": Binary(piece)})
                manifest["chunks"] = count
            manifests.append(manifest)
        # Chunks first, manifests after: a visible manifest always has all its chunks.
        await _insert_idempotent(self.chunks, chunks)
        await _insert_idempotent(self.manifests, manifests)

    async def get(self, sha256: str) -> bytes | None:
        manifest = await self.manifests.find_one({"_id": sha256})
        if manifest is None:
            return None
        parts = [bytes(manifest["data"])] if "data" in manifest else []
        for n in range(int(manifest["chunks"])):
            chunk = await self.chunks.find_one({"_id": chunk_id(sha256, n)})
            if chunk is None:
                raise LookupError(f"raw message {sha256}: chunk {n} is missing")
            parts.append(bytes(chunk["data"]))
        data = b"".join(parts)
        if len(data) != manifest["size"] or sha256_hex(data) != sha256:
            raise LookupError(f"raw message {sha256}: stored bytes do not match their digest")
        return data

    async def purge_stored_before(self, cutoff: datetime, *, batch: int = PURGE_BATCH) -> int:
        """Delete every message stored before ``cutoff``, ``batch`` at a time; returns how
        many. Idempotent; safe beside concurrent ``put`` calls of newer mail."""
        purged = 0
        while True:
            old = self.manifests.find({"stored_at": {"$lt": cutoff}}, {"_id": 1}).limit(batch)
            digests = [document["_id"] async for document in old]
            purged += await delete_raw_mail(self._db, digests)
            if len(digests) < batch:
                return purged

    async def keep_for(self, retention: timedelta, *, every: float) -> None:
        """Purge mail older than ``retention`` every ``every`` seconds, until cancelled.
        A failed round (database away) is logged and retried at the next one."""
        while True:
            try:
                purged = await self.purge_stored_before(self._clock() - retention)
            except Exception as error:  # noqa: BLE001 - keep the loop alive; next round retries
                log.warning("raw mail purge failed", error_type=type(error).__name__)
            else:
                if purged:
                    log.info("raw mail past retention purged", messages=purged)
            await asyncio.sleep(every)


async def _insert_idempotent(
    collection: AsyncCollection[dict[str, Any]], documents: list[dict[str, Any]]
) -> None:
    """Insert documents whose ``_id`` determines their content; existing ones are fine.

    Plain inserts, not upserts: on FerretDB v1 an upsert costs a lookup and a write per
    document (measured: ~60 ms for one, ~1 s for 100) where an insert batch costs a few
    milliseconds. A duplicate ``_id`` means the same bytes are already there.
    """
    if not documents:
        return
    try:
        await collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        errors = error.details.get("writeErrors", [])
        if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
