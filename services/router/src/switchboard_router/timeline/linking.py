"""Which customers are one person: the linking rules and their precedence (pure).

Evidence that two customers are one person, strongest first:

1. an explicit **external id** (a CRM record id) — the customer holding it is the anchor;
2. a **verified email** of a profile that another customer's email identity uses;
3. a **phone** of a profile that another customer's WhatsApp identity uses.

Two customers are never merged when both carry external ids and those disagree: a CRM
says they are different people, whatever else they share. A refused link is reported
(and recorded by the caller), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from switchboard_router.timeline.identity import IdentityError, normalise_email, normalise_phone

Rule = Literal["external_id", "verified_email", "phone"]
MergeReason = Literal["external_id", "verified_email", "phone", "manual"]
RULE_RANK: dict[str, int] = {"external_id": 0, "verified_email": 1, "phone": 2}


@dataclass(frozen=True)
class Profile:
    """What a CRM (or an operator) knows about a customer."""

    external_id: str | None = None
    verified_emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    tier: str | None = None

    @classmethod
    def normalised(
        cls,
        *,
        external_id: str | None,
        verified_emails: Iterable[str],
        phones: Iterable[str],
        tier: str | None,
    ) -> Profile:
        """Lower-cased emails and E.164 phones, deduplicated in order; raises
        ``IdentityError`` naming the bad value's kind."""
        emails = tuple(dict.fromkeys(normalise_email(e) for e in verified_emails))
        numbers = tuple(dict.fromkeys(normalise_phone(p) for p in phones))
        external = external_id.strip() if external_id else None
        if external is not None and not external:
            raise IdentityError("external_id must not be blank")
        return cls(external, emails, numbers, tier.strip() if tier else None)

    def claim_keys(self) -> list[tuple[str, Rule]]:
        """The profile keys this profile claims, strongest rule first."""
        keys: list[tuple[str, Rule]] = []
        if self.external_id:
            keys.append((f"external:{self.external_id}", "external_id"))
        keys += [(f"email:{e}", "verified_email") for e in self.verified_emails]
        keys += [(f"phone:{p}", "phone") for p in self.phones]
        return keys


@dataclass(frozen=True)
class Evidence:
    """A profile key (or the identity behind it) already belongs to ``owner`` (a root)."""

    rule: Rule
    key: str
    owner: str


@dataclass(frozen=True)
class PlannedMerge:
    survivor: str
    absorbed: str
    reason: Rule
    #: The profile keys that showed the two are one person.
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Refusal:
    customer_id: str
    rule: Rule
    ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ProfilePlan:
    """What setting a profile does: who ends up holding it, who merges into whom, what is
    refused and which keys the anchor claims."""

    anchor: str
    merges: tuple[PlannedMerge, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    claims: tuple[str, ...] = ()
    #: Set when the whole request is refused (nothing is changed).
    rejected: str | None = None
    external_ids: frozenset[str] = field(default_factory=frozenset)


def external_id_conflict(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two groups whose external ids disagree: both have some and they share none."""
    return bool(a) and bool(b) and not (a & b)


def plan_profile(
    target: str,
    profile: Profile,
    evidence: Sequence[Evidence],
    external_ids: Mapping[str, frozenset[str]],
) -> ProfilePlan:
    """Apply ``profile`` to customer ``target`` (a root).

    ``evidence`` lists the roots already holding one of the profile's keys (or an identity
    behind a key); ``external_ids`` gives each involved root's external ids (its whole
    group's). The plan is deterministic: merges in rule order, then customer id.
    """
    own = external_ids.get(target, frozenset())
    if profile.external_id and own and profile.external_id not in own:
        return ProfilePlan(
            anchor=target,
            rejected=(
                "the customer already has another external id; unmerge or erase it before "
                "linking a different CRM record"
            ),
        )
    anchor = target
    by_owner: dict[str, list[Evidence]] = {}
    for item in evidence:
        if item.owner != target:
            by_owner.setdefault(item.owner, []).append(item)
    holder = next(
        (e.owner for e in evidence if e.rule == "external_id" and e.owner != target), None
    )
    merges: list[PlannedMerge] = []
    refusals: list[Refusal] = []
    group_ids = set(own) | ({profile.external_id} if profile.external_id else set())
    if holder is not None:
        # The external id already names another customer: that customer is the person;
        # the target joins it.
        holder_ids = external_ids.get(holder, frozenset())
        if external_id_conflict(frozenset(group_ids), holder_ids):
            return ProfilePlan(
                anchor=target,
                rejected="the external id is held by a customer with another external id",
            )
        anchor = holder
        merges.append(
            PlannedMerge(
                holder,
                target,
                "external_id",
                tuple(sorted(e.key for e in by_owner.pop(holder))),
            )
        )
        group_ids |= holder_ids

    def strength(owner: str) -> tuple[int, str]:
        return (min(RULE_RANK[e.rule] for e in by_owner[owner]), owner)

    for owner in sorted(by_owner, key=strength):
        if owner == anchor:
            continue
        items = by_owner[owner]
        rule = min((e.rule for e in items), key=RULE_RANK.__getitem__)
        ids = tuple(sorted(e.key for e in items))
        theirs = external_ids.get(owner, frozenset())
        if external_id_conflict(frozenset(group_ids), theirs):
            refusals.append(Refusal(owner, rule, ids, "external ids disagree"))
            continue
        merges.append(PlannedMerge(anchor, owner, rule, ids))
        group_ids |= theirs
    refused_keys = {key for r in refusals for key in r.ids}
    claims = tuple(key for key, _ in profile.claim_keys() if key not in refused_keys)
    return ProfilePlan(
        anchor=anchor,
        merges=tuple(merges),
        refusals=tuple(refusals),
        claims=claims,
        external_ids=frozenset(group_ids),
    )


def merge_refusal(
    survivor: str,
    absorbed: str,
    survivor_ids: frozenset[str],
    absorbed_ids: frozenset[str],
) -> str | None:
    """Why two roots cannot be merged, or None when they can."""
    if survivor == absorbed:
        return "already the same customer"
    if external_id_conflict(survivor_ids, absorbed_ids):
        return "external ids disagree"
    return None
