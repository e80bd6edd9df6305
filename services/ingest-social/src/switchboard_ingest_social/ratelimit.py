"""Token buckets per client and in total for X's CRC check, which signs with the consumer
secret on every call. Pure: the clock is given.

A request takes one token from its client's bucket and one from the total, or is refused
with the seconds until both would have one (``switchboard_common.ratelimit`` says how the
buckets fill and how the table of clients stays bounded; the total still holds then).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from switchboard_common.ratelimit import ClientBuckets, TokenBucket


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
        self.clock = clock
        self.total = TokenBucket.full(per_minute, clock())
        self.clients = ClientBuckets(per_client_per_minute, max_clients=max_clients)

    def admit(self, client: str) -> int:
        """0 when admitted (a token taken from each bucket); otherwise the whole seconds
        to wait before retrying (``Retry-After``), nothing taken."""
        now = self.clock()
        bucket = self.clients.bucket(client, now)
        self.total.refill(now)
        wait = max(bucket.wait(), self.total.wait())
        if wait > 0:
            return max(1, math.ceil(wait))
        bucket.take()
        self.total.take()
        return 0
