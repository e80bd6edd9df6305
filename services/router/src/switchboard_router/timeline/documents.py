"""The stored shape of timeline data (pure): one place maps the core's values to
documents and back, so the MongoDB and in-memory stores hold exactly the same documents.

FerretDB v1 rules shape these documents: natural keys are ``_id``s, field names never
contain ``.`` (Message-IDs and identities are values, not keys) and there are no nested
arrays. Datetimes are stored at millisecond precision (BSON's), in UTC.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from switchboard_common.contract import Channel, CustomerMessage
from switchboard_common.mongo import Document
from switchboard_router.timeline.threading import Conversation, CustomerState, Placement


class CursorError(ValueError):
    """A pagination cursor that this service did not issue."""


def ms(moment: datetime) -> datetime:
    """UTC at millisecond precision: what BSON keeps, so memory and MongoDB agree."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    extra = moment.microsecond % 1000
    # Most moments were truncated already (read back, or from a state): no new object.
    return moment.replace(microsecond=moment.microsecond - extra) if extra else moment


def ms_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else ms(moment)


# --------------------------------------------------------------------------- messages


def message_document(item: CustomerMessage, placement: Placement, applied_at: datetime) -> Document:
    """The timeline entry of one message (``_id`` = ``message_id``)."""
    message = item.message
    body = message.model_dump(mode="python", exclude={"message_id"})
    for name in ("received_at", "sent_at"):
        body[name] = ms_or_none(body[name])
    body["channel"] = message.channel.value
    body["sender"] = {
        "kind": message.sender.kind.value,
        "value": message.sender.value,
        "display_name": message.sender.display_name,
    }
    return {
        "_id": message.message_id,
        "customer_id": item.customer_id,
        "identity": item.identity,
        "conversation_id": placement.conversation_id,
        "placement": placement.kind,
        "index": placement.index,
        "rule": placement.rule,
        "previous_conversation_id": placement.previous_conversation_id,
        "closes_conversation_id": placement.closes,
        "claim": placement.claim,
        "applied_at": ms(applied_at),
        **body,
    }


def placement_of(document: Document) -> Placement:
    """The placement a stored message was given."""
    return Placement(
        conversation_id=document["conversation_id"],
        kind=document["placement"],
        index=int(document["index"]),
        rule=document.get("rule") or "new",
        previous_conversation_id=document.get("previous_conversation_id"),
        claim=document.get("claim"),
        closes=document.get("closes_conversation_id"),
    )


# --------------------------------------------------------------------------- conversations


def conversation_state(conversation: Conversation) -> Document:
    """The threading state of a conversation as stored fields (no ``_id``)."""
    return {
        "channel": conversation.channel.value,
        "account": conversation.account,
        "tenant": conversation.tenant,
        "sender": conversation.sender,
        "thread": conversation.thread,
        "subject_key": conversation.subject,
        "status": conversation.status,
        "opened_at": ms(conversation.opened_at),
        "last_message_at": ms(conversation.last_message_at),
        "resolved_at": ms_or_none(conversation.resolved_at),
        "message_count": conversation.message_count,
        "previous_conversation_id": conversation.previous_conversation_id,
        "closed_reason": conversation.closed_reason,
        "status_at": ms_or_none(conversation.status_at),
    }


def conversation_from(document: Document) -> Conversation:
    """A conversation's threading state from a stored document (state or collection)."""
    return Conversation(
        conversation_id=document.get("_id") or document["conversation_id"],
        channel=Channel(document["channel"]),
        account=document.get("account"),
        tenant=document.get("tenant"),
        sender=document["sender"],
        thread=document.get("thread"),
        subject=document.get("subject_key") or "",
        status=document["status"],
        opened_at=document["opened_at"],
        last_message_at=document["last_message_at"],
        resolved_at=document.get("resolved_at"),
        message_count=int(document["message_count"]),
        previous_conversation_id=document.get("previous_conversation_id"),
        closed_reason=document.get("closed_reason"),
        status_at=document.get("status_at"),
    )


def conversation_opening(customer_id: str, item: CustomerMessage | None) -> Document:
    """Fields fixed when a conversation opens (written once: ``$setOnInsert``)."""
    message = item.message if item is not None else None
    return {
        "customer_id": customer_id,
        "subject": message.subject if message is not None else None,
        "identity": item.identity if item is not None else None,
        "opened_by_message_id": message.message_id if message is not None else None,
        # Surveys never go to auto-replies, bounces or bulk mail.
        "auto_submitted": message.auto_submitted if message is not None else False,
    }


# --------------------------------------------------------------------------- customer state


def state_document(state: CustomerState, updated_at: datetime) -> Document:
    """A customer's threading state (``_id`` = the customer id)."""
    return {
        "_id": state.customer_id,
        "erased": state.erased,
        "erasure_id": state.erasure_id,
        "conversations": [
            {"conversation_id": c.conversation_id, **conversation_state(c)}
            for c in state.conversations.values()
        ],
        "threads": [{"key": k, "conversation_id": v} for k, v in state.threads.items()],
        "refs": [{"message_id": k, "conversation_id": v} for k, v in state.refs.items()],
        "successors": [{"conversation_id": k, "successor": v} for k, v in state.successors.items()],
        "applied": [
            {
                "message_id": k,
                "conversation_id": p.conversation_id,
                "placement": p.kind,
                "index": p.index,
                "rule": p.rule,
                "previous_conversation_id": p.previous_conversation_id,
                "closes_conversation_id": p.closes,
            }
            for k, p in state.applied.items()
        ],
        "updated_at": ms(updated_at),
    }


def state_from(document: Document) -> CustomerState:
    conversations = [conversation_from(c) for c in document.get("conversations") or []]
    return CustomerState(
        customer_id=document["_id"],
        conversations={c.conversation_id: c for c in conversations},
        threads={t["key"]: t["conversation_id"] for t in document.get("threads") or []},
        refs={r["message_id"]: r["conversation_id"] for r in document.get("refs") or []},
        erased=bool(document.get("erased")),
        erasure_id=document.get("erasure_id"),
        successors={s["conversation_id"]: s["successor"] for s in document.get("successors") or []},
        applied={a["message_id"]: placement_of(a) for a in document.get("applied") or []},
    )


# --------------------------------------------------------------------------- cursors


def encode_cursor(received_at: datetime, message_id: str) -> str:
    """An opaque cursor after the given timeline position."""
    raw = json.dumps([ms(received_at).isoformat(), message_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; raises ``CursorError`` for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, message_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position = datetime.fromisoformat(moment)
    except (ValueError, TypeError) as error:
        raise CursorError("invalid cursor") from error
    if position.tzinfo is None or not isinstance(message_id, str):
        raise CursorError("invalid cursor")
    return ms(position), message_id


def json_ready(document: Document) -> dict[str, Any]:
    """A stored document for a JSON response: ``_id`` renamed, datetimes as RFC 3339."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        out[key] = _json_value(value)
    return out


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC at millisecond precision, as the read API answers times."""
    return None if moment is None else ms(moment).isoformat().replace("+00:00", "Z")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


# --------------------------------------------------------------------------- erasure

#: What erasure leaves of a timeline entry: ids, channel, times and its conversation
#: (``raw_ref`` goes only once the raw mail is deleted: see ``raw_mail``).
MESSAGE_ERASURE: Document = {
    "text": "",
    "subject": None,
    "full_text": None,
    "sender": None,
    "identity": None,
    "in_reply_to": None,
    "references": [],
    "provider_message_id": None,
    "provider_thread_id": None,
    "reply_to_provider_message_id": None,
    "recipients": [],
    "attachments": [],
    "parse_errors": [],
    "erased": True,
}

#: What erasure leaves of a conversation: ids, channel, status and times.
CONVERSATION_ERASURE: Document = {
    "subject": None,
    "subject_key": "",
    "identity": None,
    "sender": "",
    "thread": None,
    "erased": True,
}
