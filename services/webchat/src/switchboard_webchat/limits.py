"""How much one visitor and one client address may send, and how many sockets an address
may hold open. Pure: the caller gives the clock's reading.

Chat is bursty (a few lines at once, then reading), so each bucket holds ``burst`` tokens
and refills at ``per_second``; a message takes one token from its visitor's bucket and
one from its address's, or is refused with the seconds until both would have one (and
nothing taken, so the resend after that wait goes through). The tables stay bounded
whatever a flood of new visitors or addresses: the least recently seen is forgotten
first (a forgotten bucket comes back full, which only ever errs toward the customer).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    updated: float


class Buckets:
    """One token bucket per key, at most ``max_keys`` of them."""

    def __init__(self, burst: int, per_second: float, *, max_keys: int = 100_000) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, now: float) -> Bucket:
        """``key``'s bucket, refilled to ``now``."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = Bucket(float(self.burst), now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
        bucket.updated = now
        self._buckets[key] = bucket  # most recently seen last
        return bucket

    def wait(self, bucket: Bucket) -> float:
        """Seconds until ``bucket`` has a token (0 when it has one)."""
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.per_second


class SendLimiter:
    """Admits a message when both its visitor's and its address's buckets allow it."""

    def __init__(
        self,
        *,
        visitor_burst: int,
        visitor_per_second: float,
        ip_burst: int,
        ip_per_second: float,
        max_keys: int = 100_000,
    ) -> None:
        self.visitors = Buckets(visitor_burst, visitor_per_second, max_keys=max_keys)
        self.addresses = Buckets(ip_burst, ip_per_second, max_keys=max_keys)

    def admit(self, visitor: str, address: str, now: float) -> float:
        """0 when admitted (a token taken from each bucket); otherwise the seconds to
        wait before sending again, nothing taken."""
        mine = self.visitors.bucket(visitor, now)
        theirs = self.addresses.bucket(address, now)
        wait = max(self.visitors.wait(mine), self.addresses.wait(theirs))
        if wait > 0:
            return round(wait, 3) or 0.001
        mine.tokens -= 1
        theirs.tokens -= 1
        return 0.0


class ConnectionCounter:
    """Open sockets per client address (this replica's)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def open(self, address: str) -> bool:
        """Count a new socket of ``address``; False (nothing counted) when over the limit."""
        if self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def close(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def total(self) -> int:
        return sum(self._open.values())
