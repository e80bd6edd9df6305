"""Classification (pure): priority, skills, language and the queue of a
conversation, from its activity and the policy. No I/O; the language detector is passed
in (``LanguageDetector``), so tests can use a fixed one."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from switchboard_common.contract import ConversationActivity, Priority
from switchboard_router.assignment.policy import (
    LANGUAGE_SKILL_PREFIX,
    Conditions,
    QueuePolicy,
    RoutingPolicy,
)


class LanguageDetector(Protocol):
    """Returns (ISO 639-1 code, confidence 0..1) for a text, among ``candidates``."""

    def __call__(self, text: str, candidates: Sequence[str]) -> tuple[str, float]: ...


@dataclass(frozen=True)
class Classified:
    """What routing needs to know about a conversation."""

    priority: Priority
    #: Skills with minimum levels (topics', ``language:<code>``); the queue's target says
    #: which are required.
    skills: dict[str, int]
    language: str | None
    topics: tuple[str, ...] = ()
    #: Names of the keyword rules and other inputs that set the priority.
    priority_from: tuple[str, ...] = field(default=())


def most_urgent(priorities: Sequence[Priority]) -> Priority:
    return min(priorities, key=lambda p: p.rank)


def classify(
    activity: ConversationActivity, policy: RoutingPolicy, detect: LanguageDetector
) -> Classified | None:
    """Priority, skills and language; None for messages nobody waits on (auto-replies,
    reactions, edits), which are never routed."""
    if activity.auto_submitted or not activity.expects_reply:
        return None
    rules = policy.classification
    text = f"{activity.subject or ''}\n{activity.text}"
    priorities = [rules.default_priority]
    sources = ["default"]
    if activity.channel in rules.channels:
        priorities.append(rules.channels[activity.channel])
        sources.append(f"channel:{activity.channel}")
    if activity.customer_tier is not None and activity.customer_tier in rules.tiers:
        priorities.append(rules.tiers[activity.customer_tier])
        sources.append(f"tier:{activity.customer_tier}")
    for rule in rules.keyword_rules:
        if rule.priority is not None and _matches(rule.keywords, text):
            priorities.append(rule.priority)
            sources.append(f"keywords:{rule.name}")
    priority = most_urgent(priorities)
    skills: dict[str, int] = {}
    topics: list[str] = []
    for topic in rules.topics:
        if _matches(topic.keywords, text):
            topics.append(topic.name)
            for name, level in topic.skills.items():
                skills[name] = max(level, skills.get(name, 0))
    language = detect_language(activity.text or activity.subject or "", policy, detect)
    if language is not None:
        skills[LANGUAGE_SKILL_PREFIX + language] = 1
    chosen = tuple(s for s, p in zip(sources, priorities, strict=True) if p == priority)
    return Classified(priority, skills, language, tuple(topics), chosen)


def activity_reason(activity: ConversationActivity, classified: Classified) -> dict[str, Any]:
    """The ``reason`` of a decision a customer message triggered."""
    return {
        "trigger": f"activity:{activity.kind}",
        # The customer message behind the decision: lets frontends and operators trace a
        # decision back to the timeline (and benchmarks measure latency).
        "message_id": activity.message_id,
        "classification": {
            "priority_from": list(classified.priority_from),
            "topics": list(classified.topics),
            "language": classified.language,
        },
    }


def detect_language(text: str, policy: RoutingPolicy, detect: LanguageDetector) -> str | None:
    rules = policy.classification.language
    stripped = text.strip()
    if not rules.detect or len(stripped) < rules.min_length:
        return rules.default
    code, confidence = detect(stripped, rules.candidates)
    return code if confidence >= rules.min_confidence else rules.default


def select_queue(
    classified: Classified,
    policy: RoutingPolicy,
    *,
    channel: str,
    customer_tier: str | None,
    tenant: str | None,
) -> QueuePolicy:
    """The first queue whose conditions hold; the overflow queue when none does."""
    for queue in policy.queues:
        if _conditions_hold(queue.when, classified, channel, customer_tier, tenant):
            return queue
    fallback = policy.queue(policy.overflow.name)
    assert fallback is not None  # noqa: S101 - the overflow queue always exists
    return fallback


def queue_for(
    activity: ConversationActivity, classified: Classified, policy: RoutingPolicy
) -> QueuePolicy:
    """The queue a customer message sends its conversation to."""
    return select_queue(
        classified,
        policy,
        channel=str(activity.channel),
        customer_tier=activity.customer_tier,
        tenant=activity.tenant,
    )


def _conditions_hold(
    when: Conditions,
    classified: Classified,
    channel: str,
    customer_tier: str | None,
    tenant: str | None,
) -> bool:
    # Channel and Priority are string enums: their members equal their plain values.
    checks: list[tuple[Sequence[str] | None, str | None]] = [
        (when.channel, channel),
        (when.priority, classified.priority),
        (when.language, classified.language),
        (when.customer_tier, customer_tier),
        (when.tenant, tenant),
    ]
    if any(allowed is not None and value not in allowed for allowed, value in checks):
        return False
    return when.skills is None or all(s in classified.skills for s in when.skills)


def _matches(keywords: Sequence[str], text: str) -> bool:
    return _pattern(tuple(keywords)).search(text) is not None


@cache
def _pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(k.lower()) for k in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class Py3LangIdDetector:
    """``py3langid`` (langid.py's model, shipped inside the wheel: works offline).

    Loading the model takes about half a second, so it happens once, on first use.
    """

    def __init__(self) -> None:
        self._identifiers: dict[tuple[str, ...], Callable[[str], tuple[str, float]]] = {}

    def __call__(self, text: str, candidates: Sequence[str]) -> tuple[str, float]:
        key = tuple(sorted(candidates))
        classify_text = self._identifiers.get(key)
        if classify_text is None:
            # No type information ships with py3langid; its two names are used as documented.
            from py3langid.langid import (  # type: ignore[import-untyped]
                MODEL_FILE,
                LanguageIdentifier,
            )

            identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            identifier.set_languages(list(key))
            classify_text = identifier.classify
            self._identifiers[key] = classify_text
        code, confidence = classify_text(text)
        return str(code), float(confidence)
