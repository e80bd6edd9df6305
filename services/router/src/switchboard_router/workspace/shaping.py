"""The workspace's read answers, shaped from stored state (pure: no I/O, no clock).

Query values are checked here (a ``QueryError`` is a 400), cursors are made and read
here (opaque to callers: base64 of JSON naming the list they page, so a cursor of one
list is refused by another), and heads, conversations, customers and SLA due times are
turned into the JSON items of the inbox, the conversation list, the conversation detail
and the customer search.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from switchboard_common.contract import Channel
from switchboard_common.mongo import Document
from switchboard_router.assignment.model import RouteState, RouteStatus
from switchboard_router.timeline.documents import iso
from switchboard_router.timeline.identity import (
    IdentityError,
    normalise_email,
    normalise_phone,
    parse_identity,
)
from switchboard_router.workspace.routes import RouteKey, RouteOrder

#: What an agent's inbox holds: offered to them, theirs, or theirs awaiting the customer.
INBOX = frozenset({RouteStatus.OFFERED, RouteStatus.ASSIGNED, RouteStatus.AWAITING_CUSTOMER})
#: Shortest and longest customer search text.
SEARCH_MIN, SEARCH_MAX = 2, 200
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class QueryError(ValueError):
    """A query value or cursor the API refuses (400); the message says which."""


# --------------------------------------------------------------------------- query values


def parse_statuses(value: str | None) -> frozenset[RouteStatus] | None:
    """``status=`` as route statuses: one, or several comma-separated."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    known = {s.value for s in RouteStatus}
    wrong = [n for n in names if n not in known]
    if not names or wrong:
        raise QueryError(f"status must be among {', '.join(sorted(known))}")
    return frozenset(RouteStatus(n) for n in names)


def parse_channel(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in {c.value for c in Channel}:
        raise QueryError(f"channel must be among {', '.join(sorted(c.value for c in Channel))}")
    return value


def search_text(value: str) -> str:
    """The customer search text, trimmed; too short or too long is refused."""
    text = value.strip()
    if not SEARCH_MIN <= len(text) <= SEARCH_MAX:
        raise QueryError(f"q must be {SEARCH_MIN} to {SEARCH_MAX} characters")
    return text


def identity_candidates(text: str) -> list[str]:
    """The sender identities a search text may name: itself in ``kind:value`` form, an
    address as ``email:``, a phone number as ``whatsapp:``, a bare id as an ``x:`` user id
    (account-scoped ids need their account, so only ``kind:account:id`` finds them)."""
    found: list[str] = []
    with contextlib.suppress(IdentityError):
        found.append(parse_identity(text))
    for kind, normalise in (("email", normalise_email), ("whatsapp", normalise_phone)):
        try:
            found.append(f"{kind}:{normalise(text)}")
        except IdentityError:
            continue
    if _PLAIN_ID.match(text):
        found.append(f"x:{text}")
    return list(dict.fromkeys(found))


def name_pattern(text: str) -> str:
    """A regular expression matching ``text`` literally (used case-insensitively)."""
    return re.escape(text)


def name_matches(display_name: str | None, text: str) -> bool:
    """Whether a display name holds the search text, ignoring case (``name_pattern``'s
    meaning, for stores without a query language)."""
    return display_name is not None and text.casefold() in display_name.casefold()


# --------------------------------------------------------------------------- cursors


def _encode(kind: str, position: Sequence[Any]) -> str:
    raw = json.dumps({"list": kind, "after": list(position)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(kind: str, cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error):
        raise QueryError("invalid cursor") from None
    if not isinstance(body, dict) or body.get("list") != kind:
        raise QueryError("invalid cursor")
    after = body.get("after")
    if not isinstance(after, list):
        raise QueryError("invalid cursor")
    return after


def route_cursor(order: RouteOrder, key: RouteKey) -> str:
    return _encode(f"routes:{order}", [key[0], key[1].isoformat(), key[2]])


def route_position(order: RouteOrder, cursor: str | None) -> RouteKey | None:
    if cursor is None:
        return None
    after = _decode(f"routes:{order}", cursor)
    try:
        rank, since, conversation_id = after
        moment = datetime.fromisoformat(since)
    except (TypeError, ValueError):
        raise QueryError("invalid cursor") from None
    if not isinstance(rank, int) or not isinstance(conversation_id, str) or moment.tzinfo is None:
        raise QueryError("invalid cursor")
    return rank, moment, conversation_id


def customer_cursor(customer_id: str) -> str:
    return _encode("customers", [customer_id])


def customer_position(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    after = _decode("customers", cursor)
    if len(after) != 1 or not isinstance(after[0], str):
        raise QueryError("invalid cursor")
    return after[0]


# --------------------------------------------------------------------------- answers


def sla_view(due: Mapping[str, datetime] | None) -> dict[str, str | None]:
    """Metric → due time of each SLA clock running (empty: none runs, or unknown)."""
    return {metric: iso(at) for metric, at in sorted((due or {}).items())}


def routing_fields(state: RouteState | None, due: Mapping[str, datetime] | None) -> dict[str, Any]:
    """What ``GET /conversations/{id}`` adds to its ``conversation``: who holds it, its
    routing state and its SLA due times (all null before routing decided anything)."""
    offered = state is not None and state.status == RouteStatus.OFFERED
    return {
        "agent_id": None if state is None else state.agent_id,
        "route_status": None if state is None else str(state.status),
        "queue": None if state is None else state.queue,
        "priority": None if state is None else str(state.priority),
        "offered_until": iso(state.offer_expires_at) if offered and state else None,
        "waiting_since": None if state is None else iso(state.waiting_since),
        "sla": sla_view(due),
    }


def conversation_item(
    state: RouteState,
    conversation: Document | None,
    names: Mapping[str, str | None],
    due: Mapping[str, datetime] | None,
    now: datetime,
) -> dict[str, Any]:
    """One conversation of the inbox or the list: routing (the head), what the timeline
    keeps (subject, last message) and the customer's display name (the root customer's,
    else that of the customer the conversation is filed under)."""
    filed_under = None if conversation is None else conversation.get("customer_id")
    name = names.get(state.customer_id) or (names.get(filed_under) if filed_under else None)
    offered = state.status == RouteStatus.OFFERED
    return {
        "conversation_id": state.conversation_id,
        "customer_id": state.customer_id,
        "customer_name": name,
        "channel": str(state.channel),
        "priority": str(state.priority),
        "queue": state.queue,
        "state": str(state.status),
        "agent_id": state.agent_id,
        "offered_until": iso(state.offer_expires_at) if offered else None,
        "waiting_since": iso(state.waiting_since),
        "waiting_seconds": round(max(0.0, (now - state.waiting_since).total_seconds()), 3),
        "subject": None if conversation is None else conversation.get("subject"),
        "last_message_at": None if conversation is None else iso(conversation["last_message_at"]),
        "sla": sla_view(due),
    }


def customer_names(
    states: Sequence[RouteState], conversations: Mapping[str, Document]
) -> list[str]:
    """The customers whose display names a page shows (roots and filed-under ones)."""
    wanted = [s.customer_id for s in states]
    wanted += [str(c["customer_id"]) for c in conversations.values() if c.get("customer_id")]
    return list(dict.fromkeys(wanted))


def customer_hit(
    customer_id: str,
    display_name: str | None,
    identities: Sequence[str],
    merged_into: str | None,
    matched: Sequence[str],
) -> dict[str, Any]:
    """One customer found by ``GET /customers?q=``."""
    return {
        "customer_id": customer_id,
        "display_name": display_name,
        "merged_into": merged_into,
        "identities": sorted(identities),
        "matched": sorted(matched),
    }
