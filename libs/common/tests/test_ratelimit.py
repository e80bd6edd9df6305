"""Token buckets per client: burst, refill, and a table that stays bounded."""

from __future__ import annotations

import pytest

from switchboard_common.ratelimit import ClientBuckets, TokenBucket

pytestmark = pytest.mark.unit


def test_a_bucket_gives_a_minutes_worth_at_once_then_refills_up_to_it() -> None:
    bucket = TokenBucket.full(6, now=0.0)
    for _ in range(6):
        assert bucket.wait() == 0
        bucket.take()
    assert bucket.wait() == pytest.approx(10.0)  # 6 a minute: one every 10 s
    bucket.refill(9.0)
    assert bucket.wait() == pytest.approx(1.0)
    assert not bucket.is_full(9.0)
    bucket.refill(3600.0)
    assert bucket.tokens == 6  # never beyond the burst
    assert bucket.is_full(3600.0)


def test_clients_whose_bucket_refilled_are_forgotten_before_anyone_active() -> None:
    buckets = ClientBuckets(6, max_clients=4)
    for client in ("a", "b", "c"):
        buckets.bucket(client, now=0.0).take()
    buckets.bucket("d", now=50.0).take()  # a, b and c are full again by 10 s
    buckets.bucket("e", now=50.0)  # at the bound: the full ones go, d stays
    assert buckets.clients() == ["d", "e"]


def test_a_flood_of_new_clients_keeps_the_table_bounded_and_the_recent_ones() -> None:
    buckets = ClientBuckets(6, max_clients=1000)
    for n in range(10_000):
        buckets.bucket(f"x{n}", now=0.0).take()  # nobody refills: all active
        assert len(buckets) <= 1000
    assert "x9999" in buckets
    assert "x0" not in buckets
    assert buckets.bucket("x9999", now=0.0).tokens == 5  # recent state kept
