"""Stage 1 (group ``router-identity``): sender identity → customer, re-keyed by customer.

Consumes ``support.inbound.v1``; for each message builds the sender identity from the
event, resolves it to its customer and publishes a ``CustomerMessage`` keyed by that
customer to ``switchboard.router.customer-messages.v1``. Offsets are committed (by the
shared ``BatchConsumer``) only after Kafka acknowledged every record of the batch.

"One customer per identity" is an insert of ``{_id: identity}``: when two replicas see a
new identity at once, one insert wins and the other adopts the winner's customer.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from switchboard_common.consumer import Delivery
from switchboard_common.contract import CUSTOMER_MESSAGES, CustomerMessage, MessageReceived
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.identity import IdentityError, identity_of, profile_key_for
from switchboard_router.timeline.ports import CustomerRecord, IdentityRecord, IdentityStore

log = get_logger(__name__)

_K = TypeVar("_K")
_V = TypeVar("_V")
#: Merges are shallow in practice; the bound only guards against a cycle of bad data.
MAX_MERGE_DEPTH = 32


class Publisher(Protocol):
    """Publishes and returns once Kafka acknowledged every record (``EventPublisher``)."""

    async def publish_all(self, items: Sequence[Outgoing]) -> object: ...


def new_customer_id() -> str:
    return "cu_" + uuid.uuid4().hex[:24]


class TtlCache(Generic[_K, _V]):
    """A bounded cache whose entries expire ``ttl`` seconds after they were stored."""

    def __init__(
        self, ttl: float, size: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._monotonic = monotonic
        self._entries: OrderedDict[_K, tuple[float, _V]] = OrderedDict()

    def get(self, key: _K) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._monotonic() - entry[0] >= self._ttl:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: _K, value: _V) -> None:
        if self._ttl <= 0 or self._size <= 0:
            return
        self._entries[key] = (self._monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True)
class Resolution:
    identity: str
    #: The customer the identity belongs to (its home).
    customer_id: str
    #: The customer routing sees, when ``customer_id`` is merged into it.
    merged_into: str | None
    tier: str | None


class IdentityResolver:
    """Resolves identities to customers: finds, links or creates.

    A new identity links to the customer of a profile that lists it (a verified email
    for an email identity, a phone for a WhatsApp identity), else it gets a new customer.
    Resolutions are cached for ``ttl`` seconds: merges, unmerges and tier changes reach
    stage 1 within that time; erasure does not depend on it (stage 2 sends messages of
    an erased customer back here with ``fresh=True``).
    """

    def __init__(
        self,
        store: IdentityStore,
        *,
        clock: Callable[[], datetime],
        metrics: TimelineMetrics,
        ttl: float = 5.0,
        size: int = 100_000,
        new_id: Callable[[], str] = new_customer_id,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._new_id = new_id
        self._homes: TtlCache[str, str] = TtlCache(ttl, size, monotonic)
        self._roots: TtlCache[str, tuple[str, str | None]] = TtlCache(ttl, size, monotonic)

    async def resolve(
        self,
        identity: str,
        *,
        channel: str,
        display_name: str | None = None,
        fresh: bool = False,
    ) -> Resolution:
        """The customer of ``identity``, creating one if it is new. Idempotent; safe to
        run concurrently on several replicas."""
        home = None if fresh else self._homes.get(identity)
        if home is None:
            home = await self._home(identity, channel, display_name)
            self._homes.put(identity, home)
        else:
            self._metrics.identities.labels("cached").inc()
        root, tier = await self.root_of(home, fresh=fresh)
        return Resolution(identity, home, None if root == home else root, tier)

    async def _home(self, identity: str, channel: str, display_name: str | None) -> str:
        stored = await self._store.get_identity(identity)
        if stored is not None:
            self._metrics.identities.labels("stored").inc()
            return stored.customer_id
        owner, rule = None, "new"
        link = profile_key_for(identity)
        if link is not None:
            owner = await self._store.get_profile_key(link[0])
            rule = link[1] if owner is not None else rule
        candidate = owner or self._new_id()
        now = self._clock()
        record = await self._store.claim_identity(IdentityRecord(identity, candidate, rule, now))
        if record.customer_id != candidate:
            self._metrics.identities.labels("stored").inc()
            return record.customer_id  # another replica created it first: adopt theirs
        if owner is None:
            await self._store.create_customer(CustomerRecord(candidate, now, display_name))
            self._metrics.customers_created.labels(channel).inc()
            self._metrics.identities.labels("new").inc()
        else:
            self._metrics.identities.labels(
                "linked_phone" if rule == "phone" else "linked_email"
            ).inc()
        return candidate

    async def root_of(self, customer_id: str, *, fresh: bool = False) -> tuple[str, str | None]:
        """The customer ``customer_id`` is (transitively) merged into, and its tier."""
        cached = None if fresh else self._roots.get(customer_id)
        if cached is not None:
            return cached
        current, seen = customer_id, {customer_id}
        for _ in range(MAX_MERGE_DEPTH):
            membership = await self._store.get_membership(current)
            if membership is None or membership.survivor in seen:
                break
            current = membership.survivor
            seen.add(current)
        customer = await self._store.get_customer(current)
        if customer is None and current == customer_id:
            # The identity was claimed but the process died before creating the customer.
            await self._store.create_customer(CustomerRecord(customer_id, self._clock()))
        tier = customer.profile.tier if customer is not None else None
        self._roots.put(customer_id, (current, tier))
        return current, tier


class IdentityStage:
    """The batch handler of stage 1."""

    def __init__(
        self,
        resolver: IdentityResolver,
        publisher: Publisher,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._resolver = resolver
        self._publisher = publisher
        self._clock = clock

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        rejected: list[tuple[Delivery, str]] = []
        accepted: list[tuple[MessageReceived, str]] = []
        for delivery in deliveries:
            message = delivery.event
            if not isinstance(message, MessageReceived):
                rejected.append((delivery, f"unexpected event {type(message).__name__}"))
                continue
            try:
                accepted.append((message, identity_of(message)))
            except IdentityError as error:
                rejected.append((delivery, f"sender identity: {error}"))
        resolutions: dict[str, Resolution] = {}
        for message, identity in accepted:
            if identity not in resolutions:
                resolutions[identity] = await self._resolver.resolve(
                    identity,
                    channel=message.channel.value,
                    display_name=message.sender.display_name,
                )
        now = self._clock()
        await self._publisher.publish_all(
            [
                customer_message(message, resolutions[identity], now)
                for message, identity in accepted
            ]
        )
        return rejected


def customer_message(message: MessageReceived, resolution: Resolution, now: datetime) -> Outgoing:
    """The stage-1 record for a resolved message (deterministic event id)."""
    return Outgoing(
        topic=CUSTOMER_MESSAGES,
        key=resolution.customer_id,
        event=CustomerMessage(
            customer_id=resolution.customer_id,
            identity=resolution.identity,
            message=message,
            resolved_at=now,
            merged_into=resolution.merged_into,
            customer_tier=resolution.tier,
        ),
        event_id=f"{message.message_id}:customer",
        time=now,
    )
