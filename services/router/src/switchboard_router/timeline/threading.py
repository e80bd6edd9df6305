"""Conversation threading: which conversation a customer message belongs to (pure).

Everything here is a function of a customer's ``CustomerState`` (what the router remembers
about the customer's conversations) and one message or status change. No clock, no I/O:
time is the message's ``received_at`` and the status change's ``at``.

Rules (see the router README for the reasoning):

- **Email**: ``In-Reply-To``, then ``References`` (most recent first) matching a Message-ID
  the customer sent before. A reply from a *different sender* to a known thread opens its
  own conversation (``email_split_by_sender``). A message whose thread headers match
  nothing joins the sender's open email conversation with the same subject (stripped of
  ``Re:``/``Fwd:``/``AW:``/``SV:``...) whose last message is within
  ``email_subject_window``; otherwise it opens a conversation.
- **Social**: the provider's thread id; else the sender's conversation on that channel
  and account, joined while its last message is within ``social_inactivity_window``
  (after that a new conversation replaces it and the old one is closed as inactive).
- A message to a **resolved** conversation reopens it within ``reopen_window`` of the
  resolution, otherwise starts a new conversation linked to it.

Opening a conversation on a thread that already had one names an exclusive *claim*
(``first|<customer>|<thread>`` or ``after|<conversation>``): the shell inserts a document
with that ``_id``, so two replicas can never open two conversations for one thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from switchboard_common.contract import Channel, CustomerMessage
from switchboard_router.timeline.identity import pseudonym

Status = Literal["open", "resolved"]
Kind = Literal["opened", "reopened", "message"]
#: How a message found its conversation (a bounded metric label).
Rule = Literal[
    "in_reply_to",
    "references",
    "subject",
    "provider_thread",
    "channel",
    "new",
    "new_sender",
]

_SUBJECT_PREFIX = re.compile(r"^\s*(re|fwd?|aw|sv|wg)\s*(\[\d+\]|\(\d+\))?\s*:\s*", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def normalise_subject(subject: str | None) -> str:
    """The subject without reply/forward prefixes (any number, any case), spaces folded."""
    text = subject or ""
    while True:
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return _SPACES.sub(" ", text).strip().casefold()


def normalise_message_id(value: str | None) -> str | None:
    """An RFC 5322 Message-ID without angle brackets or surrounding space."""
    if value is None:
        return None
    text = value.strip().strip("<>").strip()
    return text or None


def conversation_id_for(message_id: str) -> str:
    """The id of a conversation opened by ``message_id``: replaying the message that
    opened it names the same conversation."""
    return "cv_" + hashlib.sha256(f"conversation|{message_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Policy:
    """Threading settings (from ``RouterSettings``) and the bounds of remembered state."""

    reopen_window: timedelta = timedelta(days=3)
    social_inactivity_window: timedelta = timedelta(hours=24)
    email_subject_window: timedelta = timedelta(days=7)
    email_split_by_sender: bool = True
    #: Message-IDs remembered per customer (older ones are found through the refs index).
    max_refs: int = 50
    #: Conversations remembered per customer (open ones are kept before resolved ones).
    max_conversations: int = 60
    #: Social threads remembered per customer.
    max_threads: int = 200
    #: Recently applied messages remembered per customer (beyond the last batch).
    max_applied: int = 32


@dataclass
class Conversation:
    """What threading needs to know about one conversation."""

    conversation_id: str
    channel: Channel
    account: str | None
    tenant: str | None
    #: Pseudonym of the identity that opened it (replies from others split off).
    sender: str
    #: Social thread key; None for email.
    thread: str | None
    #: Normalised subject (email), "" elsewhere.
    subject: str
    status: Status
    opened_at: datetime
    last_message_at: datetime
    resolved_at: datetime | None
    message_count: int
    previous_conversation_id: str | None = None
    #: "inactive" when a later conversation replaced it after the inactivity window.
    closed_reason: str | None = None
    #: When its status last changed (opened, resolved, reopened): older changes are stale.
    status_at: datetime | None = None


@dataclass
class CustomerState:
    """Everything threading remembers about one customer.

    ``threads`` maps a social thread key to its latest conversation; ``refs`` maps a
    Message-ID the customer sent to its conversation; ``successors`` maps a conversation
    to the one that continues it (opened after it was resolved or went inactive). All are
    bounded (``Policy``). A tombstone (``erased``) marks an erased customer.
    """

    customer_id: str
    conversations: dict[str, Conversation] = field(default_factory=dict)
    threads: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    erased: bool = False
    erasure_id: str | None = None
    successors: dict[str, str] = field(default_factory=dict)
    #: The most recent messages reflected in this state, with their placements: a
    #: redelivered one is recognised without a read (bounded by ``Policy.max_applied``
    #: but always holding the last batch's).
    applied: dict[str, Placement] = field(default_factory=dict)

    def copy(self) -> CustomerState:
        return CustomerState(
            self.customer_id,
            {k: dataclasses.replace(v) for k, v in self.conversations.items()},
            dict(self.threads),
            dict(self.refs),
            self.erased,
            self.erasure_id,
            dict(self.successors),
            dict(self.applied),
        )

    def remember(self, conversation: Conversation) -> None:
        """Learn a conversation found outside the state (an index, a stored message)."""
        if conversation.conversation_id not in self.conversations:
            self.conversations[conversation.conversation_id] = dataclasses.replace(conversation)
        if conversation.thread is not None:
            self.threads.setdefault(conversation.thread, conversation.conversation_id)
        if conversation.previous_conversation_id is not None:
            self.successors.setdefault(
                conversation.previous_conversation_id, conversation.conversation_id
            )

    def latest(self, conversation: Conversation) -> Conversation:
        """The conversation that (transitively) continues ``conversation``, or itself."""
        seen = {conversation.conversation_id}
        while True:
            following = self.conversations.get(
                self.successors.get(conversation.conversation_id, "")
            )
            if following is None or following.conversation_id in seen:
                return conversation
            seen.add(following.conversation_id)
            conversation = following


@dataclass(frozen=True)
class Inbound:
    """The facts of a customer message that threading looks at."""

    message_id: str
    customer_id: str
    sender: str
    channel: Channel
    account: str | None
    tenant: str | None
    received_at: datetime
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    provider_thread_id: str | None
    #: The message's own Message-ID (email), normalised.
    email_message_id: str | None
    #: False for auto-replies, reactions and edits: they join the conversation they
    #: belong to as it is, never reopening it or starting a new one.
    expects_reply: bool = True

    @classmethod
    def of(cls, item: CustomerMessage) -> Inbound:
        message = item.message
        email = message.channel == Channel.EMAIL
        references = tuple(
            ref for ref in (normalise_message_id(r) for r in message.references) if ref
        )
        return cls(
            message_id=message.message_id,
            customer_id=item.customer_id,
            sender=pseudonym(item.identity),
            channel=message.channel,
            account=message.account,
            tenant=message.tenant,
            received_at=message.received_at,
            subject=normalise_subject(message.subject) if email else "",
            in_reply_to=normalise_message_id(message.in_reply_to) if email else None,
            references=references if email else (),
            provider_thread_id=None if email else message.provider_thread_id,
            email_message_id=normalise_message_id(message.provider_message_id) if email else None,
            expects_reply=message.expects_reply,
        )

    def thread_ids(self) -> list[str]:
        """Message-IDs to look up, in precedence order: In-Reply-To, then References from
        the most recent."""
        ids = [self.in_reply_to] if self.in_reply_to else []
        ids += [r for r in reversed(self.references) if r not in ids]
        return ids

    def thread_key(self) -> str | None:
        """The social thread this message is on (None for email)."""
        if self.channel == Channel.EMAIL:
            return None
        account = self.account or "-"
        if self.provider_thread_id:
            return f"{self.channel.value}|{account}|t|{self.provider_thread_id}"
        return f"{self.channel.value}|{account}|s|{self.sender}"


@dataclass(frozen=True)
class Placement:
    """Where a message went; stored with the message, so a replay reuses it."""

    conversation_id: str
    kind: Kind
    #: Position of the message in its conversation (1 for the opener).
    index: int
    rule: Rule
    previous_conversation_id: str | None = None
    #: The exclusive claim the shell must win before storing (openings on a thread).
    claim: str | None = None
    #: An open conversation this one replaces after the inactivity window.
    closes: str | None = None


@dataclass(frozen=True)
class StatusChange:
    """A frontend resolved or reopened a conversation."""

    conversation_id: str
    status: Literal["resolved", "reopened"]
    at: datetime


# --------------------------------------------------------------------------- placement


def place(state: CustomerState, message: Inbound, policy: Policy) -> Placement:
    """Decide the conversation of ``message`` given what ``state`` remembers."""
    if message.channel == Channel.EMAIL:
        target, rule = _email_target(state, message, policy)
    else:
        target, rule = _social_target(state, message)
    return _place_on(state, message, target, rule, policy)


def _email_target(
    state: CustomerState, message: Inbound, policy: Policy
) -> tuple[Conversation | None, Rule]:
    for position, ref in enumerate(message.thread_ids()):
        found = state.conversations.get(state.refs.get(ref, ""))
        if found is None:
            continue
        if policy.email_split_by_sender and found.sender != message.sender:
            return None, "new_sender"
        by_header = position == 0 and ref == message.in_reply_to
        return found, "in_reply_to" if by_header else "references"
    if not message.subject:
        return None, "new"
    candidates = [
        c
        for c in state.conversations.values()
        if c.channel == Channel.EMAIL
        and c.status == "open"
        and c.subject == message.subject
        and c.account == message.account
        and (c.sender == message.sender or not policy.email_split_by_sender)
        and abs(message.received_at - c.last_message_at) <= policy.email_subject_window
    ]
    if not candidates:
        return None, "new"
    return max(candidates, key=lambda c: (c.last_message_at, c.conversation_id)), "subject"


def _social_target(state: CustomerState, message: Inbound) -> tuple[Conversation | None, Rule]:
    key = message.thread_key()
    head = state.conversations.get(state.threads.get(key or "", ""))
    rule: Rule = "provider_thread" if message.provider_thread_id else "channel"
    return head, rule if head is not None else "new"


def _place_on(
    state: CustomerState,
    message: Inbound,
    target: Conversation | None,
    rule: Rule,
    policy: Policy,
) -> Placement:
    opened = conversation_id_for(message.message_id)
    if target is not None:
        target = state.latest(target)
    if target is None:
        key = message.thread_key()
        claim = f"first|{state.customer_id}|{key}" if key is not None else None
        return Placement(opened, "opened", 1, rule, claim=claim)
    if not message.expects_reply:
        return Placement(target.conversation_id, "message", target.message_count + 1, rule)
    after = f"after|{target.conversation_id}"
    if target.status == "open":
        stale = message.received_at - target.last_message_at > policy.social_inactivity_window
        if rule == "channel" and stale:
            return Placement(
                opened,
                "opened",
                1,
                "new",
                previous_conversation_id=target.conversation_id,
                claim=after,
                closes=target.conversation_id,
            )
        return Placement(target.conversation_id, "message", target.message_count + 1, rule)
    resolved_at = target.resolved_at or target.last_message_at
    if message.received_at - resolved_at <= policy.reopen_window:
        return Placement(target.conversation_id, "reopened", target.message_count + 1, rule)
    return Placement(
        opened, "opened", 1, rule, previous_conversation_id=target.conversation_id, claim=after
    )


# --------------------------------------------------------------------------- state changes


def apply_placement(state: CustomerState, message: Inbound, placement: Placement) -> set[str]:
    """Record a placed message in ``state``; return the conversations whose stored
    document changes (opened, reopened, closed).

    Idempotent: a placement whose conversation already counts ``placement.index``
    messages is already reflected (a replay onto a state saved after it) and changes
    nothing, so a replayed message can never reopen a conversation resolved after it or
    move a thread back to an older conversation.
    """
    state.applied.pop(message.message_id, None)
    state.applied[message.message_id] = dataclasses.replace(placement, claim=None)
    conversation = state.conversations.get(placement.conversation_id)
    if conversation is not None and conversation.message_count >= placement.index:
        if message.email_message_id:
            state.refs.setdefault(message.email_message_id, conversation.conversation_id)
        return set()
    changed: set[str] = set()
    if conversation is None:
        conversation = Conversation(
            conversation_id=placement.conversation_id,
            channel=message.channel,
            account=message.account,
            tenant=message.tenant,
            sender=message.sender,
            thread=message.thread_key(),
            subject=message.subject,
            status="open",
            opened_at=message.received_at,
            last_message_at=message.received_at,
            resolved_at=None,
            message_count=placement.index,
            previous_conversation_id=placement.previous_conversation_id,
            status_at=message.received_at,
        )
        state.conversations[conversation.conversation_id] = conversation
        changed.add(conversation.conversation_id)
        _advance_thread(state, conversation)
    elif placement.kind == "reopened" and conversation.status != "open":
        conversation.status = "open"
        conversation.resolved_at = None
        conversation.closed_reason = None
        conversation.status_at = message.received_at
        changed.add(conversation.conversation_id)
    conversation.message_count = max(conversation.message_count, placement.index)
    conversation.last_message_at = max(conversation.last_message_at, message.received_at)
    if placement.closes is not None:
        closed = state.conversations.get(placement.closes)
        if closed is not None and closed.status == "open":
            closed.status = "resolved"
            closed.resolved_at = message.received_at
            closed.closed_reason = "inactive"
            closed.status_at = message.received_at
            changed.add(closed.conversation_id)
    if placement.kind == "opened" and placement.previous_conversation_id is not None:
        state.successors[placement.previous_conversation_id] = conversation.conversation_id
    if message.email_message_id:
        state.refs.pop(message.email_message_id, None)
        state.refs[message.email_message_id] = conversation.conversation_id
    return changed


def _advance_thread(state: CustomerState, conversation: Conversation) -> None:
    """Make ``conversation`` its thread's latest, unless a newer one already is."""
    if conversation.thread is None:
        return
    head = state.conversations.get(state.threads.get(conversation.thread, ""))
    if head is not None and (head.opened_at, head.conversation_id) > (
        conversation.opened_at,
        conversation.conversation_id,
    ):
        return
    state.threads.pop(conversation.thread, None)
    state.threads[conversation.thread] = conversation.conversation_id


StatusOutcome = Literal["applied", "stale", "unknown"]


def apply_status(state: CustomerState, change: StatusChange) -> StatusOutcome:
    """Apply a frontend's resolve/reopen. A change older than the conversation's last
    status change (a redelivered event) is ``stale`` and changes nothing."""
    conversation = state.conversations.get(change.conversation_id)
    if conversation is None:
        return "unknown"
    if conversation.status_at is not None and change.at < conversation.status_at:
        return "stale"
    conversation.status_at = change.at
    conversation.closed_reason = None
    if change.status == "resolved":
        conversation.status = "resolved"
        conversation.resolved_at = change.at
    else:
        conversation.status = "open"
        conversation.resolved_at = None
        conversation.last_message_at = max(conversation.last_message_at, change.at)
    return "applied"


def evict(
    state: CustomerState, policy: Policy, keep: Iterable[str] = (), keep_applied: int = 0
) -> list[Conversation]:
    """Forget the least recently active conversations beyond the bounds (resolved ones
    first) and return them, so the shell can store their final state. The last
    ``keep_applied`` applied messages are remembered whatever the bound."""
    pinned = set(keep)
    while len(state.applied) > max(policy.max_applied, keep_applied):
        del state.applied[next(iter(state.applied))]
    evicted: list[Conversation] = []
    excess = len(state.conversations) - policy.max_conversations
    if excess > 0:
        order = sorted(
            (c for c in state.conversations.values() if c.conversation_id not in pinned),
            key=lambda c: (c.status == "open", c.last_message_at, c.conversation_id),
        )
        for conversation in order[:excess]:
            del state.conversations[conversation.conversation_id]
            evicted.append(conversation)
    gone = {c.conversation_id for c in evicted}
    if gone:
        state.threads = {k: v for k, v in state.threads.items() if v not in gone}
        state.refs = {k: v for k, v in state.refs.items() if v not in gone}
        state.successors = {
            k: v for k, v in state.successors.items() if k not in gone and v not in gone
        }
    while len(state.threads) > policy.max_threads:
        del state.threads[next(iter(state.threads))]
    while len(state.refs) > policy.max_refs:
        del state.refs[next(iter(state.refs))]
    return evicted
