"""A sample trace, generated deterministically: a day of a support team, recorded.

Customers write on email, chat and social channels, in English and Spanish, about
billing, technical problems and orders (a few VIPs); agents with skills and languages
work shifts. Each conversation is drawn a first-reply delay and a handling time by
channel. The trace then records what the router did with that traffic under a policy:
the sample is replayed through the engine with the drawn handling times, and the
decisions and the agents' work are written out as the router and the frontends would
have published them. Same arguments, same file, byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from switchboard_common.cloudevents import CloudEventAttributes
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    Channel,
    ConversationActivity,
    ConversationResolved,
    ReplySent,
)
from switchboard_common.contract.events import ContractModel
from switchboard_router.assignment.classify import LanguageDetector
from switchboard_router.assignment.executor import event_for
from switchboard_router.assignment.policy import RoutingPolicy
from switchboard_router.simulation.handling import Script, Step
from switchboard_router.simulation.replay import replay
from switchboard_router.simulation.trace import Trace, TraceRecord, event_line

DAY = datetime(2026, 3, 2, tzinfo=UTC)
SOURCE = "/switchboard/sample"

#: Channel mix, and (median first reply, median handling) in seconds by channel.
CHANNELS: tuple[tuple[Channel, float, float, float], ...] = (
    (Channel.EMAIL, 0.45, 240.0, 420.0),
    (Channel.WHATSAPP, 0.35, 40.0, 240.0),
    (Channel.MESSENGER, 0.1, 40.0, 200.0),
    (Channel.INSTAGRAM, 0.1, 120.0, 300.0),
)
TEXTS = {
    ("en", "billing"): "I was charged twice, please refund the second payment on my invoice",
    ("en", "technical"): "The app shows an error and I cannot log in since this morning",
    ("en", "orders"): "Where is my order? The delivery tracking has not moved for days",
    ("en", None): "Hello, I have a question about my account settings please",
    ("es", "billing"): "Me cobraron dos veces, necesito un reembolso de la factura por favor",
    ("es", "technical"): "La aplicación da un error y no puedo entrar desde esta mañana",
    ("es", "orders"): "¿Dónde está mi pedido? El seguimiento no se mueve desde hace días",
    ("es", None): "Hola, tengo una pregunta sobre la configuración de mi cuenta",
}
TOPICS = ("billing", "technical", "orders", None)


@dataclass(frozen=True)
class _Conversation:
    activity: ConversationActivity
    first_reply: float
    handling: float


class _Drawn:
    """The sample's agents' work: each conversation's drawn reply and resolution."""

    def __init__(self, conversations: dict[str, _Conversation]) -> None:
        self.conversations = conversations
        self.unassigned: Sequence[TraceRecord] = ()

    def script(
        self, conversation_id: str, nth: int, agent_id: str, queue: str, channel: str
    ) -> Script:
        del queue, channel
        drawn = self.conversations[conversation_id]
        at = drawn.activity.received_at
        reply = ReplySent(conversation_id=conversation_id, agent_id=agent_id, sent_at=at)
        resolved = ConversationResolved(conversation_id=conversation_id, at=at)
        steps = [
            Step(drawn.first_reply, _record(CONVERSATION_EVENTS, conversation_id, reply, at, "r")),
            Step(drawn.handling, _record(CONVERSATION_EVENTS, conversation_id, resolved, at, "d")),
        ]
        return Script("recorded", steps if nth == 0 else steps[1:], agent_id)


def _record(topic: str, key: str, event: ContractModel, at: datetime, tag: str) -> TraceRecord:
    attributes = CloudEventAttributes(f"{key}-{tag}", event.ce_type, SOURCE, at)
    return TraceRecord(topic, key, attributes, event)


def _agents(rng: random.Random, count: int, hours: float) -> list[TraceRecord]:
    """Profiles at the start of the day, and shifts (online, offline) across it."""
    records: list[TraceRecord] = []
    # Two overlapping shifts: half the team early and late, all of it in between.
    shift = hours * 2 / 3
    for n in range(count):
        agent_id = f"agent-{n + 1:03d}"
        skills = {
            t: rng.randint(3, 9) for t in ("billing", "technical", "orders") if rng.random() < 0.45
        }
        if n % 10 == 0:
            skills["vip"] = 5
        languages = ["en", "es"] if rng.random() < 0.3 else ["en"]
        capacity = {
            Channel.EMAIL: 4,
            Channel.WHATSAPP: 3,
            Channel.MESSENGER: 3,
            Channel.INSTAGRAM: 3,
        }
        profile = AgentUpserted(
            agent_id=agent_id,
            display_name=f"Agent {n + 1}",
            skills=skills,
            capacity=capacity,
            languages=languages,
        )
        records.append(_record(AGENT_EVENTS, agent_id, profile, DAY, "profile"))
        start = DAY + timedelta(hours=(hours - shift) * (n % 2))
        end = start + timedelta(hours=shift)
        for status, at in ((AgentStatus.ONLINE, start), (AgentStatus.OFFLINE, end)):
            event = AgentStatusChanged(agent_id=agent_id, status=status, at=at)
            records.append(_record(AGENT_EVENTS, agent_id, event, at, str(status)))
    return records


def _conversations(rng: random.Random, count: int, hours: float) -> dict[str, _Conversation]:
    drawn: dict[str, _Conversation] = {}
    span = hours * 3600
    customers = max(1, int(count * 0.8))
    for n in range(count):
        cid = f"conv-{n + 1:06d}"
        channel, _, first, handling = rng.choices(CHANNELS, weights=[c[1] for c in CHANNELS])[0]
        language = "es" if rng.random() < 0.2 else "en"
        topic = rng.choice(TOPICS)
        customer = rng.randrange(customers)
        activity = ConversationActivity(
            conversation_id=cid,
            customer_id=f"cust-{customer:06d}",
            channel=channel,
            kind="opened",
            message_id=f"msg-{cid}",
            received_at=DAY + timedelta(milliseconds=int(rng.random() * span * 1000)),
            subject=None,
            text=TEXTS[(language, topic)],
            customer_tier="vip" if rng.random() < 0.03 else None,
        )
        drawn[cid] = _Conversation(
            activity,
            first_reply=rng.lognormvariate(0, 0.6) * first,
            handling=max(first, rng.lognormvariate(0, 0.5) * handling) + 30,
        )
    return drawn


async def sample_trace(
    policy: RoutingPolicy,
    *,
    conversations: int = 2000,
    agents: int = 20,
    hours: float = 12.0,
    seed: int = 7,
    detector: LanguageDetector | None = None,
) -> list[str]:
    """The sample's trace lines, in time order (see the module's docstring)."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not security
    team = _agents(rng, agents, hours)
    drawn = _conversations(rng, conversations, hours)
    inputs = [
        _record(CONVERSATION_ACTIVITY, cid, c.activity, c.activity.received_at, "m")
        for cid, c in drawn.items()
    ]
    trace = Trace(sorted([*team, *inputs], key=lambda r: r.time))
    outcome = await replay(trace, policy, _Drawn(drawn), label="sample", detector=detector)
    recorded = list(trace.records) + outcome.worked
    for cid, steps in outcome.decisions.items():
        for decision in steps:
            if decision.kind is None:
                continue
            event = event_for(decision)
            at = decision.state.decided_at
            attributes = CloudEventAttributes(
                f"{cid}:{decision.state.seq}", event.ce_type, "/switchboard/router", at
            )
            recorded.append(TraceRecord(ASSIGNMENTS, cid, attributes, event))
    recorded.sort(key=lambda r: (r.time, r.topic, r.key, r.attributes.id))
    return [event_line(r.topic, r.key, r.attributes, r.event) for r in recorded]
