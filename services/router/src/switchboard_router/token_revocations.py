"""Revoking one agent's tokens: an agent who leaves, or a token that leaked, must stop
working before it expires, without signing every other agent out.

``agent_token_revocations`` holds one record per revoked agent (``_id`` = agent id): the
time up to which every token issued to the agent is refused. Each replica keeps the
whole collection in memory (``RevokedTokens``) so a request costs no lookup: the replica
that revokes knows at once, the others within ``ROUTER_AGENT_REVOCATION_REFRESH_SECONDS``.
A record older than the longest token lifetime refuses nothing any more and is dropped by
an hourly sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.mongo import Document
from switchboard_router.agent_tokens import MAX_TTL_SECONDS, SignedAgent

COLLECTION = "agent_token_revocations"


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class RevocationStore(Protocol):
    async def revoke(self, agent_id: str, up_to_ms: int) -> None:
        """Refuse the agent's tokens issued up to ``up_to_ms`` (a later revocation of
        the same agent only ever moves that time forward)."""
        ...

    async def all(self) -> Mapping[str, int]:
        """Every revoked agent and the time up to which its tokens are refused."""
        ...

    async def forget_before(self, cutoff_ms: int) -> None:
        """Drop the revocations made before ``cutoff_ms``."""
        ...


class InMemoryRevocationStore:
    def __init__(self) -> None:
        self.revoked: dict[str, int] = {}

    async def revoke(self, agent_id: str, up_to_ms: int) -> None:
        self.revoked[agent_id] = max(up_to_ms, self.revoked.get(agent_id, up_to_ms))

    async def all(self) -> Mapping[str, int]:
        return dict(self.revoked)

    async def forget_before(self, cutoff_ms: int) -> None:
        self.revoked = {agent: at for agent, at in self.revoked.items() if at >= cutoff_ms}


class MongoRevocationStore:
    """``agent_token_revocations``: ``_id`` = agent id, ``up_to_ms``."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[COLLECTION]

    async def revoke(self, agent_id: str, up_to_ms: int) -> None:
        await self.collection.update_one(
            {"_id": agent_id}, {"$max": {"up_to_ms": up_to_ms}}, upsert=True
        )

    async def all(self) -> Mapping[str, int]:
        return {str(doc["_id"]): int(doc["up_to_ms"]) async for doc in self.collection.find({})}

    async def forget_before(self, cutoff_ms: int) -> None:
        await self.collection.delete_many({"up_to_ms": {"$lt": cutoff_ms}})


class RevokedTokens:
    """This replica's view of the revocations: checked on every agent request."""

    def __init__(self, store: RevocationStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._revoked: Mapping[str, int] = {}

    def refuses(self, signed: SignedAgent) -> bool:
        return signed.issued_ms <= self._revoked.get(signed.agent_id, -1)

    async def revoke(self, agent_id: str) -> datetime:
        """Refuse every token issued to ``agent_id`` up to now, here at once; the time."""
        now = self._clock()
        await self._store.revoke(agent_id, _ms(now))
        await self.refresh()
        return now

    async def refresh(self) -> None:
        """Read the revocations again. A failed read keeps the last known ones (the
        caller's loop retries)."""
        self._revoked = await self._store.all()

    async def forget_old(self) -> None:
        """Drop the revocations no unexpired token predates (they refuse nothing)."""
        oldest = self._clock() - timedelta(seconds=MAX_TTL_SECONDS)
        await self._store.forget_before(_ms(oldest))
