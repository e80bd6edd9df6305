"""One contract for both stores of workspace request ids: in memory (unit) and FerretDB
(integration)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_router.workspace.commands import Command, NoteRequest, to_event
from switchboard_router.workspace.requests_store import (
    InMemoryRequestStore,
    MongoRequestStore,
    RequestRecord,
    RequestStore,
)

#: Milliseconds, as the write API stamps events (the database keeps no finer time).
AT = T0 + timedelta(milliseconds=123)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RequestStore]:
    if request.param == "memory":
        yield InMemoryRequestStore()
        return
    async with real_database(request) as db:
        yield MongoRequestStore(db)


def record(request_id: str, agent_id: str, text: str) -> RequestRecord:
    command = Command("note", agent_id, "c-1", NoteRequest(request_id=request_id, text=text))
    return RequestRecord.of(request_id, agent_id, command.digest(), to_event(command, AT))


async def test_an_unknown_request_id_has_no_record(store: RequestStore) -> None:
    assert await store.get("req-unknown") is None


async def test_the_first_claim_wins_and_gives_back_the_same_event(store: RequestStore) -> None:
    first = record("req-0001", "ana", "VIP customer")
    assert await store.claim(first) == first
    later = record("req-0001", "bob", "something else")
    assert await store.claim(later) == first
    found = await store.get("req-0001")
    assert found == first
    assert found is not None
    # The record names the event first published (id, time, where) and keeps no text.
    again = to_event(
        Command("note", "ana", "c-1", NoteRequest(request_id="req-0001", text="VIP customer")),
        found.at,
    )
    assert (found.event_id, found.at, found.topic, found.key) == (
        again.event_id,
        again.time,
        again.topic,
        again.key,
    )
    assert "VIP customer" not in repr(found)


async def test_racing_claims_of_one_id_agree_on_one_winner(store: RequestStore) -> None:
    claims = [record("req-race-1", f"agent-{n}", f"note {n}") for n in range(8)]
    winners = await asyncio.gather(*(store.claim(c) for c in claims))
    assert len(set(winners)) == 1
    assert winners[0] in claims
    assert await store.get("req-race-1") == winners[0]


async def test_records_stamped_before_the_cutoff_are_forgotten(store: RequestStore) -> None:
    old = record("req-old-1", "ana", "first")
    recent = dataclasses.replace(record("req-new-1", "ana", "second"), at=AT + timedelta(days=8))
    for claim in (old, recent):
        await store.claim(claim)
    assert await store.forget_before(AT + timedelta(days=7)) == 1
    assert await store.get("req-old-1") is None
    assert await store.get("req-new-1") == recent
    # A forgotten id can be claimed afresh (a retry long after publishes again).
    again = record("req-old-1", "bob", "third")
    assert await store.claim(again) == again
    assert await store.forget_before(AT) == 0
