"""One customer's share of a consumed batch, folded over its threading state (pure).

The timeline's shell groups a batch by customer, loads each customer's ``CustomerState`` and
calls ``plan_customer``. Replays are the normal case after a crash, so the fold is told what
it already knows about each message:

- ``base.applied``: already reflected in the state (a redelivery): not placed again,
  its activity is published again;
- ``stored``: found in the timeline but not in the state (a message the state forgot,
  or one stored by an attempt that died before saving the state): the stored placement
  is applied, which is idempotent;
- everything else is placed now (``fresh``).

``adopt`` maps an exclusive claim that was lost to a conversation that never
materialised (its opener crashed) to that conversation's id, so the thread step keeps
the id its claim names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from switchboard_common.contract import CustomerMessage
from switchboard_router.timeline.threading import (
    Conversation,
    CustomerState,
    Inbound,
    Placement,
    Policy,
    StatusChange,
    apply_placement,
    apply_status,
    evict,
    place,
)


@dataclass(frozen=True)
class MessageItem:
    record: CustomerMessage
    inbound: Inbound

    @classmethod
    def of(cls, record: CustomerMessage) -> MessageItem:
        return cls(record, Inbound.of(record))

    @property
    def message_id(self) -> str:
        return self.inbound.message_id


@dataclass(frozen=True)
class ErasureItem:
    """The customer's personal data was erased: forget everything from here on."""

    erasure_id: str
    at: datetime


Item = MessageItem | StatusChange | ErasureItem


@dataclass(frozen=True)
class Applied:
    """A message and where it went. ``fresh`` placements must still be stored."""

    item: MessageItem
    placement: Placement
    fresh: bool
    #: Already reflected in the state before this batch (stored; maybe published).
    known: bool = False


@dataclass
class CustomerPlan:
    """The outcome of one customer's items: new state and what the shell must write."""

    state: CustomerState
    applied: list[Applied] = field(default_factory=list)
    #: Conversations whose stored document changes → the message that opened them here.
    changed: dict[str, MessageItem | None] = field(default_factory=dict)
    evicted: list[Conversation] = field(default_factory=list)
    #: Status changes for conversations the state does not hold.
    unknown_status: list[StatusChange] = field(default_factory=list)
    applied_status: list[StatusChange] = field(default_factory=list)
    erasure: ErasureItem | None = None
    #: Messages filed under an erased customer: they go back to identity resolution.
    reresolve: list[MessageItem] = field(default_factory=list)

    def fresh(self) -> list[Applied]:
        return [a for a in self.applied if a.fresh]


def plan_customer(
    base: CustomerState,
    items: Sequence[Item],
    policy: Policy,
    *,
    stored: Mapping[str, Placement] | None = None,
    adopt: Mapping[str, str] | None = None,
) -> CustomerPlan:
    """Fold ``items`` (in stream order) over a copy of ``base``; ``base`` is untouched."""
    stored = stored or {}
    adopt = adopt or {}
    plan = CustomerPlan(state=base.copy())
    seen: set[str] = set()
    for item in items:
        if isinstance(item, ErasureItem):
            plan.state = CustomerState(base.customer_id, erased=True, erasure_id=item.erasure_id)
            plan.erasure = item
            continue
        if isinstance(item, StatusChange):
            outcome = apply_status(plan.state, item)
            if outcome == "applied":
                plan.changed.setdefault(item.conversation_id, None)
                plan.applied_status.append(item)
            elif outcome == "unknown":
                plan.unknown_status.append(item)
            continue
        if item.message_id in seen:
            continue  # the same message twice in one batch: once is enough
        seen.add(item.message_id)
        if plan.state.erased:
            plan.reresolve.append(item)
            continue
        known = plan.state.applied.get(item.message_id)
        if known is not None:
            plan.applied.append(Applied(item, known, fresh=False, known=True))
            continue
        _place_message(plan, item, policy, stored.get(item.message_id), adopt)
    plan.evicted = evict(plan.state, policy, keep_applied=len(seen))
    return plan


def _place_message(
    plan: CustomerPlan,
    item: MessageItem,
    policy: Policy,
    stored: Placement | None,
    adopt: Mapping[str, str],
) -> None:
    placement = stored
    if placement is None:
        placement = place(plan.state, item.inbound, policy)
        if placement.claim is not None and placement.claim in adopt:
            placement = replace(placement, conversation_id=adopt[placement.claim])
    for conversation_id in apply_placement(plan.state, item.inbound, placement):
        opener = item if conversation_id == placement.conversation_id else None
        if plan.changed.get(conversation_id) is None:
            plan.changed[conversation_id] = opener
    plan.applied.append(Applied(item, placement, fresh=stored is None))
