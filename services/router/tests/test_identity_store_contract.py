"""One contract for both identity stores: in memory (unit) and FerretDB (integration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_router.timeline.linking import Profile
from switchboard_router.timeline.memory import InMemoryIdentityStore
from switchboard_router.timeline.mongo import MongoIdentityStore, ensure_indexes
from switchboard_router.timeline.ports import (
    CustomerRecord,
    ErasureRecord,
    IdentityRecord,
    IdentityStore,
    Membership,
    MergeRecord,
)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[IdentityStore]:
    if request.param == "memory":
        yield InMemoryIdentityStore()
        return
    async with real_database(request) as db:
        await ensure_indexes(db)
        yield MongoIdentityStore(db)


def identity(value: str, customer: str) -> IdentityRecord:
    return IdentityRecord(value, customer, "new", T0)


async def test_an_identity_belongs_to_the_first_claimant(store: IdentityStore) -> None:
    assert await store.get_identity("email:ana@example.com") is None
    first = identity("email:ana@example.com", "cu-1")
    assert await store.claim_identity(first) == first
    assert await store.claim_identity(identity("email:ana@example.com", "cu-2")) == first
    assert await store.get_identity("email:ana@example.com") == first


async def test_concurrent_claims_of_one_identity_agree_on_one_customer(
    store: IdentityStore,
) -> None:
    claims = [identity("whatsapp:+34600111222", f"cu-{n}") for n in range(10)]
    results = await asyncio.gather(*(store.claim_identity(c) for c in claims))
    assert len({r.customer_id for r in results}) == 1


async def test_identities_are_listed_and_deleted_by_customer(store: IdentityStore) -> None:
    for value, customer in [("email:a@x.io", "cu-1"), ("x:1", "cu-1"), ("x:2", "cu-2")]:
        await store.claim_identity(identity(value, customer))
    assert [r.identity for r in await store.identities_of(["cu-1"])] == ["email:a@x.io", "x:1"]
    assert await store.delete_identities(["cu-1"]) == 2
    assert [r.identity for r in await store.identities_of(["cu-1", "cu-2"])] == ["x:2"]


async def test_customers_profiles_and_erasure(store: IdentityStore) -> None:
    record = CustomerRecord("cu-1", T0, "Ana")
    assert await store.create_customer(record)
    assert not await store.create_customer(CustomerRecord("cu-1", T0, "Someone else"))
    assert await store.get_customer("cu-1") == record
    profile = Profile("crm-1", ("ana@example.com",), ("+34600111222",), "vip")
    await store.save_profile("cu-1", profile)
    assert (await store.get_customer("cu-1")) == CustomerRecord("cu-1", T0, "Ana", profile)
    await store.erase_customers(["cu-1"], "er-1", T0 + timedelta(days=1))
    erased = await store.get_customer("cu-1")
    assert erased == CustomerRecord("cu-1", T0, None, Profile(), T0 + timedelta(days=1), "er-1")
    assert await store.get_customer("cu-9") is None


async def test_profile_keys_are_exclusive(store: IdentityStore) -> None:
    assert await store.claim_profile_key("email:ana@example.com", "cu-1") == "cu-1"
    assert await store.claim_profile_key("email:ana@example.com", "cu-2") == "cu-1"
    await store.claim_profile_key("phone:+34600111222", "cu-1")
    await store.claim_profile_key("external:crm-2", "cu-2")
    assert await store.get_profile_key("email:ana@example.com") == "cu-1"
    assert await store.delete_profile_keys(["cu-1"]) == 2
    assert await store.get_profile_key("phone:+34600111222") is None
    assert await store.get_profile_key("external:crm-2") == "cu-2"


async def test_a_customer_is_merged_into_one_other_at_a_time(store: IdentityStore) -> None:
    first = Membership("cu-b", "cu-a", "mg-1", T0)
    assert await store.claim_membership(first) == first
    assert await store.claim_membership(Membership("cu-b", "cu-c", "mg-2", T0)) == first
    await store.claim_membership(Membership("cu-d", "cu-a", "mg-3", T0 + timedelta(minutes=1)))
    assert [m.absorbed for m in await store.absorbed_by("cu-a")] == ["cu-b", "cu-d"]
    assert not await store.delete_membership("cu-b", "mg-2")  # not that merge
    assert await store.delete_membership("cu-b", "mg-1")
    assert await store.get_membership("cu-b") is None
    assert [m.absorbed for m in await store.absorbed_by("cu-a")] == ["cu-d"]


async def test_merge_records_are_kept_and_can_lose_their_ids(store: IdentityStore) -> None:
    merge = MergeRecord(
        "mg-1", "cu-a", "cu-b", "verified_email", ("email:ana@example.com",), "ops", T0, "active"
    )
    refused = MergeRecord(
        "mg-2", "cu-c", "cu-a", "manual", (), "ops", T0 + timedelta(minutes=1), "refused", "no"
    )
    await store.save_merge(merge)
    await store.save_merge(refused)
    assert await store.get_merge("mg-1") == merge
    assert [m.merge_id for m in await store.merges_of(["cu-a"])] == ["mg-1", "mg-2"]
    assert [m.merge_id for m in await store.merges_of(["cu-b"])] == ["mg-1"]
    assert await store.redact_merges(["cu-b"]) == 1
    assert (await store.get_merge("mg-1")) == MergeRecord(
        "mg-1", "cu-a", "cu-b", "verified_email", (), "ops", T0, "active"
    )


async def test_erasure_records_round_trip(store: IdentityStore) -> None:
    record = ErasureRecord("er-1", "cu-a", ("cu-a", "cu-b"), "dpo", "request 7", T0)
    await store.save_erasure(record)
    done = ErasureRecord(
        "er-1", "cu-a", ("cu-a", "cu-b"), "dpo", "request 7", T0, T0, {"identities": 3}
    )
    await store.save_erasure(done)
    assert await store.get_erasure("er-1") == done
    assert await store.get_erasure("er-9") is None


async def test_a_batch_reads_identities_customers_keys_and_memberships_at_once(
    store: IdentityStore,
) -> None:
    ana, bob = identity("email:ana@example.com", "cu-1"), identity("x:42", "cu-2")
    await store.claim_identities([ana, bob])
    assert await store.get_identities(["x:42", "email:ana@example.com", "x:9"]) == {
        "email:ana@example.com": ana,
        "x:42": bob,
    }
    await store.create_customers([CustomerRecord("cu-1", T0, "Ana"), CustomerRecord("cu-2", T0)])
    customers = await store.get_customers(["cu-2", "cu-1", "cu-9"])
    assert customers == {
        "cu-1": CustomerRecord("cu-1", T0, "Ana"),
        "cu-2": CustomerRecord("cu-2", T0),
    }
    await store.claim_profile_key("phone:+34600111222", "cu-1")
    await store.claim_profile_key("email:bob@example.com", "cu-2")
    assert await store.get_profile_keys(["email:bob@example.com", "phone:+34600111222", "x"]) == {
        "email:bob@example.com": "cu-2",
        "phone:+34600111222": "cu-1",
    }
    merged = Membership("cu-2", "cu-1", "mg-1", T0)
    await store.claim_membership(merged)
    assert await store.get_memberships(["cu-1", "cu-2"]) == {"cu-2": merged}
    for empty in (
        await store.get_identities([]),
        await store.get_customers([]),
        await store.get_profile_keys([]),
        await store.get_memberships([]),
    ):
        assert empty == {}
