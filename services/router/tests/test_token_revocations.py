"""Revoking one agent's tokens: the store's contract (in memory and FerretDB), and the
replica's view as the bearer check uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_router.access import READ_CREDENTIAL, Keyring, agent_credential
from switchboard_router.agent_tokens import MAX_TTL_SECONDS, AgentTokens
from switchboard_router.token_revocations import (
    InMemoryRevocationStore,
    MongoRevocationStore,
    RevocationStore,
    RevokedTokens,
)

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RevocationStore]:
    if request.param == "memory":
        yield InMemoryRevocationStore()
        return
    async with real_database(request) as db:
        yield MongoRevocationStore(db)


async def test_a_revocation_only_moves_forward(store: RevocationStore) -> None:
    assert await store.all() == {}
    await store.revoke("agent-ana", MS)
    await store.revoke("agent-ben", MS + 5)
    await store.revoke("agent-ana", MS - 1000)  # an older revocation arriving late
    assert await store.all() == {"agent-ana": MS, "agent-ben": MS + 5}
    await store.revoke("agent-ana", MS + 7)
    assert (await store.all())["agent-ana"] == MS + 7


async def test_revocations_older_than_the_cutoff_are_dropped(store: RevocationStore) -> None:
    await store.revoke("agent-ana", MS)
    await store.revoke("agent-ben", MS + 10)
    await store.forget_before(MS + 1)
    assert await store.all() == {"agent-ben": MS + 10}


@pytest.mark.unit
async def test_revoking_refuses_the_agents_earlier_tokens_and_no_other() -> None:
    tokens = AgentTokens("s" * 32)
    now = [T0]
    store = InMemoryRevocationStore()
    revoked = RevokedTokens(store, lambda: now[0])
    keyring = Keyring([(SecretStr("r" * 20), READ_CREDENTIAL)], tokens, lambda: now[0],
                      revoked=revoked.refuses)  # fmt: skip
    ana_before = tokens.mint("agent-ana", now=T0 - timedelta(hours=1))
    ana_same_moment = tokens.mint("agent-ana", now=T0)
    ben = tokens.mint("agent-ben", now=T0 - timedelta(hours=1))
    assert keyring.identify(f"Bearer {ana_before}") == agent_credential("agent-ana")

    assert await revoked.revoke("agent-ana") == T0
    for token in (ana_before, ana_same_moment):
        assert keyring.identify(f"Bearer {token}") is None
    assert keyring.identify(f"Bearer {ben}") == agent_credential("agent-ben")
    now[0] = T0 + timedelta(milliseconds=1)
    ana_after = tokens.mint("agent-ana", now=now[0])
    assert keyring.identify(f"Bearer {ana_after}") == agent_credential("agent-ana")

    # Another replica revoked ben: this one refuses him once it has read again.
    await store.revoke("agent-ben", MS + 1)
    assert keyring.identify(f"Bearer {ben}") is not None
    await revoked.refresh()
    assert keyring.identify(f"Bearer {ben}") is None

    # Once no token issued before it can still be valid, a revocation is dropped.
    now[0] = T0 + timedelta(seconds=MAX_TTL_SECONDS, milliseconds=2)
    await revoked.forget_old()
    assert await store.all() == {}
