"""Token buckets per client and in total, for endpoints a stranger can call for free
(X's CRC check signs with the consumer secret on every call). Pure: the clock is given.

A bucket holds up to ``per_minute`` tokens, starts full and refills continuously at
``per_minute`` tokens a minute; a request takes one token from its client's bucket and
one from the total, or is refused with the seconds until both would have one. Client
buckets are kept for the most recent ``max_clients`` clients only (memory stays bounded
whatever addresses a flood comes from; the total bucket still holds then).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``tokens`` available at ``updated`` (seconds of the limiter's clock)."""

    per_minute: int
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.per_minute), self.tokens + elapsed * self.per_minute / 60)
        self.updated = now

    def wait(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * 60 / self.per_minute


class RateLimiter:
    """Admits a request when both its client's bucket and the total bucket allow it."""

    def __init__(
        self,
        *,
        per_client_per_minute: int,
        per_minute: int,
        clock: Callable[[], float],
        max_clients: int = 10_000,
    ) -> None:
        self.per_client_per_minute = per_client_per_minute
        self.clock = clock
        self.max_clients = max_clients
        self.total = TokenBucket(per_minute, float(per_minute), clock())
        self.clients: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, client: str) -> int:
        """0 when admitted (a token taken from each bucket); otherwise the whole seconds
        to wait before retrying (``Retry-After``), nothing taken."""
        now = self.clock()
        bucket = self.clients.pop(client, None)
        if bucket is None:
            bucket = TokenBucket(self.per_client_per_minute, float(self.per_client_per_minute), now)
        self.clients[client] = bucket  # most recently seen last
        while len(self.clients) > self.max_clients:
            self.clients.popitem(last=False)
        bucket.refill(now)
        self.total.refill(now)
        wait = max(bucket.wait(), self.total.wait())
        if wait > 0:
            return max(1, math.ceil(wait))
        bucket.tokens -= 1
        self.total.tokens -= 1
        return 0
