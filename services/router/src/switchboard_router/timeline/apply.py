"""The timeline (group ``router-timeline``): thread customer messages and store them once.

Consumes ``switchboard.router.customer-messages.v1`` (keyed by customer, so one
customer's records arrive in order on one partition), plans each customer's share of the
batch with the pure fold (``plan.plan_customer``) and writes, in this order:

1. exclusive thread claims for conversations opened on a thread (``_id`` names the
   thread step; a lost claim means another replica opened it: adopt theirs, re-plan);
2. the timeline entries (``_id`` = ``message_id``; an entry already stored is a replay:
   its stored placement wins, the customer is re-planned);
3. conversations whose state changed, the Message-IDs the state stops holding (the
   Message-ID index: the state keeps each customer's latest), erasures;
4. the customers' threading state;
5. one ``ConversationActivity`` per message (key ``conversation_id``), published for
   the SLA monitor and handed to assignment (``route``) in this same batch, so a message
   reaches its routing decision without another trip through Kafka.

A crash between any two steps is repaired by the replay: entries are the source of
truth, everything else is re-derived from them idempotently. Offsets are committed by
the shared ``BatchConsumer`` only after all of it.

The state of customers is cached between batches while this replica keeps consuming a
partition without a gap; any gap (rebalance, a record isolated by the consumer) drops
the cache, so a state written by another replica is never overwritten from memory.
"""

from __future__ import annotations

import heapq
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    CONVERSATION_ACTIVITY,
    REPLY_DELIVERIES,
    ConversationActivity,
    ConversationStatusChanged,
    CustomerErased,
    CustomerMessage,
)
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.metrics import add_tally
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.documents import (
    conversation_from,
    conversation_opening,
    message_document,
)
from switchboard_router.timeline.identity import may_link
from switchboard_router.timeline.plan import (
    Applied,
    CustomerPlan,
    ErasureItem,
    Item,
    MessageItem,
    plan_customer,
)
from switchboard_router.timeline.ports import Claim, ConversationWrite, RawMail, TimelineStore
from switchboard_router.timeline.raw_mail import erase_raw_mail
from switchboard_router.timeline.replies import (
    AcknowledgementPolicy,
    acknowledgement,
    acknowledgement_claim,
    wants_acknowledgement,
)
from switchboard_router.timeline.resolve import IdentityResolver, Publisher, customer_message
from switchboard_router.timeline.surveyor import Surveyor, quieted
from switchboard_router.timeline.threading import (
    CustomerState,
    Placement,
    Policy,
    StatusChange,
)

log = get_logger(__name__)

#: Re-planning rounds per batch before giving up (the batch is then retried whole).
MAX_ROUNDS = 8
#: Steps followed along a thread's chain of claims.
MAX_CHAIN = 64


#: Where stored customer messages go to be routed (assignment's ``route_messages``,
#: wired by the shell), with each newly opened conversation's ``earlier`` ones: raises to
#: have the batch retried.
Route = Callable[[Sequence[ConversationActivity], Mapping[str, Sequence[str]]], Awaitable[None]]
#: The queue a conversation's first message goes to and its language (assignment's
#: classification, wired by the shell): acknowledgement rules may name either.
QueueOf = Callable[[ConversationActivity], tuple[str, str | None]]
#: A new conversation's earlier ones handed to routing (most recently active first):
#: sticky routing reads their heads for the agent who last served the customer.
EARLIER_CONVERSATIONS = 3


def _earlier_conversations(
    plans: Mapping[str, CustomerPlan], activities: Sequence[ConversationActivity]
) -> dict[str, list[str]]:
    """For each conversation a message of the batch opened, the customer's conversations
    opened before it that the state holds, most recently active first."""
    earlier: dict[str, list[str]] = {}
    for activity in activities:
        plan = plans.get(activity.customer_id)
        if activity.kind != "opened" or plan is None:
            continue
        conversations = plan.state.conversations
        opened = conversations.get(activity.conversation_id)
        if opened is None:
            continue
        before = heapq.nlargest(
            EARLIER_CONVERSATIONS,
            (
                c
                for c in conversations.values()
                if c.conversation_id != opened.conversation_id and c.opened_at <= opened.opened_at
            ),
            key=lambda c: (c.last_message_at, c.conversation_id),
        )
        if before:
            earlier[opened.conversation_id] = [c.conversation_id for c in before]
    return earlier


def _forgotten_refs(base: CustomerState, plan: CustomerPlan) -> list[tuple[str, str]]:
    """The Message-IDs (with their conversations) this batch known or placed that the new
    state no longer holds: they go to the Message-ID index, so a reply to them still finds
    its conversation. The state holds a customer's latest ``max_refs``, so most customers
    never write the index at all."""
    known = dict(base.refs)
    for applied in plan.applied:
        if applied.item.inbound.email_message_id and not applied.known:
            known[applied.item.inbound.email_message_id] = applied.placement.conversation_id
    return [
        (ref, conversation) for ref, conversation in known.items() if ref not in plan.state.refs
    ]


class ThreadClaimContendedError(TimeoutError):
    """Thread claims kept changing hands for a whole batch: another replica is writing
    the same customers. A timeout for the consumer, which retries the batch later."""


@dataclass
class _Work:
    """One customer's share of a batch while it is being settled."""

    base: CustomerState
    items: list[Item]
    #: The customer's state was found (in memory or in the store), so it is replaced.
    known: bool = True
    stored: dict[str, Placement] = field(default_factory=dict)
    adopt: dict[str, str] = field(default_factory=dict)
    plan: CustomerPlan | None = None


class TimelineStage:
    """The timeline's batch handler (see module docs)."""

    def __init__(
        self,
        store: TimelineStore,
        publisher: Publisher,
        resolver: IdentityResolver,
        *,
        raw_mail: RawMail,
        policy: Policy,
        clock: Callable[[], datetime],
        metrics: TimelineMetrics,
        route: Route | None = None,
        cache_size: int = 20_000,
        acknowledgements: AcknowledgementPolicy | None = None,
        queue_of: QueueOf | None = None,
        surveyor: Surveyor | None = None,
    ) -> None:
        self._acknowledgements = acknowledgements
        self._surveyor = surveyor
        self._queue_of = queue_of
        self._store = store
        self._publisher = publisher
        self._resolver = resolver
        self._raw_mail = raw_mail
        self._policy = policy
        self._clock = clock
        self._metrics = metrics
        self._route = route
        self._cache_size = cache_size
        self._cache: OrderedDict[str, CustomerState] = OrderedDict()
        self._next_offset: dict[tuple[str, int], int] = {}

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        self._check_continuity(deliveries)
        work = await self._load(self._group(deliveries))
        await self._prefetch(work)
        ratings = await self._survey_answers(work)
        await self._settle(work)
        plans = {customer_id: w.plan for customer_id, w in work.items() if w.plan is not None}
        await self._write(work)
        if self._surveyor is not None:
            await self._surveyor.schedule(list(plans.values()))
        rejected, activities = await self._publish(plans, deliveries, ratings)
        if self._route is not None and activities:
            # Replays too: a crash may have come between storing and routing them.
            await self._route(activities, _earlier_conversations(plans, activities))
        self._remember(plans)
        for delivery in deliveries:
            key = (delivery.record.topic, delivery.record.partition)
            self._next_offset[key] = max(self._next_offset.get(key, 0), delivery.record.offset + 1)
        return rejected

    # ----------------------------------------------------------------------- loading

    def _check_continuity(self, deliveries: Sequence[Delivery]) -> None:
        first: dict[tuple[str, int], int] = {}
        for delivery in deliveries:
            key = (delivery.record.topic, delivery.record.partition)
            first.setdefault(key, delivery.record.offset)
        for key, offset in first.items():
            expected = self._next_offset.get(key)
            if expected is not None and offset != expected:
                # Someone else may have consumed in between (or we are replaying after a
                # failure): memory may be stale, so trust only the store from here.
                log.info("partition gap, dropping cached timeline state", partition=key[1])
                self._cache.clear()
                self._next_offset.clear()
                return

    @staticmethod
    def _group(deliveries: Sequence[Delivery]) -> dict[str, list[Item]]:
        items: dict[str, list[Item]] = {}
        for delivery in deliveries:
            event = delivery.event
            if isinstance(event, CustomerMessage):
                items.setdefault(event.customer_id, []).append(MessageItem.of(event))
            elif isinstance(event, ConversationStatusChanged):
                items.setdefault(event.customer_id, []).append(
                    StatusChange(event.conversation_id, event.status, event.at)
                )
            elif isinstance(event, CustomerErased):
                items.setdefault(event.customer_id, []).append(
                    ErasureItem(event.erasure_id, event.at)
                )
        return items

    async def _load(self, items: dict[str, list[Item]]) -> dict[str, _Work]:
        work: dict[str, _Work] = {}
        cold = [customer_id for customer_id in items if customer_id not in self._cache]
        stored = await self._store.load_states(cold) if cold else {}
        loads: Tally[tuple[str, ...]] = Tally()
        for customer_id, customer_items in items.items():
            cached = self._cache.get(customer_id)
            if cached is not None:
                loads["cache",] += 1
                work[customer_id] = _Work(cached.copy(), customer_items)
                continue
            state = stored.get(customer_id)
            loads["new" if state is None else "store",] += 1
            work[customer_id] = _Work(
                state or CustomerState(customer_id), customer_items, known=state is not None
            )
        add_tally(self._metrics.state_loads, loads)
        return work

    async def _prefetch(self, work: dict[str, _Work]) -> None:
        """Bring into each base state what the batch refers to but the state forgot:
        conversations of status changes, and conversations of Message-IDs replied to."""
        # Message-IDs this batch places (and so puts in the state before any reply in it
        # is placed); a redelivered message the state already applied adds nothing.
        batch_ids = {
            i.inbound.email_message_id
            for w in work.values()
            for i in w.items
            if isinstance(i, MessageItem)
            and i.inbound.email_message_id
            and i.message_id not in w.base.applied
        }
        wanted: dict[str, set[str]] = {}
        refs: dict[str, list[str]] = {}
        for customer_id, w in work.items():
            wanted[customer_id] = set()
            unknown: set[str] = set()
            for item in w.items:
                if isinstance(item, StatusChange):
                    wanted[customer_id].add(item.conversation_id)
                elif isinstance(item, MessageItem) and item.message_id not in w.base.applied:
                    ids = item.inbound.thread_ids()
                    if ids and not any(r in w.base.refs for r in ids):
                        unknown.update(r for r in ids if r not in batch_ids)
            if unknown:
                refs[customer_id] = sorted(unknown)
        found = await self._store.get_refs_of(refs) if refs else {}
        for customer_id, known in found.items():
            base = work[customer_id].base
            for ref, conversation_id in known.items():
                base.refs.setdefault(ref, conversation_id)
                wanted[customer_id].add(conversation_id)
        await self._remember_many(
            {customer_id: work[customer_id].base for customer_id in wanted},
            {customer_id: sorted(ids) for customer_id, ids in wanted.items()},
        )

    async def _remember_many(
        self, states: dict[str, CustomerState], wanted: dict[str, list[str]]
    ) -> None:
        """Teach each customer's state the stored conversations it lacks among those it
        wants, in the order given (one read for the whole batch)."""
        missing = {
            customer_id: [
                i for i in dict.fromkeys(ids) if i not in states[customer_id].conversations
            ]
            for customer_id, ids in wanted.items()
        }
        every = sorted({i for ids in missing.values() for i in ids})
        if not every:
            return
        documents = await self._store.get_conversations(every)
        for customer_id, ids in missing.items():
            for conversation_id in ids:
                document = documents.get(conversation_id)
                if document is not None:
                    states[customer_id].remember(conversation_from(document))

    async def _remember_conversations(self, state: CustomerState, ids: set[str]) -> None:
        await self._remember_many({state.customer_id: state}, {state.customer_id: sorted(ids)})

    async def _survey_answers(self, work: dict[str, _Work]) -> list[Outgoing]:
        """Messages answering a survey join their conversation without reopening it or
        being routed; their ratings are published with the batch."""
        if self._surveyor is None:
            return []
        found = await self._surveyor.answers([(w.base, w.items) for w in work.values()])
        if not found:
            return []
        for w in work.values():
            w.items = [
                quieted(i) if isinstance(i, MessageItem) and i.message_id in found else i
                for i in w.items
            ]
        return [answer.outgoing() for answer in found.values()]

    # ----------------------------------------------------------------------- settling

    async def _settle(self, work: dict[str, _Work]) -> None:
        """Plan every customer, win the thread claims and store the entries; re-plan a
        customer whenever the store knows better (a lost claim, an entry already there)."""
        written: dict[str, Placement] = {}
        held: dict[str, str] = {}
        pending = set(work)
        for _ in range(MAX_ROUNDS):
            for customer_id in pending:
                w = work[customer_id]
                w.plan = plan_customer(
                    w.base,
                    w.items,
                    self._policy,
                    stored=w.stored,
                    adopt=w.adopt,
                )
            pending = await self._claim(work, held)
            if pending:
                self._metrics.replays.labels("claim").inc(len(pending))
                continue
            pending = await self._store_entries(work, written)
            if pending:
                self._metrics.replays.labels("stored").inc(len(pending))
                continue
            return
        raise ThreadClaimContendedError(
            "thread claims or timeline entries kept changing while planning the batch"
        )

    async def _claim(self, work: dict[str, _Work], held: dict[str, str]) -> set[str]:
        """Make the batch's new claims; ``held`` remembers those already won."""
        claims: dict[str, tuple[str, Claim]] = {}
        for customer_id, w in work.items():
            for applied in w.plan.fresh() if w.plan is not None else ():
                placement = applied.placement
                claim_id = placement.claim
                if claim_id is not None and held.get(claim_id) != placement.conversation_id:
                    claim = Claim(
                        claim_id, placement.conversation_id, applied.item.message_id, customer_id
                    )
                    claims[claim_id] = (customer_id, claim)
        if not claims:
            return set()
        holders = await self._store.claim_threads([c for _, c in claims.values()])
        lost: set[str] = set()
        for claim_id, (customer_id, claim) in claims.items():
            holder = holders.get(claim_id, claim.conversation_id)
            held[claim_id] = holder
            if holder != claim.conversation_id:
                await self._follow_thread(work[customer_id], claim_id, holder)
                lost.add(customer_id)
        return lost

    async def _follow_thread(self, w: _Work, claim_id: str, holder: str) -> None:
        """A claim was lost to ``holder``: learn the thread's latest conversation, or
        adopt ``holder``'s id if it never materialised (its opener died)."""
        if not await self._known(w.base, holder):
            w.adopt[claim_id] = holder
            return
        kind, _, previous = claim_id.partition("|")
        if kind == "after":
            w.base.successors[previous] = holder
        current = holder
        for _ in range(MAX_CHAIN):
            successor = await self._store.get_claim(f"after|{current}")
            if successor is None or not await self._known(w.base, successor.conversation_id):
                break
            w.base.successors[current] = successor.conversation_id
            current = successor.conversation_id
        conversation = w.base.conversations[current]
        if conversation.thread is not None:
            w.base.threads.pop(conversation.thread, None)
            w.base.threads[conversation.thread] = current

    async def _known(self, state: CustomerState, conversation_id: str) -> bool:
        await self._remember_conversations(state, {conversation_id})
        return conversation_id in state.conversations

    async def _store_entries(
        self, work: dict[str, _Work], written: dict[str, Placement]
    ) -> set[str]:
        now = self._clock()
        inserts, replaces = [], []
        owner: dict[str, str] = {}
        for customer_id, w in work.items():
            for applied in w.plan.fresh() if w.plan is not None else ():
                message_id = applied.item.message_id
                owner[message_id] = customer_id
                document = message_document(applied.item.record, applied.placement, now)
                if message_id not in written:
                    inserts.append(document)
                elif written[message_id] != applied.placement:
                    replaces.append(document)
                written[message_id] = applied.placement
        existing = await self._store.insert_messages(inserts)
        await self._store.replace_messages(replaces)
        if not existing:
            return set()
        for message_id in existing:
            written.pop(message_id, None)
        stored = await self._store.get_placements(sorted(existing))
        pending: set[str] = set()
        wanted: dict[str, list[str]] = {}
        for message_id, placement in sorted(stored.items()):
            customer_id = owner[message_id]
            work[customer_id].stored[message_id] = placement
            wanted.setdefault(customer_id, []).append(placement.conversation_id)
            pending.add(customer_id)
        await self._remember_many(
            {customer_id: work[customer_id].base for customer_id in wanted}, wanted
        )
        return pending

    # ----------------------------------------------------------------------- writing

    async def _write(self, work: dict[str, _Work]) -> None:
        now = self._clock()
        conversations: list[ConversationWrite] = []
        refs: list[tuple[str, str, str]] = []
        plans = {customer_id: w.plan for customer_id, w in work.items() if w.plan is not None}
        for customer_id, plan in plans.items():
            base = work[customer_id].base
            for conversation_id, opener in plan.changed.items():
                conversation = plan.state.conversations.get(conversation_id)
                if conversation is not None:
                    record = opener.record if opener is not None else None
                    conversations.append(
                        ConversationWrite(
                            customer_id,
                            conversation,
                            conversation_opening(customer_id, record),
                            created=conversation_id not in base.conversations,
                        )
                    )
            conversations += [
                ConversationWrite(customer_id, c, conversation_opening(customer_id, None))
                for c in plan.evicted
            ]
            if plan.erasure is None:  # erasure deletes the customer's index entries
                refs += [(customer_id, *ref) for ref in _forgotten_refs(base, plan)]
        await self._store.save_conversations(conversations)
        await self._store.insert_refs(refs)
        for customer_id, plan in plans.items():
            if plan.erasure is not None:
                counts = await self._store.erase([customer_id])
                counts["raw_messages"] = await erase_raw_mail(
                    self._store, self._raw_mail, [customer_id]
                )
                self._metrics.erasures.labels("applied").inc()
                log.info("timeline erased", customer_id=customer_id, **counts)
        created = [customer_id for customer_id, w in work.items() if not w.known]
        await self._store.save_states([p.state for p in plans.values()], now, created)

    async def _publish(
        self,
        plans: dict[str, CustomerPlan],
        deliveries: Sequence[Delivery],
        ratings: Sequence[Outgoing] = (),
    ) -> tuple[list[tuple[Delivery, str]], list[ConversationActivity]]:
        """Publish each stored message's activity (and messages to resolve again, and the
        batch's survey ratings); returns the records refused and the activities published."""
        outgoing: list[Outgoing] = list(ratings)
        rejected: list[tuple[Delivery, str]] = []
        by_message = {
            d.event.message.message_id: d
            for d in deliveries
            if isinstance(d.event, CustomerMessage)
        }
        counts = _Counts()
        for plan in plans.values():
            for applied in plan.applied:
                channel = applied.item.inbound.channel.value
                # A redelivered message is published again: its activity may be the one
                # a crash lost (same event id, so consumers recognise the copy).
                outgoing.append(activity(applied))
                outcome = "stored" if applied.fresh else "replayed"
                counts.messages[channel, "duplicate" if applied.known else outcome] += 1
                if applied.fresh:
                    counts.placed(applied)
            for change in plan.applied_status:
                counts.status_changes[change.status, "applied"] += 1
            for change in plan.unknown_status:
                counts.status_changes[change.status, "unknown"] += 1
                log.warning("status change for a conversation the timeline does not hold")
            for item in plan.reresolve:
                record = item.record
                resolution = await self._resolver.resolve(
                    record.identity,
                    channel=record.message.channel.value,
                    fresh=True,
                    may_link=may_link(record.message),
                )
                if resolution.customer_id == record.customer_id:
                    rejected.append(
                        (by_message[item.message_id], "identity still maps to an erased customer")
                    )
                    continue
                outgoing.append(customer_message(record.message, resolution, self._clock()))
                counts.messages[record.message.channel.value, "re_resolved"] += 1
        counts.add_to(self._metrics)
        outgoing += await self._acknowledge(plans)
        await self._publisher.publish_all(outgoing)
        activities = [o.event for o in outgoing if isinstance(o.event, ConversationActivity)]
        return rejected, activities

    async def _acknowledge(self, plans: dict[str, CustomerPlan]) -> list[Outgoing]:
        """Acknowledgements of the conversations this batch opened: one claim per customer
        and period decides which conversation gets one (a replayed batch wins the same
        claims again, and the dispatcher sends a ``reply_id`` once)."""
        policy = self._acknowledgements
        if policy is None:
            return []
        texts: dict[str, str] = {}  # message id → the acknowledgement's text
        wanted = []
        for plan in plans.values():
            for applied in plan.applied:
                if not wants_acknowledgement(
                    applied.item.record, applied.placement.kind == "opened", policy
                ):
                    continue
                queue, language = None, None
                if policy.needs_queue and self._queue_of is not None:
                    queue, language = self._queue_of(activity_of(applied))
                text = policy.text_for(applied.item.inbound.channel, queue, language)
                if text is not None:
                    texts[applied.item.message_id] = text
                    wanted.append(applied)
        if not wanted:
            return []
        claims = {
            acknowledgement_claim(a.item.record, policy): Claim(
                claim_id=acknowledgement_claim(a.item.record, policy),
                conversation_id=a.placement.conversation_id,
                message_id=a.item.message_id,
                customer_id=a.item.record.customer_id,
            )
            for a in reversed(wanted)  # the earliest message of a period claims it
        }
        winners = await self._store.claim_threads(list(claims.values()))
        now = self._clock()
        out = []
        for applied in wanted:
            conversation_id = applied.placement.conversation_id
            claim_id = acknowledgement_claim(applied.item.record, policy)
            if winners.get(claim_id) != conversation_id:
                continue
            record = applied.item.record
            text = texts[applied.item.message_id]
            out.append(
                Outgoing(
                    topic=REPLY_DELIVERIES,
                    key=conversation_id,
                    event=acknowledgement(record, conversation_id, text, now),
                    event_id=f"{record.message.message_id}:acknowledgement",
                )
            )
        self._metrics.acknowledgements.inc(len(out))
        return out

    def _remember(self, plans: dict[str, CustomerPlan]) -> None:
        if self._cache_size <= 0:
            return
        for customer_id, plan in plans.items():
            self._cache.pop(customer_id, None)
            self._cache[customer_id] = plan.state
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


@dataclass
class _Counts:
    """A batch's metric counts, added once per batch."""

    messages: Tally[tuple[str, ...]] = field(default_factory=Tally)
    status_changes: Tally[tuple[str, ...]] = field(default_factory=Tally)
    threading: Tally[tuple[str, ...]] = field(default_factory=Tally)
    conversations: Tally[tuple[str, ...]] = field(default_factory=Tally)

    def placed(self, applied: Applied) -> None:
        channel = applied.item.inbound.channel.value
        placement = applied.placement
        self.threading[channel, placement.rule] += 1
        if placement.kind != "message":
            self.conversations[channel, placement.kind] += 1
        if placement.closes is not None:
            self.conversations[channel, "closed_inactive"] += 1

    def add_to(self, metrics: TimelineMetrics) -> None:
        add_tally(metrics.messages, self.messages)
        add_tally(metrics.status_changes, self.status_changes)
        add_tally(metrics.threading, self.threading)
        add_tally(metrics.conversations, self.conversations)


def activity(applied: Applied) -> Outgoing:
    """The ``ConversationActivity`` of a stored message (deterministic event id)."""
    return Outgoing(
        topic=CONVERSATION_ACTIVITY,
        key=applied.placement.conversation_id,
        event=activity_of(applied),
        event_id=f"{applied.item.record.message.message_id}:activity",
    )


def activity_of(applied: Applied) -> ConversationActivity:
    record = applied.item.record
    message = record.message
    placement = applied.placement
    return ConversationActivity(
        conversation_id=placement.conversation_id,
        customer_id=record.merged_into or record.customer_id,
        channel=message.channel,
        kind=placement.kind,
        message_id=message.message_id,
        received_at=message.received_at,
        subject=message.subject,
        text=message.text[:4000],
        auto_submitted=message.auto_submitted,
        # The item's, not the message's: a survey's answer waits for nobody.
        expects_reply=applied.item.inbound.expects_reply,
        tenant=message.tenant,
        customer_tier=record.customer_tier,
        previous_conversation_id=placement.previous_conversation_id,
        message_count=placement.index,
    )
