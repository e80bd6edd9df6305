"""The stores identity resolution and the timeline use: interfaces with a MongoDB and
an in-memory adapter.

One contract test suite (``tests/test_timeline_store_contract.py``,
``tests/test_identity_store_contract.py``) runs against both, so the fake cannot drift.

Exclusivity comes only from inserting a document whose ``_id`` names the exclusive thing
(an identity, a profile key, a membership, a thread claim): the one atomic primitive of
both MongoDB and FerretDB v1. Every write is idempotent.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from switchboard_common.mongo import Document
from switchboard_router.timeline.linking import MergeReason, Profile
from switchboard_router.timeline.threading import Conversation, CustomerState, Placement

# --------------------------------------------------------------------------- identity side


@dataclass(frozen=True)
class IdentityRecord:
    """An identity belongs to exactly one customer."""

    identity: str
    customer_id: str
    #: How it was linked: new, verified_email, phone, manual, or unauthenticated (a
    #: customer of its own, made by unauthenticated email; never linking evidence).
    linked_by: str
    created_at: datetime


@dataclass(frozen=True)
class CustomerRecord:
    customer_id: str
    created_at: datetime
    display_name: str | None = None
    profile: Profile = field(default_factory=Profile)
    erased_at: datetime | None = None
    erasure_id: str | None = None


@dataclass(frozen=True)
class Membership:
    """``absorbed`` is merged into ``survivor`` (one active membership per customer)."""

    absorbed: str
    survivor: str
    merge_id: str
    at: datetime


MergeState = Literal["active", "undone", "refused"]


@dataclass(frozen=True)
class MergeRecord:
    """Who merged whom, when, why and from which ids; kept after an unmerge."""

    merge_id: str
    survivor: str
    absorbed: str
    reason: MergeReason
    ids: tuple[str, ...]
    by: str
    at: datetime
    state: MergeState
    note: str | None = None
    undone_by: str | None = None
    undone_at: datetime | None = None
    undo_note: str | None = None


@dataclass(frozen=True)
class ErasureRecord:
    """The audit record of a GDPR erasure: ids and counts, never personal data."""

    erasure_id: str
    customer_id: str
    members: tuple[str, ...]
    by: str
    reason: str
    requested_at: datetime
    completed_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)


class IdentityStore(Protocol):
    """Identities, customers, profile keys, memberships, merges and erasures."""

    async def get_identity(self, identity: str) -> IdentityRecord | None: ...

    async def get_identities(self, identities: Sequence[str]) -> dict[str, IdentityRecord]:
        """The stored identities among ``identities`` (one read); unknown ones are missing."""
        ...

    async def claim_identity(self, record: IdentityRecord) -> IdentityRecord:
        """Insert the identity unless it exists; return the stored record (the winner's
        when another writer got there first). Atomic on both servers."""
        ...

    async def claim_identities(
        self, records: Sequence[IdentityRecord]
    ) -> dict[str, IdentityRecord]:
        """``claim_identity`` for many at once (one bulk insert): identity → the stored
        record. The first record of an identity in ``records`` is the one claimed."""
        ...

    async def create_customers(self, records: Sequence[CustomerRecord]) -> None:
        """Insert the customers that do not exist yet (one bulk insert)."""
        ...

    async def identities_of(self, customer_ids: Sequence[str]) -> list[IdentityRecord]: ...

    async def delete_identities(self, customer_ids: Sequence[str]) -> int: ...

    async def get_customer(self, customer_id: str) -> CustomerRecord | None: ...

    async def get_customers(self, customer_ids: Sequence[str]) -> dict[str, CustomerRecord]:
        """The stored customers among ``customer_ids`` (one read)."""
        ...

    async def create_customer(self, record: CustomerRecord) -> bool:
        """Insert a customer; False (and no change) if it exists."""
        ...

    async def save_profile(self, customer_id: str, profile: Profile) -> None: ...

    async def erase_customers(
        self, customer_ids: Sequence[str], erasure_id: str, at: datetime
    ) -> None:
        """Drop the customers' personal fields (display name, profile) and mark them."""
        ...

    async def get_profile_key(self, key: str) -> str | None: ...

    async def get_profile_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """Key → holder for the held keys among ``keys`` (one read)."""
        ...

    async def claim_profile_key(self, key: str, customer_id: str) -> str:
        """Give ``key`` to ``customer_id`` unless someone holds it; return the holder."""
        ...

    async def delete_profile_keys(self, customer_ids: Sequence[str]) -> int: ...

    async def get_membership(self, absorbed: str) -> Membership | None: ...

    async def get_memberships(self, absorbed: Sequence[str]) -> dict[str, Membership]:
        """The active memberships of the customers among ``absorbed`` (one read)."""
        ...

    async def claim_membership(self, membership: Membership) -> Membership:
        """Insert unless ``absorbed`` is already merged; return the stored membership."""
        ...

    async def delete_membership(self, absorbed: str, merge_id: str) -> bool: ...

    async def absorbed_by(self, survivor: str) -> list[Membership]: ...

    async def save_merge(self, record: MergeRecord) -> None: ...

    async def get_merge(self, merge_id: str) -> MergeRecord | None: ...

    async def merges_of(self, customer_ids: Sequence[str]) -> list[MergeRecord]:
        """Merges in which any of the customers took part, oldest first."""
        ...

    async def redact_merges(self, customer_ids: Sequence[str]) -> int:
        """Remove the ids (personal data) from merge records of these customers."""
        ...

    async def save_erasure(self, record: ErasureRecord) -> None: ...

    async def get_erasure(self, erasure_id: str) -> ErasureRecord | None: ...


# --------------------------------------------------------------------------- timeline side


@dataclass(frozen=True)
class Claim:
    """An exclusive claim: the conversation that opens a thread step."""

    claim_id: str
    conversation_id: str
    message_id: str
    customer_id: str


@dataclass(frozen=True)
class ConversationWrite:
    """A conversation's new threading state, plus fields fixed at opening."""

    customer_id: str
    conversation: Conversation
    opening: Document
    #: Opened in this batch: most likely not stored yet (an insert is cheapest).
    created: bool = False


@dataclass(frozen=True)
class Page:
    """Position after which a page starts: (time, id), in the order of a time field
    (messages: ``received_at``; timeline activity items: ``at``) then ``_id``."""

    after: tuple[datetime, str] | None
    limit: int

    def query(self, query: Document, by: str) -> Document:
        """``query`` narrowed to the documents after the position (the database side)."""
        if self.after is None:
            return query
        moment, last_id = self.after
        return {**query, "$or": [{by: {"$gt": moment}}, {by: moment, "_id": {"$gt": last_id}}]}

    def of(self, documents: Iterable[Document], by: str) -> list[Document]:
        """The page of ``documents`` (copies), as the database would give it (memory)."""
        ordered = sorted(documents, key=lambda d: (d[by], d["_id"]))
        if self.after is not None:
            ordered = [d for d in ordered if (d[by], d["_id"]) > self.after]
        return [copy.deepcopy(d) for d in ordered[: self.limit]]


class TimelineStore(Protocol):
    """Threading state, claims, messages, conversations and the Message-ID index."""

    async def load_state(self, customer_id: str) -> CustomerState | None: ...

    async def load_states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        """The stored states among ``customer_ids`` (one read); new customers are missing."""
        ...

    async def save_states(
        self, states: Sequence[CustomerState], at: datetime, created: Collection[str] = ()
    ) -> None:
        """Replace each customer's state (one writer per customer: the partition owner).
        ``created`` names customers whose state was never stored (inserted, cheaper)."""
        ...

    async def claim_threads(self, claims: Sequence[Claim]) -> dict[str, str]:
        """Insert every claim not yet made; return claim id → the conversation holding it
        (ours, or the one that got there first)."""
        ...

    async def get_claim(self, claim_id: str) -> Claim | None: ...

    async def insert_messages(self, documents: Sequence[Document]) -> set[str]:
        """Insert timeline entries; return the ids that were already stored (unchanged)."""
        ...

    async def replace_messages(self, documents: Sequence[Document]) -> None: ...

    async def get_placements(self, message_ids: Sequence[str]) -> dict[str, Placement]: ...

    async def save_conversations(self, writes: Sequence[ConversationWrite]) -> None: ...

    async def get_conversation(self, conversation_id: str) -> Document | None: ...

    async def get_conversations(self, conversation_ids: Sequence[str]) -> dict[str, Document]: ...

    async def insert_refs(self, refs: Sequence[tuple[str, str, str]]) -> None:
        """Remember (customer_id, Message-ID, conversation_id) triples; idempotent."""
        ...

    async def get_refs(self, customer_id: str, message_ids: Sequence[str]) -> dict[str, str]: ...

    async def get_refs_of(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
        """``get_refs`` for many customers (customer → Message-IDs) in one read:
        customer → Message-ID → conversation, for the Message-IDs found."""
        ...

    async def timeline(self, customer_ids: Sequence[str], page: Page) -> list[Document]:
        """Messages of the customers in (received_at, message_id) order after the page's
        position, at most ``page.limit``."""
        ...

    async def conversation_messages(self, conversation_id: str, page: Page) -> list[Document]: ...

    async def count_messages(self, conversation_id: str) -> int: ...

    async def erase(self, customer_ids: Sequence[str]) -> dict[str, int]:
        """Remove personal data filed under the customers: message text, subjects,
        senders and email references are dropped (the entries stay, as skeletons), the
        Message-ID index and thread claims are deleted. Idempotent. Returns counts.
        References to raw mail stay until ``forget_raw_refs`` (see ``raw_mail``)."""
        ...

    async def raw_refs(self, customer_ids: Sequence[str], limit: int) -> dict[str, str]:
        """message_id → ``raw_ref`` of at most ``limit`` of the customers' messages that
        still point at raw mail."""
        ...

    async def forget_raw_refs(self, message_ids: Sequence[str]) -> None:
        """Drop the messages' ``raw_ref`` (once the raw mail is deleted). Idempotent."""
        ...


class RawMail(Protocol):
    """The raw mail messages point at (``switchboard_common.raw_mail``)."""

    async def erase(self, raw_refs: Sequence[str]) -> int:
        """Delete the raw mail these references name; returns how many. Idempotent."""
        ...
