"""Identity resolution (group ``router-identity``): sender identity → customer, re-keyed.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from switchboard_common.consumer import Delivery
from switchboard_common.contract import CUSTOMER_MESSAGES, CustomerMessage, MessageReceived
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.identity import (
    UNAUTHENTICATED,
    IdentityError,
    identity_of,
    may_link,
    profile_key_for,
)
from switchboard_router.timeline.ports import CustomerRecord, IdentityRecord, IdentityStore

log = get_logger(__name__)

_K = TypeVar("_K")
_V = TypeVar("_V")
#: Merges are shallow in practice; the bound only guards against a cycle of bad data.
MAX_MERGE_DEPTH = 32
#: Seconds an identity → customer resolution is trusted (only erasure changes it, and
#: an erased customer's messages find their way back by themselves; this bounds the
#: detour they take).
CUSTOMER_TTL = 600.0


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


@dataclass(frozen=True)
class Resolution:
    identity: str
    #: The customer the identity belongs to (its customer_id).
    customer_id: str
    #: The customer routing sees, when ``customer_id`` is merged into it.
    merged_into: str | None
    tier: str | None


@dataclass(frozen=True)
class Sighting:
    """How identity resolution saw a sender: its channel and the name it gave."""

    channel: str
    display_name: str | None = None
    #: A new identity may link to an existing customer (``identity.may_link``).
    may_link: bool = True


class IdentityResolver:
    """Resolves identities to customers: finds, links or creates.

    A new identity links to the customer of a profile that lists it (a verified email
    for an email identity, a phone for a WhatsApp identity), else it gets a new customer.
    A new identity sighted only on unauthenticated email never links: it gets a customer
    of its own, recorded ``linked_by="unauthenticated"`` so that no later profile merges
    it either.

    Which customer an identity belongs to changes only by erasure, which does not depend
    on this cache (the timeline sends messages of an erased customer back here with
    ``fresh=True``), so it is cached for ``CUSTOMER_TTL``. Whom that customer is merged into
    and its tier change by admin commands and are cached for ``ttl`` seconds: merges,
    unmerges and tier changes reach identity resolution within that time. ``ttl=0`` caches nothing.
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
        self._customer_of: TtlCache[str, str] = TtlCache(
            CUSTOMER_TTL if ttl > 0 else 0, size, monotonic
        )
        self._roots: TtlCache[str, tuple[str, str | None]] = TtlCache(ttl, size, monotonic)

    async def resolve(
        self,
        identity: str,
        *,
        channel: str,
        display_name: str | None = None,
        fresh: bool = False,
        may_link: bool = True,
    ) -> Resolution:
        """The customer of ``identity`` (see ``resolve_many``)."""
        sighting = Sighting(channel, display_name, may_link)
        resolved = await self.resolve_many({identity: sighting}, fresh=fresh)
        return resolved[identity]

    async def resolve_many(
        self, sightings: Mapping[str, Sighting], *, fresh: bool = False
    ) -> dict[str, Resolution]:
        """The customers of the identities, creating customers for new ones (one bulk
        insert of identities, one of customers). Idempotent; safe to run concurrently on
        several replicas: an identity inserted by another replica first is adopted."""
        customers: dict[str, str] = {}
        for identity in sightings if not fresh else ():
            customer_id = self._customer_of.get(identity)
            if customer_id is not None:
                customers[identity] = customer_id
                self._metrics.identities.labels("cached").inc()
        missing = [i for i in sightings if i not in customers]
        stored = await self._store.get_identities(missing) if missing else {}
        unknown: list[str] = []
        for identity in missing:
            record = stored.get(identity)
            if record is None:
                unknown.append(identity)
            else:
                customers[identity] = record.customer_id
                self._metrics.identities.labels("stored").inc()
        if unknown:
            customers.update(await self._create(unknown, sightings))
        for identity, customer_id in customers.items():
            self._customer_of.put(identity, customer_id)
        roots = await self.roots_of(list(dict.fromkeys(customers.values())), fresh=fresh)
        return {
            identity: Resolution(
                identity,
                customer_id,
                None if roots[customer_id][0] == customer_id else roots[customer_id][0],
                roots[customer_id][1],
            )
            for identity, customer_id in customers.items()
        }

    async def _create(
        self, identities: Sequence[str], sightings: Mapping[str, Sighting]
    ) -> dict[str, str]:
        links = {i: profile_key_for(i) if sightings[i].may_link else None for i in identities}
        keys = {i: link[0] for i, link in links.items() if link is not None}
        owners = await self._store.get_profile_keys(sorted(set(keys.values()))) if keys else {}
        owner_of = {i: owners[key] for i, key in keys.items() if key in owners}
        now = self._clock()
        records = []
        for identity in identities:
            link = links[identity]
            owner = owner_of.get(identity)
            if owner is not None and link is not None:
                rule: str = link[1]
            else:
                rule = "new" if sightings[identity].may_link else UNAUTHENTICATED
            records.append(IdentityRecord(identity, owner or self._new_id(), rule, now))
        winners = await self._store.claim_identities(records)
        created = [
            CustomerRecord(r.customer_id, now, sightings[r.identity].display_name)
            for r in records
            if r.linked_by in ("new", UNAUTHENTICATED)
            and winners[r.identity].customer_id == r.customer_id
        ]
        await self._store.create_customers(created)
        for customer in created:
            # A customer created just now is merged into nobody and has no tier yet.
            self._roots.put(customer.customer_id, (customer.customer_id, None))
        for record in records:
            won = winners[record.identity].customer_id == record.customer_id
            if not won:
                outcome = "stored"  # another replica created it first: adopt theirs
            elif record.linked_by in ("new", UNAUTHENTICATED):
                outcome = "new"
                self._metrics.customers_created.labels(sightings[record.identity].channel).inc()
            else:
                outcome = "linked_phone" if record.linked_by == "phone" else "linked_email"
            self._metrics.identities.labels(outcome).inc()
        return {identity: record.customer_id for identity, record in winners.items()}

    async def root_of(self, customer_id: str, *, fresh: bool = False) -> tuple[str, str | None]:
        """The customer ``customer_id`` is (transitively) merged into, and its tier."""
        return (await self.roots_of([customer_id], fresh=fresh))[customer_id]

    async def roots_of(
        self, customer_ids: Sequence[str], *, fresh: bool = False
    ) -> dict[str, tuple[str, str | None]]:
        """``root_of`` for many customers: one membership read per level of merging (in
        practice one), one read of the roots' customers."""
        found: dict[str, tuple[str, str | None]] = {}
        todo: list[str] = []
        for customer_id in customer_ids:
            cached = None if fresh else self._roots.get(customer_id)
            if cached is not None:
                found[customer_id] = cached
            else:
                todo.append(customer_id)
        if not todo:
            return found
        current = await follow_merges(self._store, todo)
        customers = await self._store.get_customers(sorted(set(current.values())))
        for customer_id in todo:
            root = current[customer_id]
            customer = customers.get(root)
            if customer is None and root == customer_id:
                # The identity was claimed but the process died before creating the
                # customer.
                await self._store.create_customer(CustomerRecord(customer_id, self._clock()))
            tier = customer.profile.tier if customer is not None else None
            self._roots.put(customer_id, (root, tier))
            found[customer_id] = (root, tier)
        return found


async def follow_merges(store: IdentityStore, customer_ids: Sequence[str]) -> dict[str, str]:
    """Each customer's root: the customer it is (transitively) merged into, or itself.
    One membership read per level of merging (in practice one); a cycle stops the walk."""
    current = {c: c for c in customer_ids}
    seen = {c: {c} for c in customer_ids}
    following = list(customer_ids)
    for _ in range(MAX_MERGE_DEPTH):
        if not following:
            break
        memberships = await store.get_memberships(sorted({current[c] for c in following}))
        moved = []
        for customer_id in following:
            membership = memberships.get(current[customer_id])
            if membership is None or membership.survivor in seen[customer_id]:
                continue
            current[customer_id] = membership.survivor
            seen[customer_id].add(membership.survivor)
            moved.append(customer_id)
        following = moved
    return current


class IdentityStage:
    """Identity resolution's batch handler."""

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
        sightings: dict[str, Sighting] = {}
        for message, identity in accepted:
            seen = sightings.get(identity)
            sightings[identity] = Sighting(
                message.channel.value,
                seen.display_name if seen is not None else message.sender.display_name,
                # One authenticated message of the batch is enough to link the identity.
                (seen is not None and seen.may_link) or may_link(message),
            )
        resolutions = await self._resolver.resolve_many(sightings)
        now = self._clock()
        await self._publisher.publish_all(
            [
                customer_message(message, resolutions[identity], now)
                for message, identity in accepted
            ]
        )
        return rejected


def customer_message(message: MessageReceived, resolution: Resolution, now: datetime) -> Outgoing:
    """The identity-resolution record for a resolved message (deterministic event id)."""
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
