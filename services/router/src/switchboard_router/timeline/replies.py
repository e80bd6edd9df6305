"""Group ``router-replies``: a frontend's requested reply, addressed.

A ``support.reply.requested`` names a conversation and a text; sending it needs what only
the timeline keeps — the channel, the customer's address, the support address they
wrote to, and for email the subject and the customer's Message-IDs. ``plan_reply``
(pure) turns a request and the stored conversation into either a ``ReplyDelivery`` for
the service that speaks the channel or, when it cannot be sent, a ``failed``
``support.delivery.updated`` with the reason. ``ReplyPlanner`` is the batch handler: two
reads per batch (the conversations, their customers' threading states), one publish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    OUTBOUND,
    REPLY_DELIVERIES,
    Channel,
    CustomerMessage,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    ReplyDelivery,
    ReplyRequested,
)
from switchboard_common.kafka import Outgoing
from switchboard_common.mongo import Document
from switchboard_router.acknowledgements import (
    AcknowledgementConditions,
    AcknowledgementRule,
    Acknowledgements,
)
from switchboard_router.timeline.ports import TimelineStore
from switchboard_router.timeline.resolve import Publisher
from switchboard_router.timeline.threading import CustomerState, conversation_id_for

#: Channels a Switchboard service can send on, with the longest text each takes. A
#: longer reply is refused (``text_too_long``) rather than split: an email has no real
#: limit, and splitting mail would be worse than a clear refusal.
TEXT_LIMITS: Mapping[Channel, int] = {
    Channel.EMAIL: 100_000,
    Channel.WHATSAPP: 4096,  # Cloud API text body
    Channel.MESSENGER: 2000,  # Send API message.text
    Channel.INSTAGRAM: 1000,  # Instagram messaging text
    Channel.TELEGRAM: 4096,  # Bot API sendMessage text
    Channel.X: 10_000,  # X API v2 direct message text
    Channel.WEBCHAT: 10_000,  # the chat widget's own limit (WEBCHAT_MAX_MESSAGE_CHARS)
}
#: What a text's ``{reference}`` becomes: every conversation id is this long.
REFERENCE_LENGTH = len(conversation_id_for(""))
#: Channels whose providers take free-form replies only within a window after the
#: customer's last message (WhatsApp's and Messenger's customer-service window). X has
#: none: a customer's DM settings decide, and X refuses (403) a message they do not take.
REPLY_WINDOWS: Mapping[Channel, timedelta] = {
    Channel.WHATSAPP: timedelta(hours=24),
    Channel.MESSENGER: timedelta(hours=24),
    Channel.INSTAGRAM: timedelta(hours=24),
}
#: Identities scoped by the account the customer wrote to (``<kind>:<account>:<id>``).
ACCOUNT_SCOPED = frozenset({"messenger", "instagram", "telegram", "webchat"})
#: The customer's Message-IDs a reply's ``References`` carries (the newest ones).
MAX_REFERENCES = 20


def _failed(
    request: ReplyRequested, channel: Channel | None, code: str, text: str, now: datetime
) -> DeliveryUpdated:
    return DeliveryUpdated(
        reply_id=request.reply_id,
        conversation_id=request.conversation_id,
        channel=channel,
        status=DeliveryStatus.FAILED,
        error=DeliveryError(code=code, text=text),
        at=now,
    )


def recipient_of(identity: str) -> str:
    """The customer's address on the channel, from their identity: the address, number or
    user id (``email:<address>``, ``whatsapp:<E.164>``, ``x:<user id>``: X user ids are
    global, not per account), or the id after the account (``telegram:<bot id>:<user id>``).
    A vouched web chat visitor is addressed by email: the webchat service tells the two
    apart by the ``@`` its visitor ids never have."""
    kind, _, rest = identity.partition(":")
    return rest.rsplit(":", 1)[1] if kind in ACCOUNT_SCOPED else rest


def last_customer_message(conversation: Document, state: CustomerState | None) -> datetime | None:
    """When the customer last wrote to the account this conversation is on: the window is
    the customer's with the business number or page, whichever conversation it was in."""
    moments = [conversation["last_message_at"]] if conversation.get("last_message_at") else []
    if state is not None:
        moments += [
            c.last_message_at
            for c in state.conversations.values()
            if c.channel.value == conversation["channel"]
            and c.account == conversation.get("account")
        ]
    return max(moments, default=None)


def plan_reply(
    request: ReplyRequested,
    conversation: Document | None,
    state: CustomerState | None,
    now: datetime,
) -> ReplyDelivery | DeliveryUpdated:
    """What to do with one requested reply, given the stored conversation (None when the
    timeline never stored it) and its customer's threading state."""
    if conversation is None:
        return _failed(request, None, "unknown_conversation", "no conversation has this id", now)
    channel = Channel(conversation["channel"])
    identity = conversation.get("identity")
    if (state is not None and state.erased) or not identity:
        return _failed(request, channel, "erased", "the customer's personal data was erased", now)
    if not request.text.strip():
        return _failed(request, channel, "empty_text", "the reply has no text", now)
    limit = TEXT_LIMITS.get(channel)
    if limit is None:
        return _failed(
            request,
            channel,
            "channel_not_supported",
            f"replies on {channel.value} are not delivered by Switchboard yet",
            now,
        )
    if len(request.text) > limit:
        return _failed(
            request,
            channel,
            "text_too_long",
            f"{len(request.text)} characters; {channel.value} takes at most {limit}",
            now,
        )
    closed = hours_since_window(conversation, state, now)
    if closed is not None:
        window, hours = closed
        return _failed(
            request,
            channel,
            "outside_customer_service_window",
            f"{channel.value} takes free-form replies only within "
            f"{window} hours of the customer's last message "
            f"({hours} hours ago); the provider needs a template message",
            now,
        )
    return addressed(
        conversation,
        state,
        reply_id=request.reply_id,
        conversation_id=request.conversation_id,
        agent_id=request.agent_id,
        text=request.text,
        html=request.html,
        requested_at=request.requested_at,
        now=now,
    )


def hours_since_window(
    conversation: Document, state: CustomerState | None, now: datetime
) -> tuple[int, int] | None:
    """When the channel's reply window (``REPLY_WINDOWS``) has closed on the customer's
    last message: the window and the hours since that message, in hours. None: open, or
    the channel has none."""
    window = REPLY_WINDOWS.get(Channel(conversation["channel"]))
    if window is None:
        return None
    last = last_customer_message(conversation, state)
    if last is None or now - last <= window:
        return None
    return int(window.total_seconds() // 3600), int((now - last).total_seconds() // 3600)


def addressed(
    conversation: Document,
    state: CustomerState | None,
    *,
    reply_id: str,
    conversation_id: str,
    agent_id: str,
    text: str,
    requested_at: datetime,
    now: datetime,
    html: str | None = None,
    automatic: bool = False,
) -> ReplyDelivery:
    """A text for the customer of a stored conversation, addressed for the channel's
    sender: their address, the account they wrote to, and for email the subject and
    their Message-IDs, so their mail client threads it (and their answer threads back)."""
    references: tuple[str, ...] = ()
    if state is not None:
        # The state keeps Message-IDs oldest first, a customer's latest last.
        mine = [ref for ref, owner in state.refs.items() if owner == conversation_id]
        references = tuple(mine[-MAX_REFERENCES:])
    return ReplyDelivery(
        reply_id=reply_id,
        conversation_id=conversation_id,
        customer_id=str(conversation["customer_id"]),
        agent_id=agent_id,
        channel=Channel(conversation["channel"]),
        recipient=recipient_of(str(conversation["identity"])),
        account=conversation.get("account"),
        text=text,
        html=html,
        subject=conversation.get("subject"),
        references=references,
        requested_at=requested_at,
        ordered_at=now,
        automatic=automatic,
    )


class ReplyPlanner:
    """The batch handler of group ``router-replies`` on ``support.outbound.v1``: each
    ``support.reply.requested`` becomes a ``ReplyDelivery`` or a ``failed`` status (other
    types on the topic — the statuses themselves — are not requests)."""

    def __init__(
        self, store: TimelineStore, publisher: Publisher, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        requests = [(d, d.event) for d in deliveries if isinstance(d.event, ReplyRequested)]
        if not requests:
            return []
        conversations = await self._store.get_conversations(
            sorted({r.conversation_id for _, r in requests})
        )
        states = await self._store.load_states(
            sorted({str(c["customer_id"]) for c in conversations.values()})
        )
        now = self._clock()
        outgoing: list[Outgoing] = []
        for delivery, request in requests:
            conversation = conversations.get(request.conversation_id)
            state = None if conversation is None else states.get(str(conversation["customer_id"]))
            planned = plan_reply(request, conversation, state, now)
            if isinstance(planned, ReplyDelivery):
                topic, suffix = REPLY_DELIVERIES, "delivery"
            else:
                topic, suffix = OUTBOUND, "failed"
            # The request's id keeps a redelivered request's outcome the same event.
            outgoing.append(
                Outgoing(
                    topic=topic,
                    key=request.conversation_id,
                    event=planned,
                    event_id=f"{delivery.attributes.id}:{suffix}",
                )
            )
        await self._publisher.publish_all(outgoing)
        return []


# --------------------------------------------------------------------------- acknowledgements


@dataclass(frozen=True)
class AcknowledgementPolicy:
    """Which new conversations get an automatic acknowledgement, and what it says: the
    routing policy's ``acknowledgements`` rules (or one rule built from the
    ROUTER_ACKNOWLEDGE_* settings), the first match deciding."""

    rules: tuple[AcknowledgementRule, ...]
    #: At most one acknowledgement per customer in each period this long.
    window: timedelta

    def __post_init__(self) -> None:
        """A text some channel it may go to would refuse is a mistake in the policy: it
        is refused at start, not at the first customer's expense."""
        for rule in self.rules:
            if rule.text is None:
                continue
            text = rule.text.format(reference="c" * REFERENCE_LENGTH)
            for channel in sorted(covered(rule)):
                if len(text) > TEXT_LIMITS[channel]:
                    raise ValueError(
                        f"the text for {channel.value} is {len(text)} characters with its "
                        f"reference; {channel.value} takes {TEXT_LIMITS[channel]}"
                    )

    @classmethod
    def of_channels(
        cls, channels: frozenset[Channel], text: str, window: timedelta
    ) -> AcknowledgementPolicy:
        """One text for every new conversation on ``channels``."""
        when = AcknowledgementConditions(channel=sorted(channels))
        return cls((AcknowledgementRule(when=when, text=text),), window)

    @classmethod
    def of(cls, section: Acknowledgements) -> AcknowledgementPolicy:
        return cls(tuple(section.rules), timedelta(seconds=section.window_seconds))

    @property
    def channels(self) -> frozenset[Channel]:
        """The channels some rule may acknowledge (the others need no classification)."""
        out: set[Channel] = set()
        for rule in self.rules:
            if rule.text is not None:
                out |= covered(rule)
        return frozenset(out)

    @property
    def needs_queue(self) -> bool:
        """Whether a rule looks at the queue or the language (both come from classifying
        the message, which costs a language detection)."""
        return any(r.when.queue is not None or r.when.language is not None for r in self.rules)

    def text_for(self, channel: Channel, queue: str | None, language: str | None) -> str | None:
        """The text of the first rule that matches (None: no acknowledgement)."""
        for rule in self.rules:
            when = rule.when
            if (
                (when.channel is None or channel in when.channel)
                and (when.queue is None or queue in when.queue)
                and (when.language is None or language in when.language)
            ):
                return rule.text
        return None


def covered(rule: AcknowledgementRule) -> set[Channel]:
    """The channels a rule may acknowledge on: those it names (all when it names none)
    that a Switchboard service can send on."""
    return set(rule.when.channel or TEXT_LIMITS) & set(TEXT_LIMITS)


def acknowledgement_claim(record: CustomerMessage, policy: AcknowledgementPolicy) -> str:
    """The claim that lets one conversation per customer and period be acknowledged
    (periods of ``window``, counted from the epoch, by the message's receipt)."""
    period = int(record.message.received_at.timestamp() // policy.window.total_seconds())
    return f"ack|{record.customer_id}|{period}"


def wants_acknowledgement(
    record: CustomerMessage, opened: bool, policy: AcknowledgementPolicy
) -> bool:
    """A message that opens a conversation on an acknowledged channel and is written by
    a person: never auto-replies, bounces or bulk mail (``auto_submitted``), reactions or
    edits, so that two systems never answer each other."""
    message = record.message
    return (
        opened
        and message.channel in policy.channels
        and message.expects_reply
        and not message.auto_submitted
    )


def acknowledgement(
    record: CustomerMessage, conversation_id: str, text: str, now: datetime
) -> ReplyDelivery:
    """The acknowledgement of the message that opened ``conversation_id``; its
    ``reply_id`` is the conversation's, so it goes out once however often it is planned."""
    message = record.message
    references: tuple[str, ...] = ()
    if message.channel is Channel.EMAIL and message.provider_message_id:
        references = (*message.references[-(MAX_REFERENCES - 1) :], message.provider_message_id)
    return ReplyDelivery(
        reply_id=f"ack:{conversation_id}",
        conversation_id=conversation_id,
        customer_id=record.merged_into or record.customer_id,
        agent_id="switchboard",
        channel=message.channel,
        recipient=recipient_of(record.identity),
        account=message.account,
        text=text.format(reference=conversation_id),
        subject=message.subject,
        references=references,
        requested_at=now,
        ordered_at=now,
        automatic=True,
    )
