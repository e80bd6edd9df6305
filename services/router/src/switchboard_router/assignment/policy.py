"""The routing policy: classification rules, queues, steps, overflow, sticky routing,
offers, escalation and the scoring weights, read from YAML and validated at start.

``load_policy(path)`` raises ``PolicyError`` naming the file, the line, the field and the
problem, so a bad policy stops the router at start instead of misrouting at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from switchboard_common.contract import Channel, Priority
from switchboard_router.acknowledgements import Acknowledgements
from switchboard_router.surveys import Surveys

SkillName = Annotated[str, Field(min_length=1, max_length=100)]
MinLevel = Annotated[int, Field(ge=1, le=10)]
Seconds = Annotated[float, Field(ge=0, le=30 * 24 * 3600)]
LANGUAGE_SKILL_PREFIX = "language:"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KeywordRule(_Strict):
    """Words or phrases (case-insensitive, whole words) in the subject or text."""

    name: str
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    priority: Priority | None = None


class TopicRule(_Strict):
    """A topic recognised by keywords; it names skills with minimum levels, which a
    queue's target requires (``conversation_skills: all``) or prefers."""

    name: str
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    skills: dict[SkillName, MinLevel] = Field(min_length=1)


class LanguagePolicy(_Strict):
    """Message language as a required skill ``language:<code>`` (agents' ``languages``)."""

    detect: bool = True
    #: Languages the detector may answer (ISO 639-1); others are not considered.
    candidates: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(
        default_factory=lambda: ["en", "es", "fr", "de", "pt", "it", "nl"], min_length=1
    )
    #: Used when detection is off, the text is too short or the detector is unsure.
    default: Annotated[str, Field(pattern=r"^[a-z]{2}$")] | None = None
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5
    #: Texts shorter than this (characters) are not detected.
    min_length: Annotated[int, Field(ge=0)] = 12


class Classification(_Strict):
    """Priority is the most urgent of: default, channel default, tier, keyword rules."""

    default_priority: Priority = Priority.NORMAL
    channels: dict[Channel, Priority] = Field(default_factory=dict)
    tiers: dict[str, Priority] = Field(default_factory=dict)
    keyword_rules: list[KeywordRule] = Field(default_factory=list)
    topics: list[TopicRule] = Field(default_factory=list)
    language: LanguagePolicy = Field(default_factory=LanguagePolicy)


class Conditions(_Strict):
    """All given conditions must hold (an empty block matches everything)."""

    channel: list[Channel] | None = None
    priority: list[Priority] | None = None
    #: Every listed skill is among the conversation's skills (topics, language).
    skills: list[SkillName] | None = None
    language: list[str] | None = None
    customer_tier: list[str] | None = None
    tenant: list[str] | None = None


class Target(_Strict):
    """Which agents a queue's conversations may go to."""

    #: Which of the conversation's own skills (its topics' and ``language:<code>``) an
    #: agent must have: all of them, only the language, or none. Those not required still
    #: count towards skill fit, so the best-fitting free agent is preferred.
    conversation_skills: Literal["all", "language", "none"] = "all"
    #: Skills every agent of the queue needs, with minimum levels.
    required: dict[SkillName, MinLevel] = Field(default_factory=dict)


class Step(_Strict):
    """From ``after_seconds`` of waiting on, ``preferred`` skills are required; later
    steps relax them (TaskRouter workflow steps, Genesys bullseye rings)."""

    after_seconds: Seconds
    preferred: dict[SkillName, MinLevel] = Field(default_factory=dict)


class QueuePolicy(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    when: Conditions = Field(default_factory=Conditions)
    target: Target = Field(default_factory=Target)
    steps: list[Step] = Field(default_factory=list)
    #: Move to the overflow queue after waiting this long (never when unset).
    overflow_after_seconds: Seconds | None = None
    #: The same per channel, where its SLA budget differs (minutes on chat, a day by
    #: email); channels not listed use ``overflow_after_seconds``.
    overflow_after_seconds_by_channel: dict[Channel, Seconds] = Field(default_factory=dict)

    def overflow_after(self, channel: Channel) -> float | None:
        """Seconds a conversation of ``channel`` waits here before overflowing (None: never)."""
        return self.overflow_after_seconds_by_channel.get(channel, self.overflow_after_seconds)

    @model_validator(mode="after")
    def _steps_in_order(self) -> QueuePolicy:
        times = [s.after_seconds for s in self.steps]
        if times != sorted(times) or len(set(times)) != len(times):
            raise ValueError("steps must have strictly increasing after_seconds")
        return self


class OverflowPolicy(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        "overflow"
    )
    target: Target = Field(default_factory=lambda: Target(conversation_skills="language"))


class StickyPolicy(_Strict):
    """A returning customer is first offered to the agent who last served them."""

    enabled: bool = True
    #: How long the router remembers who served a customer.
    remember_seconds: Seconds = 7 * 24 * 3600
    #: How long a conversation waits for that agent (online but full) before anyone may
    #: take it; 0 means "only if free right now".
    wait_seconds: Seconds = 60


class OfferPolicy(_Strict):
    require_acceptance: bool = False
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30


class CapacityPolicy(_Strict):
    #: An offline agent keeps accepted work; after this long offline it is requeued
    #: (never when unset).
    offline_reassign_after_seconds: Seconds | None = None
    #: ``support.reply.sent`` with ``awaiting_customer`` frees the agent's slot; the next
    #: customer message routes back to that agent (sticky).
    release_when_awaiting_customer: bool = False
    #: Units of an agent's ``total_capacity`` one conversation of the channel takes.
    channel_weights: dict[Channel, Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=dict
    )

    def weight(self, channel: Channel) -> int:
        return self.channel_weights.get(channel, 1)


EscalationAction = Literal["raise_priority", "overflow", "none"]


class EscalationPolicy(_Strict):
    at_risk: EscalationAction = "raise_priority"
    breached: EscalationAction = "overflow"


class Scoring(_Strict):
    """score = skill_fit·fit + spare_capacity·spare + idle_time·idle (each term in 0..1).

    fit: mean level/10 over the skills the conversation names (1.0 when none);
    spare: free slots / capacity on the channel; idle: seconds since the agent's last
    assignment, capped at ``idle_cap_seconds``, over that cap (1.0 when never assigned).
    Ties: the longer idle agent, then the smaller agent id.
    """

    skill_fit: Annotated[float, Field(ge=0)] = 0.5
    spare_capacity: Annotated[float, Field(ge=0)] = 0.3
    idle_time: Annotated[float, Field(ge=0)] = 0.2
    idle_cap_seconds: Annotated[float, Field(gt=0)] = 600


class RoutingPolicy(_Strict):
    version: Literal[1] = 1
    classification: Classification = Field(default_factory=Classification)
    queues: list[QueuePolicy] = Field(min_length=1)
    overflow: OverflowPolicy = Field(default_factory=OverflowPolicy)
    sticky: StickyPolicy = Field(default_factory=StickyPolicy)
    offers: OfferPolicy = Field(default_factory=OfferPolicy)
    capacity: CapacityPolicy = Field(default_factory=CapacityPolicy)
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    scoring: Scoring = Field(default_factory=Scoring)
    #: None: the ROUTER_ACKNOWLEDGE_* settings decide (email by default).
    acknowledgements: Acknowledgements | None = None
    #: None: no surveys (they are off unless configured).
    surveys: Surveys | None = None

    @model_validator(mode="after")
    def _names_unique(self) -> RoutingPolicy:
        names = [q.name for q in self.queues]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"queue names must be unique: {', '.join(duplicates)}")
        if self.overflow.name in names:
            raise ValueError(f"overflow queue {self.overflow.name!r} is also a normal queue")
        for rule in self.acknowledgements.rules if self.acknowledgements else ():
            unknown = sorted(set(rule.when.queue or ()) - set(self.queue_names))
            if unknown:
                raise ValueError(f"acknowledgement rule for unknown queue(s): {', '.join(unknown)}")
        return self

    def queue(self, name: str) -> QueuePolicy | None:
        """A queue by name; the overflow queue is a queue without steps."""
        for q in self.queues:
            if q.name == name:
                return q
        if name == self.overflow.name:
            return QueuePolicy(name=name, target=self.overflow.target)
        return None

    @property
    def queue_names(self) -> list[str]:
        return [*(q.name for q in self.queues), self.overflow.name]


class PolicyError(ValueError):
    """The policy file is unreadable or invalid; the message says where and why."""


DEFAULT_POLICY = "default_policy.yaml"


def default_policy_text() -> str:
    """The policy shipped in the package."""
    return resources.files(__package__).joinpath(DEFAULT_POLICY).read_text(encoding="utf-8")


def load_policy(path: Path | None = None) -> RoutingPolicy:
    """Read and validate a policy file (the packaged default when ``path`` is None)."""
    if path is None:
        return parse_policy(default_policy_text(), source=f"<package>/{DEFAULT_POLICY}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the routing policy ({error.strerror})") from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "<policy>") -> RoutingPolicy:
    """Validate policy YAML; raises ``PolicyError`` with ``source:line: field: problem``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: the policy must be a mapping with a 'queues' list")
    try:
        return RoutingPolicy.model_validate(data)
    except ValidationError as error:
        problems = [
            f"{source}:{_line_of(node, e['loc'])}: {_dotted(e['loc'])}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False)
        ]
        raise PolicyError("invalid routing policy:\n  " + "\n  ".join(problems)) from None


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(node: Any, loc: Sequence[int | str]) -> int:
    """The 1-based line of the deepest YAML node on ``loc`` that exists."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
