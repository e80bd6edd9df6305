"""Support KPIs of one conversation, from its facts (pure: no clock, no I/O).

First-contact resolution (FCR): a conversation whose *first* resolution came after
exactly one agent reply, and that nobody reopened within ``window`` of it, was resolved
at first contact.

- Agent replies are counted on the conversation whoever sent them: a transfer to another
  agent does not by itself break FCR, a second reply does (the customer had to read two).
- A reopen is an agent's ``reopened``, a customer message that expects a reply, or a new
  conversation that continues this one (``previous_conversation_id``, written after the
  router's reopen window). Auto-replies, reactions and edits reopen nothing.
- Not candidates (neither FCR nor not FCR): conversations not resolved yet, and those
  resolved without any agent reply (spam, duplicates, auto-submitted-only threads, which
  never open a clock).
- The outcome is final at ``decided_at``: at the resolution for two or more replies, at the
  reopen for a reopen inside the window, else when the window has passed.

The window is half-open: a reopen at ``resolved_at + window`` exactly is outside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from switchboard_sla_monitor.facts import (
    AssignmentFact,
    EmittedFact,
    Fact,
    FeedbackFact,
    FollowUpFact,
    MessageFact,
    ReopenedFact,
    ReplyFact,
    ResolvedFact,
    emission_id,
)

#: How long after the first resolution a reopen still means the first contact failed.
DEFAULT_FCR_WINDOW = timedelta(days=7)
FcrOutcome = Literal["fcr", "not_fcr"]


@dataclass(frozen=True, slots=True)
class FirstContact:
    """What the facts say about first-contact resolution, and from when it is final."""

    resolved_at: datetime
    replies: int
    outcome: FcrOutcome
    decided_at: datetime

    def decided(self, now: datetime) -> bool:
        return self.decided_at <= now


def fcr_decision_id(conversation_id: str) -> str:
    """The claim id of a conversation's FCR decision (one per conversation, ever)."""
    return emission_id(conversation_id, "fcr", "1", "decided")


def first_contact(facts: Iterable[Fact], window: timedelta) -> FirstContact | None:
    """The conversation's first-contact resolution, or None if it is not a candidate.
    Facts are a set: a fact given twice (same key) counts once."""
    facts = list({f.key: f for f in facts}.values())
    openings = [f.received_at for f in facts if isinstance(f, MessageFact) and f.awaits_answer] + [
        f.at for f in facts if isinstance(f, ReopenedFact)
    ]
    if not openings:
        return None
    opened = min(openings)
    resolutions = [f.at for f in facts if isinstance(f, ResolvedFact) and f.at >= opened]
    if not resolutions:
        return None
    resolved = min(resolutions)
    # Replies at the resolution's instant count before it (as the clocks order them).
    replies = sum(1 for f in facts if isinstance(f, ReplyFact) and f.sent_at <= resolved)
    if replies == 0:
        return None
    if replies > 1:
        return FirstContact(resolved, replies, "not_fcr", resolved)
    reopens = [
        at
        for at in _reopen_times(facts)
        if resolved < at < resolved + window  # half-open window, see module docs
    ]
    if reopens:
        return FirstContact(resolved, replies, "not_fcr", min(reopens))
    return FirstContact(resolved, replies, "fcr", resolved + window)


def _reopen_times(facts: Sequence[Fact]) -> list[datetime]:
    times: list[datetime] = []
    for fact in facts:
        match fact:
            case MessageFact() if fact.awaits_answer:
                times.append(fact.received_at)
            case ReopenedFact() | FollowUpFact():
                times.append(fact.at)
    return times


def fact_time(fact: Fact) -> datetime | None:
    """When the fact happened (None for the monitor's own emissions)."""
    match fact:
        case MessageFact():
            return fact.received_at
        case AssignmentFact():
            return fact.decided_at
        case ReplyFact():
            return fact.sent_at
        case ResolvedFact() | ReopenedFact() | FollowUpFact() | FeedbackFact():
            return fact.at
        case EmittedFact():
            return None


def time_span(facts: Iterable[Fact]) -> tuple[datetime | None, datetime | None]:
    """The first and last instants of the conversation's facts (what reports select on)."""
    times = [t for t in (fact_time(f) for f in facts) if t is not None]
    return (min(times), max(times)) if times else (None, None)


def opened_at(facts: Iterable[Fact]) -> datetime | None:
    """When the conversation opened: its first customer message (auto-replies included:
    the thread exists from then), else when routing says it began waiting."""
    facts = list(facts)
    messages = [f.received_at for f in facts if isinstance(f, MessageFact)]
    if messages:
        return min(messages)
    waiting = [f.waiting_since for f in facts if isinstance(f, AssignmentFact) and f.waiting_since]
    return min(waiting, default=None)


def agent_at(facts: Iterable[Fact], at: datetime) -> str | None:
    """The agent a figure at ``at`` belongs to: who last replied by then, else who held
    the conversation (the routing decision in force; before the first, the first)."""
    facts = list(facts)
    replies = sorted(
        (f for f in facts if isinstance(f, ReplyFact) and f.sent_at <= at),
        key=lambda f: (f.sent_at, f.key),
    )
    if replies:
        return replies[-1].agent_id
    decisions = sorted((f for f in facts if isinstance(f, AssignmentFact)), key=lambda f: f.seq)
    in_force = [d for d in decisions if d.decided_at <= at] or decisions[:1]
    return in_force[-1].agent_id if in_force else None
