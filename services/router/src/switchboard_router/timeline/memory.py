"""In-memory stores for unit tests of identity resolution and the timeline (checked
against the MongoDB adapters by the shared contract suites). They hold the same
documents the MongoDB stores hold."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from switchboard_common.mongo import Document
from switchboard_router.timeline.documents import (
    CONVERSATION_ERASURE,
    MESSAGE_ERASURE,
    conversation_state,
    placement_of,
    state_document,
    state_from,
)
from switchboard_router.timeline.linking import Profile
from switchboard_router.timeline.ports import (
    Claim,
    ConversationWrite,
    CustomerRecord,
    ErasureRecord,
    IdentityRecord,
    Membership,
    MergeRecord,
    Page,
)
from switchboard_router.timeline.threading import CustomerState, Placement


class InMemoryIdentityStore:
    """``IdentityStore`` in dictionaries."""

    def __init__(self) -> None:
        self.identities: dict[str, IdentityRecord] = {}
        self.customers: dict[str, CustomerRecord] = {}
        self.profile_keys: dict[str, str] = {}
        self.memberships: dict[str, Membership] = {}
        self.merges: dict[str, MergeRecord] = {}
        self.erasures: dict[str, ErasureRecord] = {}

    async def get_identity(self, identity: str) -> IdentityRecord | None:
        return self.identities.get(identity)

    async def get_identities(self, identities: Sequence[str]) -> dict[str, IdentityRecord]:
        return {i: self.identities[i] for i in identities if i in self.identities}

    async def claim_identity(self, record: IdentityRecord) -> IdentityRecord:
        return self.identities.setdefault(record.identity, record)

    async def claim_identities(
        self, records: Sequence[IdentityRecord]
    ) -> dict[str, IdentityRecord]:
        return {r.identity: self.identities.setdefault(r.identity, r) for r in records}

    async def create_customers(self, records: Sequence[CustomerRecord]) -> None:
        for record in records:
            self.customers.setdefault(record.customer_id, record)

    async def identities_of(self, customer_ids: Sequence[str]) -> list[IdentityRecord]:
        wanted = set(customer_ids)
        found = [r for r in self.identities.values() if r.customer_id in wanted]
        return sorted(found, key=lambda r: r.identity)

    async def delete_identities(self, customer_ids: Sequence[str]) -> int:
        doomed = [r.identity for r in await self.identities_of(customer_ids)]
        for identity in doomed:
            del self.identities[identity]
        return len(doomed)

    async def get_customer(self, customer_id: str) -> CustomerRecord | None:
        return self.customers.get(customer_id)

    async def get_customers(self, customer_ids: Sequence[str]) -> dict[str, CustomerRecord]:
        return {c: self.customers[c] for c in customer_ids if c in self.customers}

    async def create_customer(self, record: CustomerRecord) -> bool:
        if record.customer_id in self.customers:
            return False
        self.customers[record.customer_id] = record
        return True

    async def save_profile(self, customer_id: str, profile: Profile) -> None:
        current = self.customers.get(customer_id)
        if current is not None:
            self.customers[customer_id] = replace(current, profile=profile)

    async def erase_customers(
        self, customer_ids: Sequence[str], erasure_id: str, at: datetime
    ) -> None:
        for customer_id in customer_ids:
            current = self.customers.get(customer_id)
            if current is not None:
                self.customers[customer_id] = replace(
                    current,
                    display_name=None,
                    profile=Profile(),
                    erased_at=at,
                    erasure_id=erasure_id,
                )

    async def get_profile_key(self, key: str) -> str | None:
        return self.profile_keys.get(key)

    async def get_profile_keys(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self.profile_keys[k] for k in keys if k in self.profile_keys}

    async def claim_profile_key(self, key: str, customer_id: str) -> str:
        return self.profile_keys.setdefault(key, customer_id)

    async def delete_profile_keys(self, customer_ids: Sequence[str]) -> int:
        wanted = set(customer_ids)
        doomed = [k for k, owner in self.profile_keys.items() if owner in wanted]
        for key in doomed:
            del self.profile_keys[key]
        return len(doomed)

    async def get_membership(self, absorbed: str) -> Membership | None:
        return self.memberships.get(absorbed)

    async def get_memberships(self, absorbed: Sequence[str]) -> dict[str, Membership]:
        return {a: self.memberships[a] for a in absorbed if a in self.memberships}

    async def claim_membership(self, membership: Membership) -> Membership:
        return self.memberships.setdefault(membership.absorbed, membership)

    async def delete_membership(self, absorbed: str, merge_id: str) -> bool:
        current = self.memberships.get(absorbed)
        if current is None or current.merge_id != merge_id:
            return False
        del self.memberships[absorbed]
        return True

    async def absorbed_by(self, survivor: str) -> list[Membership]:
        found = [m for m in self.memberships.values() if m.survivor == survivor]
        return sorted(found, key=lambda m: (m.at, m.absorbed))

    async def save_merge(self, record: MergeRecord) -> None:
        self.merges[record.merge_id] = record

    async def get_merge(self, merge_id: str) -> MergeRecord | None:
        return self.merges.get(merge_id)

    async def merges_of(self, customer_ids: Sequence[str]) -> list[MergeRecord]:
        wanted = set(customer_ids)
        found = [m for m in self.merges.values() if {m.survivor, m.absorbed} & wanted]
        return sorted(found, key=lambda m: (m.at, m.merge_id))

    async def redact_merges(self, customer_ids: Sequence[str]) -> int:
        touched = [m for m in await self.merges_of(customer_ids) if m.ids]
        for merge in touched:
            self.merges[merge.merge_id] = replace(merge, ids=())
        return len(touched)

    async def save_erasure(self, record: ErasureRecord) -> None:
        self.erasures[record.erasure_id] = record

    async def get_erasure(self, erasure_id: str) -> ErasureRecord | None:
        return self.erasures.get(erasure_id)


class InMemoryRawMail:
    """``RawMail`` as a set of references."""

    def __init__(self, *refs: str) -> None:
        self.refs = set(refs)

    async def erase(self, raw_refs: Sequence[str]) -> int:
        found = self.refs & set(raw_refs)
        self.refs -= found
        return len(found)


class InMemoryTimelineStore:
    """``TimelineStore`` in dictionaries of documents."""

    def __init__(self) -> None:
        self.states: dict[str, Document] = {}
        self.claims: dict[str, Claim] = {}
        self.messages: dict[str, Document] = {}
        self.conversations: dict[str, Document] = {}
        self.refs: dict[str, Document] = {}

    async def load_state(self, customer_id: str) -> CustomerState | None:
        document = self.states.get(customer_id)
        return None if document is None else state_from(copy.deepcopy(document))

    async def load_states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        return {
            c: state_from(copy.deepcopy(self.states[c])) for c in customer_ids if c in self.states
        }

    async def save_states(
        self, states: Sequence[CustomerState], at: datetime, created: Collection[str] = ()
    ) -> None:
        del created  # an insert and a replacement end the same
        for state in states:
            self.states[state.customer_id] = state_document(state, at)

    async def claim_threads(self, claims: Sequence[Claim]) -> dict[str, str]:
        return {c.claim_id: self.claims.setdefault(c.claim_id, c).conversation_id for c in claims}

    async def get_claim(self, claim_id: str) -> Claim | None:
        return self.claims.get(claim_id)

    async def insert_messages(self, documents: Sequence[Document]) -> set[str]:
        existing: set[str] = set()
        for document in documents:
            if document["_id"] in self.messages:
                existing.add(document["_id"])
            else:
                self.messages[document["_id"]] = copy.deepcopy(document)
        return existing

    async def replace_messages(self, documents: Sequence[Document]) -> None:
        for document in documents:
            self.messages[document["_id"]] = copy.deepcopy(document)

    async def get_placements(self, message_ids: Sequence[str]) -> dict[str, Placement]:
        return {i: placement_of(self.messages[i]) for i in message_ids if i in self.messages}

    async def save_conversations(self, writes: Sequence[ConversationWrite]) -> None:
        for write in writes:
            key = write.conversation.conversation_id
            document = self.conversations.get(key)
            if document is None:
                document = {"_id": key, **copy.deepcopy(write.opening)}
                self.conversations[key] = document
            document.update(conversation_state(write.conversation))

    async def get_conversation(self, conversation_id: str) -> Document | None:
        document = self.conversations.get(conversation_id)
        return None if document is None else copy.deepcopy(document)

    async def get_conversations(self, conversation_ids: Sequence[str]) -> dict[str, Document]:
        return {
            i: copy.deepcopy(self.conversations[i])
            for i in conversation_ids
            if i in self.conversations
        }

    async def insert_refs(self, refs: Sequence[tuple[str, str, str]]) -> None:
        for customer_id, message_id, conversation_id in refs:
            self.refs.setdefault(
                f"{customer_id}|{message_id}",
                {"customer_id": customer_id, "conversation_id": conversation_id},
            )

    async def get_refs(self, customer_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for message_id in message_ids:
            document = self.refs.get(f"{customer_id}|{message_id}")
            if document is not None:
                found[message_id] = document["conversation_id"]
        return found

    async def get_refs_of(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
        found = {c: await self.get_refs(c, ids) for c, ids in wanted.items()}
        return {c: refs for c, refs in found.items() if refs}

    async def timeline(self, customer_ids: Sequence[str], page: Page) -> list[Document]:
        wanted = set(customer_ids)
        found = (d for d in self.messages.values() if d["customer_id"] in wanted)
        return page.of(found, "received_at")

    async def conversation_messages(self, conversation_id: str, page: Page) -> list[Document]:
        found = (d for d in self.messages.values() if d["conversation_id"] == conversation_id)
        return page.of(found, "received_at")

    async def count_messages(self, conversation_id: str) -> int:
        return sum(1 for d in self.messages.values() if d["conversation_id"] == conversation_id)

    async def raw_refs(self, customer_ids: Sequence[str], limit: int) -> dict[str, str]:
        wanted = set(customer_ids)
        found = [
            d for d in self.messages.values() if d["customer_id"] in wanted and d.get("raw_ref")
        ]
        return {d["_id"]: d["raw_ref"] for d in found[:limit]}

    async def forget_raw_refs(self, message_ids: Sequence[str]) -> None:
        for message_id in message_ids:
            if message_id in self.messages:
                self.messages[message_id]["raw_ref"] = None

    async def erase(self, customer_ids: Sequence[str]) -> dict[str, int]:
        wanted = set(customer_ids)
        messages = [d for d in self.messages.values() if d["customer_id"] in wanted]
        for document in messages:
            document.update(copy.deepcopy(MESSAGE_ERASURE))
        conversations = [d for d in self.conversations.values() if d["customer_id"] in wanted]
        for document in conversations:
            document.update(copy.deepcopy(CONVERSATION_ERASURE))
        refs = [k for k, d in self.refs.items() if d["customer_id"] in wanted]
        for key in refs:
            del self.refs[key]
        claims = [k for k, c in self.claims.items() if c.customer_id in wanted]
        for key in claims:
            del self.claims[key]
        return {
            "messages": len(messages),
            "conversations": len(conversations),
            "email_references": len(refs),
            "thread_claims": len(claims),
        }
