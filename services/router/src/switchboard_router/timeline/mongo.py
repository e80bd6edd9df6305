"""MongoDB adapters of the timeline stores (MongoDB in production, FerretDB v1 in tests).

Hot-path reads and writes address documents by ``_id`` only (the one indexed filter on
FerretDB v1); batches are bulk writes; exclusivity is an insert with a unique ``_id``.
The secondary indexes below serve the read API and admin commands (MongoDB uses them;
on FerretDB v1 those queries scan, which only the read path does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from pymongo import ASCENDING, IndexModel, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from switchboard_common.bulk import find_by_ids, insert_new
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

#: Every collection identity resolution and the timeline own, and the indexes its read queries need.
INDEXES: dict[str, list[IndexModel]] = {
    "customers": [],
    "customer_identities": [IndexModel([("customer_id", ASCENDING)])],
    "customer_profile_keys": [IndexModel([("customer_id", ASCENDING)])],
    "customer_memberships": [IndexModel([("survivor", ASCENDING)])],
    "customer_merges": [
        IndexModel([("survivor", ASCENDING), ("at", ASCENDING)]),
        IndexModel([("absorbed", ASCENDING), ("at", ASCENDING)]),
    ],
    "customer_erasures": [],
    "timeline_state": [],
    "timeline_thread_claims": [IndexModel([("customer_id", ASCENDING)])],
    "timeline_messages": [
        IndexModel([("customer_id", ASCENDING), ("received_at", ASCENDING), ("_id", ASCENDING)]),
        IndexModel(
            [("conversation_id", ASCENDING), ("received_at", ASCENDING), ("_id", ASCENDING)]
        ),
    ],
    "timeline_conversations": [IndexModel([("customer_id", ASCENDING)])],
    "timeline_email_refs": [IndexModel([("customer_id", ASCENDING)])],
}


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Create the collections' secondary indexes (idempotent; run at start-up).

    One index per command: FerretDB v1.24 drops the connection (a server panic) when one
    ``createIndexes`` names several indexes that all exist already.
    """
    for name, indexes in INDEXES.items():
        for index in indexes:
            await db[name].create_indexes([index])


async def _by_ids(collection: AsyncCollection[Document], ids: Sequence[str]) -> dict[str, Document]:
    """Documents by ``_id``: one indexed ``$in`` read (the project's FerretDB build
    pushes ``$in`` on ``_id`` down to the index, as MongoDB does)."""
    return {str(k): d for k, d in (await find_by_ids(collection, ids)).items()}


# --------------------------------------------------------------------------- identities


async def find_page(
    collection: AsyncCollection[Document], query: Document, page: Page, by: str
) -> list[Document]:
    """A page of ``query``'s documents in the order of the time field ``by``, then
    ``_id`` (messages, activity items): one bounded read."""
    cursor = collection.find(page.query(query, by)).sort([(by, ASCENDING), ("_id", ASCENDING)])
    return await cursor.limit(page.limit).to_list()


def of_customers(customer_ids: Sequence[str]) -> Document:
    """The filter on ``customer_id`` for a customer and those merged into it."""
    ids = list(dict.fromkeys(customer_ids))
    return {"customer_id": ids[0] if len(ids) == 1 else {"$in": ids}}


def _customer(document: Document) -> CustomerRecord:
    profile = document.get("profile") or {}
    return CustomerRecord(
        customer_id=document["_id"],
        created_at=document["created_at"],
        display_name=document.get("display_name"),
        profile=Profile(
            external_id=profile.get("external_id"),
            verified_emails=tuple(profile.get("verified_emails") or ()),
            phones=tuple(profile.get("phones") or ()),
            tier=profile.get("tier"),
        ),
        erased_at=document.get("erased_at"),
        erasure_id=document.get("erasure_id"),
    )


def _profile(profile: Profile) -> Document:
    return {
        "external_id": profile.external_id,
        "verified_emails": list(profile.verified_emails),
        "phones": list(profile.phones),
        "tier": profile.tier,
    }


def _identity(document: Document) -> IdentityRecord:
    return IdentityRecord(
        identity=document["_id"],
        customer_id=document["customer_id"],
        linked_by=document["linked_by"],
        created_at=document["created_at"],
    )


def _membership(document: Document) -> Membership:
    return Membership(
        absorbed=document["_id"],
        survivor=document["survivor"],
        merge_id=document["merge_id"],
        at=document["at"],
    )


def _merge(document: Document) -> MergeRecord:
    fields = {k: v for k, v in document.items() if k != "_id"}
    return MergeRecord(merge_id=document["_id"], **{**fields, "ids": tuple(fields["ids"])})


class MongoIdentityStore:
    """``IdentityStore`` on MongoDB."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.identities = db["customer_identities"]
        self.customers = db["customers"]
        self.profile_keys = db["customer_profile_keys"]
        self.memberships = db["customer_memberships"]
        self.merges = db["customer_merges"]
        self.erasures = db["customer_erasures"]

    async def get_identity(self, identity: str) -> IdentityRecord | None:
        document = await self.identities.find_one({"_id": identity})
        return None if document is None else _identity(document)

    async def get_identities(self, identities: Sequence[str]) -> dict[str, IdentityRecord]:
        found = await _by_ids(self.identities, identities)
        return {key: _identity(document) for key, document in found.items()}

    async def claim_identity(self, record: IdentityRecord) -> IdentityRecord:
        try:
            await self.identities.insert_one(
                {
                    "_id": record.identity,
                    "customer_id": record.customer_id,
                    "linked_by": record.linked_by,
                    "created_at": record.created_at,
                }
            )
        except DuplicateKeyError:
            winner = await self.get_identity(record.identity)
            if winner is None:  # deleted (erased) between the two calls: try again
                return await self.claim_identity(record)
            return winner
        return record

    async def claim_identities(
        self, records: Sequence[IdentityRecord]
    ) -> dict[str, IdentityRecord]:
        unique = list({r.identity: r for r in reversed(records)}.values())
        taken = await insert_new(
            self.identities,
            [
                {
                    "_id": r.identity,
                    "customer_id": r.customer_id,
                    "linked_by": r.linked_by,
                    "created_at": r.created_at,
                }
                for r in unique
            ],
        )
        result = {r.identity: r for r in unique if r.identity not in taken}
        found = await _by_ids(self.identities, sorted(taken))
        for record in unique:
            if record.identity in taken:
                winner = found.get(record.identity)
                result[record.identity] = (
                    _identity(winner) if winner else await self.claim_identity(record)
                )
        return result

    async def create_customers(self, records: Sequence[CustomerRecord]) -> None:
        await insert_new(
            self.customers,
            [
                {
                    "_id": r.customer_id,
                    "created_at": r.created_at,
                    "display_name": r.display_name,
                    "profile": _profile(r.profile),
                    "erased_at": r.erased_at,
                    "erasure_id": r.erasure_id,
                }
                for r in records
            ],
        )

    async def identities_of(self, customer_ids: Sequence[str]) -> list[IdentityRecord]:
        cursor = self.identities.find({"customer_id": {"$in": list(customer_ids)}})
        found = [_identity(d) async for d in cursor]
        return sorted(found, key=lambda r: r.identity)

    async def delete_identities(self, customer_ids: Sequence[str]) -> int:
        result = await self.identities.delete_many({"customer_id": {"$in": list(customer_ids)}})
        return result.deleted_count

    async def get_customer(self, customer_id: str) -> CustomerRecord | None:
        document = await self.customers.find_one({"_id": customer_id})
        return None if document is None else _customer(document)

    async def get_customers(self, customer_ids: Sequence[str]) -> dict[str, CustomerRecord]:
        found = await _by_ids(self.customers, customer_ids)
        return {key: _customer(document) for key, document in found.items()}

    async def create_customer(self, record: CustomerRecord) -> bool:
        try:
            await self.customers.insert_one(
                {
                    "_id": record.customer_id,
                    "created_at": record.created_at,
                    "display_name": record.display_name,
                    "profile": _profile(record.profile),
                    "erased_at": record.erased_at,
                    "erasure_id": record.erasure_id,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def save_profile(self, customer_id: str, profile: Profile) -> None:
        await self.customers.update_one(
            {"_id": customer_id}, {"$set": {"profile": _profile(profile)}}
        )

    async def erase_customers(
        self, customer_ids: Sequence[str], erasure_id: str, at: datetime
    ) -> None:
        for customer_id in customer_ids:
            await self.customers.update_one(
                {"_id": customer_id},
                {
                    "$set": {
                        "display_name": None,
                        "profile": _profile(Profile()),
                        "erased_at": at,
                        "erasure_id": erasure_id,
                    }
                },
            )

    async def get_profile_key(self, key: str) -> str | None:
        document = await self.profile_keys.find_one({"_id": key})
        return None if document is None else str(document["customer_id"])

    async def get_profile_keys(self, keys: Sequence[str]) -> dict[str, str]:
        found = await _by_ids(self.profile_keys, keys)
        return {key: str(document["customer_id"]) for key, document in found.items()}

    async def claim_profile_key(self, key: str, customer_id: str) -> str:
        try:
            await self.profile_keys.insert_one({"_id": key, "customer_id": customer_id})
        except DuplicateKeyError:
            holder = await self.get_profile_key(key)
            return customer_id if holder is None else holder
        return customer_id

    async def delete_profile_keys(self, customer_ids: Sequence[str]) -> int:
        result = await self.profile_keys.delete_many({"customer_id": {"$in": list(customer_ids)}})
        return result.deleted_count

    async def get_membership(self, absorbed: str) -> Membership | None:
        document = await self.memberships.find_one({"_id": absorbed})
        return None if document is None else _membership(document)

    async def get_memberships(self, absorbed: Sequence[str]) -> dict[str, Membership]:
        found = await _by_ids(self.memberships, absorbed)
        return {key: _membership(document) for key, document in found.items()}

    async def claim_membership(self, membership: Membership) -> Membership:
        try:
            await self.memberships.insert_one(
                {
                    "_id": membership.absorbed,
                    "survivor": membership.survivor,
                    "merge_id": membership.merge_id,
                    "at": membership.at,
                }
            )
        except DuplicateKeyError:
            winner = await self.get_membership(membership.absorbed)
            return membership if winner is None else winner
        return membership

    async def delete_membership(self, absorbed: str, merge_id: str) -> bool:
        current = await self.get_membership(absorbed)
        if current is None or current.merge_id != merge_id:
            return False
        result = await self.memberships.delete_one({"_id": absorbed})
        return result.deleted_count == 1

    async def absorbed_by(self, survivor: str) -> list[Membership]:
        cursor = self.memberships.find({"survivor": survivor})
        found = [_membership(d) async for d in cursor]
        return sorted(found, key=lambda m: (m.at, m.absorbed))

    async def save_merge(self, record: MergeRecord) -> None:
        fields = dataclasses.asdict(record)
        merge_id = fields.pop("merge_id")
        fields["ids"] = list(record.ids)
        await self.merges.replace_one({"_id": merge_id}, fields, upsert=True)

    async def get_merge(self, merge_id: str) -> MergeRecord | None:
        document = await self.merges.find_one({"_id": merge_id})
        return None if document is None else _merge(document)

    async def merges_of(self, customer_ids: Sequence[str]) -> list[MergeRecord]:
        ids = list(customer_ids)
        cursor = self.merges.find({"$or": [{"survivor": {"$in": ids}}, {"absorbed": {"$in": ids}}]})
        found = [_merge(d) async for d in cursor]
        return sorted(found, key=lambda m: (m.at, m.merge_id))

    async def redact_merges(self, customer_ids: Sequence[str]) -> int:
        ids = list(customer_ids)
        result = await self.merges.update_many(
            {"$or": [{"survivor": {"$in": ids}}, {"absorbed": {"$in": ids}}]},
            {"$set": {"ids": []}},
        )
        return result.modified_count

    async def save_erasure(self, record: ErasureRecord) -> None:
        fields = dataclasses.asdict(record)
        erasure_id = fields.pop("erasure_id")
        fields["members"] = list(record.members)
        await self.erasures.replace_one({"_id": erasure_id}, fields, upsert=True)

    async def get_erasure(self, erasure_id: str) -> ErasureRecord | None:
        document = await self.erasures.find_one({"_id": erasure_id})
        if document is None:
            return None
        fields = {k: v for k, v in document.items() if k != "_id"}
        fields["members"] = tuple(fields["members"])
        return ErasureRecord(erasure_id=erasure_id, **fields)


# --------------------------------------------------------------------------- timeline


def _claim(document: Document) -> Claim:
    return Claim(
        claim_id=document["_id"],
        conversation_id=document["conversation_id"],
        message_id=document["message_id"],
        customer_id=document["customer_id"],
    )


class MongoTimelineStore:
    """``TimelineStore`` on MongoDB."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.states = db["timeline_state"]
        self.claims = db["timeline_thread_claims"]
        self.messages = db["timeline_messages"]
        self.conversations = db["timeline_conversations"]
        self.refs = db["timeline_email_refs"]

    async def load_state(self, customer_id: str) -> CustomerState | None:
        document = await self.states.find_one({"_id": customer_id})
        return None if document is None else state_from(document)

    async def load_states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        found = await _by_ids(self.states, customer_ids)
        return {key: state_from(document) for key, document in found.items()}

    async def save_states(
        self, states: Sequence[CustomerState], at: datetime, created: Collection[str] = ()
    ) -> None:
        # Inserting is far cheaper than replacing on FerretDB v1 (no read-modify-write);
        # a state that exists after all (a replay) is replaced like the others.
        fresh = [s for s in states if s.customer_id in created]
        taken = await insert_new(self.states, [state_document(s, at) for s in fresh])
        rest = [s for s in states if s.customer_id not in created or s.customer_id in taken]
        if rest:
            await self.states.bulk_write(
                [
                    ReplaceOne({"_id": s.customer_id}, state_document(s, at), upsert=True)
                    for s in rest
                ],
                ordered=False,
            )

    async def claim_threads(self, claims: Sequence[Claim]) -> dict[str, str]:
        unique = list({c.claim_id: c for c in claims}.values())
        taken = await insert_new(
            self.claims,
            [
                {
                    "_id": c.claim_id,
                    "conversation_id": c.conversation_id,
                    "message_id": c.message_id,
                    "customer_id": c.customer_id,
                }
                for c in unique
            ],
        )
        result = {c.claim_id: c.conversation_id for c in unique if c.claim_id not in taken}
        for claim_id, document in (await _by_ids(self.claims, sorted(taken))).items():
            result[claim_id] = document["conversation_id"]
        return result

    async def get_claim(self, claim_id: str) -> Claim | None:
        document = await self.claims.find_one({"_id": claim_id})
        return None if document is None else _claim(document)

    async def insert_messages(self, documents: Sequence[Document]) -> set[str]:
        return {str(i) for i in await insert_new(self.messages, documents)}

    async def replace_messages(self, documents: Sequence[Document]) -> None:
        if documents:
            await self.messages.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in documents], ordered=False
            )

    async def get_placements(self, message_ids: Sequence[str]) -> dict[str, Placement]:
        found = await _by_ids(self.messages, message_ids)
        return {key: placement_of(document) for key, document in found.items()}

    async def save_conversations(self, writes: Sequence[ConversationWrite]) -> None:
        fresh = [w for w in writes if w.created]
        taken = await insert_new(
            self.conversations,
            [
                {
                    "_id": w.conversation.conversation_id,
                    **w.opening,
                    **conversation_state(w.conversation),
                }
                for w in fresh
            ],
        )
        writes = [w for w in writes if not w.created or w.conversation.conversation_id in taken]
        if writes:
            await self.conversations.bulk_write(
                [
                    UpdateOne(
                        {"_id": w.conversation.conversation_id},
                        {
                            "$set": conversation_state(w.conversation),
                            "$setOnInsert": w.opening,
                        },
                        upsert=True,
                    )
                    for w in writes
                ],
                ordered=False,
            )

    async def get_conversation(self, conversation_id: str) -> Document | None:
        return await self.conversations.find_one({"_id": conversation_id})

    async def get_conversations(self, conversation_ids: Sequence[str]) -> dict[str, Document]:
        return await _by_ids(self.conversations, conversation_ids)

    async def insert_refs(self, refs: Sequence[tuple[str, str, str]]) -> None:
        documents: dict[str, Document] = {}
        for customer_id, message_id, conversation_id in refs:
            key = f"{customer_id}|{message_id}"
            documents.setdefault(
                key, {"_id": key, "customer_id": customer_id, "conversation_id": conversation_id}
            )
        await insert_new(self.refs, list(documents.values()))

    async def get_refs(self, customer_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        return (await self.get_refs_of({customer_id: message_ids})).get(customer_id, {})

    async def get_refs_of(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
        keys = {
            f"{customer_id}|{message_id}": (customer_id, message_id)
            for customer_id, message_ids in wanted.items()
            for message_id in message_ids
        }
        found: dict[str, dict[str, str]] = {}
        for key, document in (await _by_ids(self.refs, list(keys))).items():
            customer_id, message_id = keys[key]
            found.setdefault(customer_id, {})[message_id] = document["conversation_id"]
        return found

    async def timeline(self, customer_ids: Sequence[str], page: Page) -> list[Document]:
        return await find_page(self.messages, of_customers(customer_ids), page, "received_at")

    async def conversation_messages(self, conversation_id: str, page: Page) -> list[Document]:
        query = {"conversation_id": conversation_id}
        return await find_page(self.messages, query, page, "received_at")

    async def count_messages(self, conversation_id: str) -> int:
        return await self.messages.count_documents({"conversation_id": conversation_id})

    async def raw_refs(self, customer_ids: Sequence[str], limit: int) -> dict[str, str]:
        query = {"customer_id": {"$in": list(customer_ids)}, "raw_ref": {"$ne": None}}
        cursor = self.messages.find(query, {"raw_ref": 1}).limit(limit)
        return {document["_id"]: document["raw_ref"] async for document in cursor}

    async def forget_raw_refs(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            await self.messages.update_many(
                {"_id": {"$in": list(message_ids)}}, {"$set": {"raw_ref": None}}
            )

    async def erase(self, customer_ids: Sequence[str]) -> dict[str, int]:
        scope = {"customer_id": {"$in": list(customer_ids)}}
        messages = await self.messages.update_many(scope, {"$set": MESSAGE_ERASURE})
        conversations = await self.conversations.update_many(scope, {"$set": CONVERSATION_ERASURE})
        refs = await self.refs.delete_many(scope)
        claims = await self.claims.delete_many(scope)
        return {
            "messages": messages.matched_count,
            "conversations": conversations.matched_count,
            "email_references": refs.deleted_count,
            "thread_claims": claims.deleted_count,
        }
