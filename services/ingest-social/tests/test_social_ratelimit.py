"""The CRC rate limiter's buckets, on a clock the test moves."""

from __future__ import annotations

import pytest

from switchboard_ingest_social.ratelimit import RateLimiter

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_a_minutes_worth_at_once_then_one_token_per_share_of_a_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(per_client_per_minute=3, per_minute=100, clock=clock)
    assert [limiter.admit("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.admit("a") == 20  # a token every 20 s
    clock.now += 10
    assert limiter.admit("a") == 10
    clock.now += 9.7
    assert limiter.admit("a") == 1  # rounded up: never 0 while refused
    clock.now += 0.3
    assert limiter.admit("a") == 0
    assert limiter.admit("a") == 20
    clock.now += 3600  # refills to the burst, not beyond
    assert [limiter.admit("a") for _ in range(4)] == [0, 0, 0, 20]


def test_the_total_holds_across_clients_and_refusals_take_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(per_client_per_minute=2, per_minute=3, clock=clock)
    assert [limiter.admit("a"), limiter.admit("a"), limiter.admit("a")] == [0, 0, 30]
    assert limiter.admit("b") == 0
    assert limiter.admit("c") == 20  # the total is spent: a token every 20 s
    clock.now += 20
    assert limiter.admit("c") == 0  # c's refusal took none of its own tokens


def test_client_buckets_are_bounded_in_number() -> None:
    clock = Clock()
    limiter = RateLimiter(per_client_per_minute=1, per_minute=1000, clock=clock, max_clients=2)
    for client in ("a", "b", "c"):
        assert limiter.admit(client) == 0
    assert limiter.clients.clients() == ["b", "c"]
    assert limiter.admit("c") == 60  # recent clients keep their state
