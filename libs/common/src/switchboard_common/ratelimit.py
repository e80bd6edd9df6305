"""Token buckets per client, for what strangers can call for free (an SMTP client's
message rate, X's CRC check). Pure: the caller gives the clock's reading.

A bucket holds up to ``per_minute`` tokens, starts full and refills continuously at
``per_minute`` a minute, so a client gets a minute's worth at once and then one token per
share of a minute. The table of clients stays bounded whatever addresses a flood comes
from: a client whose bucket is full again is as good as unknown and is forgotten first,
then the least recently seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``tokens`` available at ``updated`` (seconds of the caller's clock)."""

    per_minute: int
    tokens: float
    updated: float

    @classmethod
    def full(cls, per_minute: int, now: float) -> TokenBucket:
        return cls(per_minute, float(per_minute), now)

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.per_minute), self.tokens + elapsed * self.per_minute / 60)
        self.updated = now

    def wait(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * 60 / self.per_minute

    def take(self) -> None:
        self.tokens -= 1

    def is_full(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        return self.tokens + elapsed * self.per_minute / 60 >= self.per_minute


class ClientBuckets:
    """One token bucket per client, at most ``max_clients`` of them."""

    def __init__(self, per_minute: int, *, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, client: object) -> bool:
        return client in self._buckets

    def clients(self) -> list[str]:
        """Known clients, least recently seen first."""
        return list(self._buckets)

    def bucket(self, client: str, now: float) -> TokenBucket:
        """``client``'s bucket, refilled to ``now`` (a full one for a new client)."""
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget(now)
            bucket = TokenBucket.full(self.per_minute, now)
        self._buckets[client] = bucket  # most recently seen last
        bucket.refill(now)
        return bucket

    def _forget(self, now: float) -> None:
        # Full buckets first (nothing is lost), then the oldest, down to three quarters of
        # the bound, so a flood of new addresses costs O(1) per client on average.
        for client in [c for c, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[client]
        while len(self._buckets) > self.max_clients * 3 // 4:
            self._buckets.popitem(last=False)
