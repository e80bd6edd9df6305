"""One contract suite for both implementations of each store: in memory (unit) and on
the real MongoDB-wire server (integration), so the fake cannot drift from the adapter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from switchboard_devkit.testing.real_database import real_database
from switchboard_devtools.testing.sla_monitor import simple_policies
from switchboard_sla_monitor.clocks import derive
from switchboard_sla_monitor.facts import EmittedFact, MessageFact, ReplyFact
from switchboard_sla_monitor.mongo_store import MongoConversationStore, MongoEmissionStore
from switchboard_sla_monitor.store import (
    ClaimRecord,
    ConversationStore,
    ConversationUpdate,
    DoneUpdate,
    EmissionStore,
    InMemoryConversationStore,
    InMemoryEmissionStore,
)

T0 = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)
BACKENDS = [
    pytest.param("memory", marks=pytest.mark.unit),
    pytest.param("mongo", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
async def stores(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ConversationStore, EmissionStore]]:
    if request.param == "memory":
        yield InMemoryConversationStore(), InMemoryEmissionStore()
        return
    async with real_database(request) as db:
        conversations, emissions = (
            MongoConversationStore(db["sla_conversations"], db["sla_meta"]),
            MongoEmissionStore(db["sla_emissions"]),
        )
        await conversations.ensure_indexes()
        await emissions.ensure_indexes()
        yield conversations, emissions


def message(mid: str, minute: int) -> MessageFact:
    return MessageFact(
        message_id=mid,
        received_at=T0 + timedelta(minutes=minute),
        activity="opened",
        channel="email",  # type: ignore[arg-type]
    )


def update(
    cid: str, *facts: MessageFact | ReplyFact, next_minute: int | None = 50
) -> ConversationUpdate:
    clocks = tuple(derive(facts, simple_policies(), {"awaiting_customer"}))
    return ConversationUpdate(
        conversation_id=cid,
        new_facts={f.key: f for f in facts},
        clocks=clocks,
        next_check=None if next_minute is None else T0 + timedelta(minutes=next_minute),
        active=any(c.is_open for c in clocks),
    )


async def test_facts_merge_by_key_and_derived_fields_are_replaced(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    conversations, _ = stores
    first = message("m.1$odd.id", 0)
    await conversations.save([update("c1", first)])
    assert (await conversations.load(["c1"]))["c1"].due == {
        "first_response": T0 + timedelta(hours=1),
        "resolution": T0 + timedelta(hours=8),
    }
    await conversations.save([update("c1", first)])  # redelivery
    later = ReplyFact(agent_id="a1", sent_at=T0 + timedelta(minutes=5))
    both = update("c1", first, later, next_minute=None)
    await conversations.save([both])
    loaded = await conversations.load(["c1", "unknown"])
    assert set(loaded) == {"c1"}
    record = loaded["c1"]
    assert record.facts == {first.key: first, later.key: later}
    assert record.next_check is None
    assert record.clocks == both.clocks
    assert len(record.clocks) == 2
    assert record.clocks[0].started_at.tzinfo is not None
    # The published due times: the reply stopped first response, resolution runs.
    assert record.due == {"resolution": T0 + timedelta(hours=8)}
    assert (await conversations.load(["c1"]))["c1"].due == both.due


async def test_due_returns_the_earliest_first_up_to_the_limit(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    conversations, _ = stores
    await conversations.save(
        [
            update("late", message("m1", 0), next_minute=30),
            update("early", message("m2", 0), next_minute=10),
            update("future", message("m3", 0), next_minute=90),
            update("never", message("m4", 0), next_minute=None),
        ]
    )
    now = T0 + timedelta(minutes=60)
    assert [r.conversation_id for r in await conversations.due(now, 10)] == ["early", "late"]
    assert [r.conversation_id for r in await conversations.due(now, 1)] == ["early"]
    due = (await conversations.due(now, 1))[0]
    assert due.facts == {message("m2", 0).key: message("m2", 0)}


async def test_live_lists_records_with_open_clocks_or_pending_emissions(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    conversations, _ = stores
    answered = ReplyFact(agent_id="a", sent_at=T0 + timedelta(minutes=1))
    done = update("done", message("d", 0), answered, next_minute=None)
    done = ConversationUpdate("done", done.new_facts, done.clocks, None, active=False)
    await conversations.save([update("open", message("o", 0)), done])
    live = [r async for r in conversations.live()]
    assert [r.conversation_id for r in live] == ["open"]
    assert live[0].facts == {}
    assert live[0].clocks
    full = [r async for r in conversations.live(with_facts=True)]
    assert full[0].facts
    # Resolved, awaiting a decision (next_check set): live, but not open.
    waiting = ConversationUpdate("waiting", {}, done.clocks, T0, active=False)
    await conversations.save([waiting])
    assert sorted([r.conversation_id async for r in conversations.live()]) == ["open", "waiting"]
    assert [r.conversation_id async for r in conversations.live(open_only=True)] == ["open"]


def claim(cid: str, kind: str = "breached", by: str = "r1") -> ClaimRecord:
    return ClaimRecord(
        id=f"{cid}:first_response:1:{kind}",
        conversation_id=cid,
        kind=kind,
        payload={"conversation_id": cid, "metric": "first_response"},
        claimed_at=T0,
        claimed_by=by,
    )


async def test_a_claim_is_won_once(stores: tuple[ConversationStore, EmissionStore]) -> None:
    _, emissions = stores
    assert await emissions.claim([claim("c1"), claim("c2")]) == {
        "c1:first_response:1:breached",
        "c2:first_response:1:breached",
    }
    assert await emissions.claim([claim("c1", by="r2"), claim("c3", by="r2")]) == {
        "c3:first_response:1:breached"
    }
    stored = await emissions.get(["c1:first_response:1:breached", "nothing"])
    assert list(stored) == ["c1:first_response:1:breached"]
    assert stored["c1:first_response:1:breached"].claimed_by == "r1"
    assert stored["c1:first_response:1:breached"].published_at is None
    await emissions.mark_published(["c1:first_response:1:breached"], T0 + timedelta(seconds=1))
    stored = await emissions.get(["c1:first_response:1:breached"])
    assert stored["c1:first_response:1:breached"].published_at == T0 + timedelta(seconds=1)


async def test_concurrent_claims_of_one_emission_have_one_winner(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    _, emissions = stores
    results = await asyncio.gather(
        *(emissions.claim([claim("hot", by=f"r{n}")]) for n in range(20))
    )
    assert sum(len(r) for r in results) == 1


async def test_markers_are_kept(stores: tuple[ConversationStore, EmissionStore]) -> None:
    conversations, _ = stores
    assert await conversations.marker("derivation") is None
    await conversations.set_marker("derivation", "v1")
    await conversations.set_marker("derivation", "v2")
    assert await conversations.marker("derivation") == "v2"


async def test_a_new_conversation_created_meanwhile_by_another_writer_is_merged(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    conversations, _ = stores
    first = message("m1", 0)
    await conversations.save([update("c1", first)])
    # Another replica computed its update while the record did not exist yet.
    second = message("m2", 1)
    racing = update("c1", second)
    racing = ConversationUpdate(
        "c1", racing.new_facts, racing.clocks, racing.next_check, racing.active, new=True
    )
    brand_new = update("c2", message("m3", 2))
    brand_new = ConversationUpdate(
        "c2", brand_new.new_facts, brand_new.clocks, brand_new.next_check, True, new=True
    )
    await conversations.save([racing, brand_new])
    loaded = await conversations.load(["c1", "c2"])
    assert loaded["c1"].facts == {first.key: first, second.key: second}
    assert set(loaded["c2"].facts) == {message("m3", 2).key}


async def test_in_period_selects_by_first_and_last_fact_time_or_open_clocks(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    conversations, _ = stores

    def spanning(cid: str, first: int, last: int, *, active: bool) -> ConversationUpdate:
        return ConversationUpdate(
            conversation_id=cid,
            new_facts={},
            clocks=(),
            next_check=None,
            active=active,
            first_at=T0 + timedelta(days=first),
            last_at=T0 + timedelta(days=last),
        )

    await conversations.save(
        [
            spanning("before", -30, -20, active=False),  # over before the period
            spanning("open-before", -30, -20, active=True),  # still has a running clock
            spanning("overlaps", -5, 2, active=False),
            spanning("inside", 1, 3, active=False),
            spanning("after", 10, 12, active=True),  # starts after the period
        ]
    )
    start, end = T0, T0 + timedelta(days=10)
    found = await conversations.in_period(start, end, 10)
    assert [r.conversation_id for r in found] == ["inside", "open-before", "overlaps"]
    assert found[0].first_at == T0 + timedelta(days=1)
    assert found[0].last_at == T0 + timedelta(days=3)
    assert len(await conversations.in_period(start, end, 2)) == 2


async def test_record_done_applies_only_while_nobody_else_wrote(
    stores: tuple[ConversationStore, EmissionStore],
) -> None:
    conversations, _ = stores
    await conversations.save([update("c", message("m", 0), next_minute=50)])
    before = (await conversations.load(["c"]))["c"]
    done = EmittedFact(emission_id="c:fcr:1:decided")
    assert before.revision == 1
    stale = DoneUpdate("c", {done.key: done}, None, expected_revision=0)
    await conversations.record_done([stale])  # someone wrote meanwhile: nothing changes
    assert (await conversations.load(["c"]))["c"] == before
    await conversations.record_done([DoneUpdate("c", {done.key: done}, None, 1)])
    after = (await conversations.load(["c"]))["c"]
    assert after.revision == 2
    assert after.next_check is None
    assert done.key in after.facts
    assert after.clocks == before.clocks
    assert after.active
