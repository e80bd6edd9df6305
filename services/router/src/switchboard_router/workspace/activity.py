"""Agent-side activity as timeline items (pure): one contract event → at most one item.

Each item type has exactly one source, so nothing shows twice (type: source → ``_id``):

- ``reply``: ``support.reply.requested``, the text an agent asked Switchboard to send
  → ``reply:<reply_id>``; or ``support.reply.sent`` *not* from a Switchboard service (a
  frontend that sends on its own; no text, no ``reply_id``) → ``sent:<key>``;
- ``acknowledgement`` / ``survey``: a ``ReplyDelivery`` marked ``automatic`` whose
  ``reply_id`` is ``ack:…`` / ``survey:…`` → ``reply:<reply_id>``;
- ``delivery``: ``support.delivery.updated``, one item per status of a reply
  → ``delivery:<reply_id>:<status>``;
- ``assignment``: ``support.conversation.queued|assigned|requeued|escalated``
  → ``assignment:<conversation_id>:<seq>``;
- ``transfer``: ``support.conversation.transferred`` → ``transfer:<key>`` (its ``ce_id``
  when it has no ``at``);
- ``resolved`` / ``reopened``: ``support.conversation.resolved|reopened``
  → ``resolved:<key>`` / ``reopened:<key>``;
- ``note``: ``support.note.added`` → ``note:<note_id>``.

Not items: the ``ReplyDelivery`` of an agent's reply (the request is the item, with the
same text), and ``support.reply.sent`` published by Switchboard's own sender once it
delivered a requested reply (the request is the ``reply`` item; the delivery shows as its
``sent`` status). Customer messages are the timeline's own entries, not made here.

``_id``s come from the event's natural key, so a redelivered event makes the same item
and storing it again changes nothing, even republished under another ``ce_id`` (a
frontend's retry). Where the key is the conversation, the time and who, ``<key>`` is a
digest of them (ids may hold any character, so joining them could collide).

Documents follow the FerretDB v1 rules of ``timeline.documents``: no ``.`` in field
names, no nested arrays (an assignment's free-form ``reason`` is kept as JSON text,
``reason_json``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Final, Literal

from switchboard_common.cloudevents import CloudEventAttributes, source_for
from switchboard_common.contract import (
    AssignmentDecision,
    ContractModel,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    DeliveryUpdated,
    NoteAdded,
    ReplyDelivery,
    ReplyRequested,
    ReplySent,
)
from switchboard_common.mongo import Document
from switchboard_router.timeline.documents import json_ready, ms

ItemType = Literal[
    "message",
    "reply",
    "acknowledgement",
    "survey",
    "assignment",
    "transfer",
    "resolved",
    "reopened",
    "note",
    "delivery",
]

#: Item types whose ``text`` is personal data (what an agent or Switchboard wrote to,
#: or about, the customer): erasure drops it.
TEXT_TYPES: Final = ("reply", "acknowledgement", "survey", "note")
#: ``ce_source`` prefix of Switchboard's own services.
SWITCHBOARD_SOURCE: Final = source_for("")


def _item(
    item_id: str, kind: ItemType, at: datetime, conversation_id: str, **fields: Any
) -> Document:
    return {
        "_id": item_id,
        "type": kind,
        "at": ms(at),
        "conversation_id": conversation_id,
        **fields,
    }


def _keyed(kind: ItemType | str, conversation_id: str, at: datetime, *who: str | None) -> str:
    """``<kind>:<digest>`` of an event's natural key: its conversation, its time (to the
    millisecond, as stored) and who did what."""
    key = json.dumps([conversation_id, ms(at).isoformat(), *who], separators=(",", ":"))
    return f"{kind}:{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def activity_item(event: ContractModel, attributes: CloudEventAttributes) -> Document | None:
    """The timeline item an event makes (without its customer: see ``filed``), or None
    when the event is not an item of its own (see the module's table)."""
    match event:
        case ReplyRequested():
            return _item(
                f"reply:{event.reply_id}",
                "reply",
                event.requested_at,
                event.conversation_id,
                reply_id=event.reply_id,
                agent_id=event.agent_id,
                text=event.text,
            )
        case ReplySent():
            if attributes.source.startswith(SWITCHBOARD_SOURCE):
                return None  # Switchboard delivered a requested reply: already an item
            return _item(
                _keyed("sent", event.conversation_id, event.sent_at, event.agent_id),
                "reply",
                event.sent_at,
                event.conversation_id,
                reply_id=None,
                agent_id=event.agent_id,
                text=None,
            )
        case ReplyDelivery():
            if not event.automatic:
                return None  # an agent's reply: its request is the item
            kind: ItemType = "survey" if event.reply_id.startswith("survey:") else "acknowledgement"
            return _item(
                f"reply:{event.reply_id}",
                kind,
                event.requested_at,
                event.conversation_id,
                reply_id=event.reply_id,
                agent_id=event.agent_id,
                text=event.text,
            )
        case DeliveryUpdated():
            error = (
                None
                if event.error is None
                else {"code": event.error.code, "text": event.error.text}
            )
            return _item(
                f"delivery:{event.reply_id}:{event.status.value}",
                "delivery",
                event.at,
                event.conversation_id,
                reply_id=event.reply_id,
                status=event.status.value,
                error=error,
            )
        case AssignmentDecision():
            return _item(
                f"assignment:{event.conversation_id}:{event.seq}",
                "assignment",
                event.decided_at,
                event.conversation_id,
                event=event.ce_type.rsplit(".", 1)[1],  # queued, assigned, ...
                agent_id=event.agent_id,
                queue=event.queue,
                priority=event.priority.value,
                seq=event.seq,
                offer_expires_at=None
                if event.offer_expires_at is None
                else ms(event.offer_expires_at),
                reason_json=json.dumps(event.reason, sort_keys=True, separators=(",", ":")),
            )
        case ConversationTransferred():
            return _item(
                f"transfer:{attributes.id}"
                if event.at is None
                else _keyed(
                    "transfer",
                    event.conversation_id,
                    event.at,
                    event.from_agent_id,
                    event.to_queue,
                    event.to_agent_id,
                ),
                "transfer",
                event.at or attributes.time,
                event.conversation_id,
                from_agent_id=event.from_agent_id,
                to_queue=event.to_queue,
                to_agent_id=event.to_agent_id,
            )
        case ConversationResolved():
            item_id = _keyed("resolved", event.conversation_id, event.at)
            return _item(item_id, "resolved", event.at, event.conversation_id)
        case ConversationReopened():
            item_id = _keyed("reopened", event.conversation_id, event.at)
            return _item(item_id, "reopened", event.at, event.conversation_id)
        case NoteAdded():
            return _item(
                f"note:{event.note_id}",
                "note",
                event.at,
                event.conversation_id,
                note_id=event.note_id,
                agent_id=event.agent_id,
                text=event.text,
            )
    return None


def carries_personal_data(item: Document) -> bool:
    """Whether erasure has something to drop from this item (see ``redacted``)."""
    if item["type"] in TEXT_TYPES:
        return item.get("text") is not None
    return item["type"] == "delivery" and (item.get("error") or {}).get("text") is not None


def redacted(item: Document) -> Document:
    """What erasure leaves of an item: ids, type, time, agents, statuses and error codes;
    no text (a provider's error text may quote the customer's address, so it goes too)."""
    out = dict(item)
    if item["type"] in TEXT_TYPES:
        out["text"] = None
    if item["type"] == "delivery" and item.get("error"):
        out["error"] = {**item["error"], "text": None}
    out["erased"] = True
    return out


def filed(item: Document, conversation: Document) -> Document:
    """The item filed under its conversation's customer (the customer its messages are
    filed under, so the timeline's reads and erasure find both), redacted already when
    the customer was erased."""
    document = {**item, "customer_id": str(conversation["customer_id"])}
    return redacted(document) if conversation.get("erased") else document


def item_view(document: Document) -> dict[str, Any]:
    """A stored activity item as the read API shows it: ``item_id``, ``type``, ``at``,
    ``conversation_id`` first, then the type's fields."""
    fields = {k: v for k, v in document.items() if k not in ("_id", "reason_json")}
    if "reason_json" in document:
        fields["reason"] = json.loads(document["reason_json"])
    view = json_ready(fields)
    head = {
        "item_id": document["_id"],
        "type": view.pop("type"),
        "at": view.pop("at"),
        "conversation_id": view.pop("conversation_id"),
    }
    return {**head, **view}
