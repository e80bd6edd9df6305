"""Customers as operators see them: lookups, profiles, merge, unmerge and erasure.

A merge never moves data: the absorbed customer gets a *membership* in the survivor
(an insert whose ``_id`` is the absorbed customer, so a customer is merged at most once
at a time) and reads gather the survivor's group. Unmerging deletes the membership, so
both timelines are exactly what they were — messages received meanwhile included, since
every message stays filed under the customer its sender identity belongs to.

Erasure removes the personal data of a customer's whole group (identities, profile,
message text, email references, the raw mail, see ``raw_mail``, and the texts of the
agent-side activity: replies, notes, acknowledgements, surveys), leaves an audit
record with ids and counts only, and tells the timeline through the customer stream
(``CustomerErased``) so messages already on their way are erased too and later ones
start a fresh customer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from switchboard_common.contract import CUSTOMER_MESSAGES, CustomerErased
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.identity import UNAUTHENTICATED, identities_for_profile_key
from switchboard_router.timeline.linking import (
    Evidence,
    MergeReason,
    PlannedMerge,
    Profile,
    Refusal,
    merge_refusal,
    plan_profile,
)
from switchboard_router.timeline.ports import (
    CustomerRecord,
    ErasureRecord,
    IdentityRecord,
    IdentityStore,
    Membership,
    MergeRecord,
    RawMail,
    TimelineStore,
)
from switchboard_router.timeline.raw_mail import erase_raw_mail
from switchboard_router.timeline.resolve import Publisher

if TYPE_CHECKING:  # the workspace's store is handed in; imported for types only
    from switchboard_router.workspace.activity_store import ActivityStore

log = get_logger(__name__)

MAX_DEPTH = 32


class CustomerNotFoundError(LookupError):
    """No such customer (or merge, or erasure)."""


class CustomerConflictError(Exception):
    """The request contradicts the current state; ``record`` is what was recorded."""

    def __init__(self, reason: str, record: MergeRecord | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record


@dataclass(frozen=True)
class CustomerView:
    customer: CustomerRecord
    #: The customer this one is merged into (transitively), when it is.
    merged_into: str | None
    #: Customers merged into this one (transitively).
    members: tuple[str, ...]
    identities: tuple[IdentityRecord, ...]


@dataclass(frozen=True)
class ProfileOutcome:
    customer_id: str
    profile: Profile
    merges: tuple[MergeRecord, ...]
    refusals: tuple[Refusal, ...]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class CustomerDirectory:
    """Read and change customers (the admin endpoints' engine)."""

    def __init__(
        self,
        identities: IdentityStore,
        timeline: TimelineStore,
        publisher: Publisher,
        *,
        raw_mail: RawMail,
        activity: ActivityStore,
        clock: Callable[[], datetime],
        metrics: TimelineMetrics,
    ) -> None:
        self._identities = identities
        self._timeline = timeline
        self._activity = activity
        self._raw_mail = raw_mail
        self._publisher = publisher
        self._clock = clock
        self._metrics = metrics

    # ----------------------------------------------------------------------- reading

    async def root_of(self, customer_id: str) -> str:
        """The customer ``customer_id`` is (transitively) merged into, or itself."""
        current, seen = customer_id, {customer_id}
        for _ in range(MAX_DEPTH):
            membership = await self._identities.get_membership(current)
            if membership is None or membership.survivor in seen:
                break
            current = membership.survivor
            seen.add(current)
        return current

    async def group_of(self, customer_id: str) -> list[str]:
        """``customer_id`` and every customer merged into it, transitively."""
        group, frontier = [customer_id], [customer_id]
        while frontier and len(group) < 10_000:
            following: list[str] = []
            for survivor in frontier:
                for membership in await self._identities.absorbed_by(survivor):
                    if membership.absorbed not in group:
                        group.append(membership.absorbed)
                        following.append(membership.absorbed)
            frontier = following
        return group

    async def require(self, customer_id: str) -> CustomerRecord:
        customer = await self._identities.get_customer(customer_id)
        if customer is None:
            raise CustomerNotFoundError(f"no customer {customer_id}")
        return customer

    async def view(self, customer_id: str) -> CustomerView | None:
        customer = await self._identities.get_customer(customer_id)
        if customer is None:
            return None
        root = await self.root_of(customer_id)
        group = await self.group_of(customer_id)
        identities = await self._identities.identities_of(group)
        return CustomerView(
            customer=customer,
            merged_into=None if root == customer_id else root,
            members=tuple(group[1:]),
            identities=tuple(identities),
        )

    async def find(self, identity: str) -> CustomerView | None:
        """The customer an identity belongs to, as routing sees it (after merges)."""
        record = await self._identities.get_identity(identity)
        if record is None:
            return None
        return await self.view(await self.root_of(record.customer_id))

    async def external_ids(self, customer_id: str) -> frozenset[str]:
        ids: set[str] = set()
        for member in await self.group_of(customer_id):
            customer = await self._identities.get_customer(member)
            if customer is not None and customer.profile.external_id:
                ids.add(customer.profile.external_id)
        return frozenset(ids)

    async def merges(self, customer_id: str) -> list[MergeRecord]:
        return await self._identities.merges_of([customer_id])

    async def merge_record(self, merge_id: str) -> MergeRecord:
        record = await self._identities.get_merge(merge_id)
        if record is None:
            raise CustomerNotFoundError(f"no merge {merge_id}")
        return record

    async def erasure_record(self, erasure_id: str) -> ErasureRecord:
        record = await self._identities.get_erasure(erasure_id)
        if record is None:
            raise CustomerNotFoundError(f"no erasure {erasure_id}")
        return record

    # ----------------------------------------------------------------------- merging

    async def merge(
        self,
        survivor: str,
        absorbed: str,
        *,
        actor: str,
        note: str | None = None,
        reason: MergeReason = "manual",
        ids: Sequence[str] = (),
    ) -> MergeRecord:
        """Merge ``absorbed``'s group into ``survivor``'s (their roots, in fact).

        Raises ``CustomerNotFoundError``, or ``CustomerConflictError`` when refused (the
        refusal is recorded: two external ids disagree, already one customer, erased).
        """
        for customer_id in (survivor, absorbed):
            if (await self.require(customer_id)).erased_at is not None:
                raise CustomerConflictError(f"customer {customer_id} was erased")
        survivor_root = await self.root_of(survivor)
        absorbed_root = await self.root_of(absorbed)
        now = self._clock()
        record = MergeRecord(
            merge_id=new_id("mg"),
            survivor=survivor_root,
            absorbed=absorbed_root,
            reason=reason,
            ids=tuple(ids),
            by=actor,
            at=now,
            state="active",
            note=note,
        )
        refusal = merge_refusal(
            survivor_root,
            absorbed_root,
            await self.external_ids(survivor_root),
            await self.external_ids(absorbed_root),
        )
        if refusal is not None:
            return await self._refuse(record, refusal)
        await self._identities.save_merge(record)
        membership = await self._identities.claim_membership(
            Membership(absorbed_root, survivor_root, record.merge_id, now)
        )
        if membership.merge_id != record.merge_id:
            return await self._refuse(record, "merged into another customer meanwhile")
        if await self.root_of(survivor_root) == absorbed_root:
            # A concurrent merge the other way round: undo ours rather than make a cycle.
            await self._identities.delete_membership(absorbed_root, record.merge_id)
            return await self._refuse(record, "a concurrent merge joined them the other way")
        self._metrics.merges.labels(reason, "merged").inc()
        log.info(
            "customers merged",
            merge_id=record.merge_id,
            survivor=survivor_root,
            absorbed=absorbed_root,
            reason=reason,
        )
        return record

    async def _refuse(self, record: MergeRecord, why: str) -> MergeRecord:
        refused = replace(record, state="refused", note=why)
        await self._identities.save_merge(refused)
        self._metrics.merges.labels(record.reason, "refused").inc()
        log.info("merge refused", merge_id=record.merge_id, why=why)
        raise CustomerConflictError(why, refused)

    async def unmerge(self, merge_id: str, *, actor: str, note: str | None = None) -> MergeRecord:
        """Undo an active merge: both customers' timelines are exactly as if it never
        happened. Raises ``CustomerNotFoundError`` / ``CustomerConflictError``."""
        record = await self.merge_record(merge_id)
        if record.state != "active":
            raise CustomerConflictError(f"merge is {record.state}, not active", record)
        await self._identities.delete_membership(record.absorbed, merge_id)
        undone = replace(
            record, state="undone", undone_by=actor, undone_at=self._clock(), undo_note=note
        )
        await self._identities.save_merge(undone)
        self._metrics.merges.labels(record.reason, "undone").inc()
        log.info("customers unmerged", merge_id=merge_id)
        return undone

    async def link_profile(
        self, customer_id: str, profile: Profile, *, actor: str, note: str | None = None
    ) -> ProfileOutcome:
        """Add a CRM profile to a customer and merge whoever the profile shows to be the
        same person, with the linking precedence (see ``linking``)."""
        if (await self.require(customer_id)).erased_at is not None:
            raise CustomerConflictError(f"customer {customer_id} was erased")
        target = await self.root_of(customer_id)
        evidence: list[Evidence] = []
        for key, rule in profile.claim_keys():
            holder = await self._identities.get_profile_key(key)
            owners = [holder] if holder is not None else []
            for identity in identities_for_profile_key(key):
                record = await self._identities.get_identity(identity)
                # An identity made by unauthenticated mail proves nothing about who wrote.
                if record is not None and record.linked_by != UNAUTHENTICATED:
                    owners.append(record.customer_id)
            evidence += [Evidence(rule, key, await self.root_of(owner)) for owner in owners]
        roots = {target} | {e.owner for e in evidence}
        plan = plan_profile(
            target, profile, evidence, {root: await self.external_ids(root) for root in roots}
        )
        if plan.rejected is not None:
            raise CustomerConflictError(plan.rejected)
        merges: list[MergeRecord] = []
        refusals = list(plan.refusals)
        for planned in plan.merges:
            try:
                merges.append(await self._merge_planned(planned, actor, note))
            except CustomerConflictError as error:
                refusals.append(
                    Refusal(planned.absorbed, planned.reason, planned.ids, error.reason)
                )
        for refusal in plan.refusals:
            self._metrics.merges.labels(refusal.rule, "refused").inc()
        for key in plan.claims:
            await self._identities.claim_profile_key(key, plan.anchor)
        anchor = await self.require(plan.anchor)
        combined = Profile(
            external_id=profile.external_id or anchor.profile.external_id,
            verified_emails=tuple(
                dict.fromkeys(anchor.profile.verified_emails + profile.verified_emails)
            ),
            phones=tuple(dict.fromkeys(anchor.profile.phones + profile.phones)),
            tier=profile.tier or anchor.profile.tier,
        )
        await self._identities.save_profile(plan.anchor, combined)
        return ProfileOutcome(plan.anchor, combined, tuple(merges), tuple(refusals))

    async def _merge_planned(
        self, planned: PlannedMerge, actor: str, note: str | None
    ) -> MergeRecord:
        if await self.root_of(planned.absorbed) == await self.root_of(planned.survivor):
            raise CustomerConflictError("already the same customer")
        return await self.merge(
            planned.survivor,
            planned.absorbed,
            actor=actor,
            note=note,
            reason=planned.reason,
            ids=planned.ids,
        )

    # ----------------------------------------------------------------------- erasure

    async def erase(self, customer_id: str, *, actor: str, reason: str) -> ErasureRecord:
        """Erase the personal data of ``customer_id``'s customer (its root's whole group).

        Idempotent in effect: erasing again finds nothing more to remove. Raises
        ``CustomerNotFoundError``.
        """
        await self.require(customer_id)
        root = await self.root_of(customer_id)
        members = await self.group_of(root)
        now = self._clock()
        record = ErasureRecord(
            erasure_id=new_id("er"),
            customer_id=root,
            members=tuple(members),
            by=actor,
            reason=reason,
            requested_at=now,
        )
        await self._identities.save_erasure(record)
        counts = {
            "identities": await self._identities.delete_identities(members),
            "profile_keys": await self._identities.delete_profile_keys(members),
            "merge_records": await self._identities.redact_merges(members),
        }
        await self._identities.erase_customers(members, record.erasure_id, now)
        # Conversations are marked erased first: the activity recorder reads that mark
        # after each insert, so an item stored while this runs is redacted by one of us.
        counts |= await self._timeline.erase(members)
        counts |= await self._activity.erase(members)
        counts["raw_messages"] = await erase_raw_mail(self._timeline, self._raw_mail, members)
        await self._publisher.publish_all(
            [
                Outgoing(
                    topic=CUSTOMER_MESSAGES,
                    key=member,
                    event=CustomerErased(customer_id=member, erasure_id=record.erasure_id, at=now),
                    event_id=f"{record.erasure_id}:{member}",
                    time=now,
                )
                for member in members
            ]
        )
        done = replace(record, completed_at=self._clock(), counts=counts)
        await self._identities.save_erasure(done)
        self._metrics.erasures.labels("requested").inc()
        log.info("customer erased", erasure_id=record.erasure_id, customer_id=root, **counts)
        return done
