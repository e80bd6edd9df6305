"""Group ``router-timeline-activity``: agent-side activity stored as timeline items.

Reads ``support.conversation-events.v1``, ``support.outbound.v1``,
``support.assignments.v1`` and the internal reply deliveries (see ``activity`` for which
event makes which item). A batch costs a fixed number of round trips: one read of its
conversations by ``_id`` (to file each item under the conversation's customer), one
unordered insert (a redelivered item is a duplicate key, ignored), and — when the batch
holds texts — one more read of those conversations, in case an erasure ran between the
first read and the insert (then one update redacts what it missed).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence

from switchboard_common.consumer import Delivery
from switchboard_common.metrics import add_tally
from switchboard_common.mongo import Document
from switchboard_router.metrics import TimelineMetrics
from switchboard_router.timeline.ports import TimelineStore
from switchboard_router.workspace.activity import activity_item, carries_personal_data, filed
from switchboard_router.workspace.activity_store import ActivityStore


class ActivityRecorder:
    """The batch handler of group ``router-timeline-activity``.

    An event about a conversation the timeline never stored (e.g. the ``failed`` status
    of a reply to an unknown conversation) makes no item and is counted, not
    dead-lettered: it is valid, there is just no customer to file it under. Never
    rejects a record; database errors propagate (the batch is retried).
    """

    def __init__(
        self, conversations: TimelineStore, activity: ActivityStore, metrics: TimelineMetrics
    ) -> None:
        self._conversations = conversations
        self._activity = activity
        self._metrics = metrics

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        drafts = [
            item for d in deliveries if (item := activity_item(d.event, d.attributes)) is not None
        ]
        if not drafts:
            return []
        conversations = await self._conversations.get_conversations(
            sorted({d["conversation_id"] for d in drafts})
        )
        documents: list[Document] = []
        outcomes: Tally[tuple[str, ...]] = Tally()
        for draft in drafts:
            conversation = conversations.get(draft["conversation_id"])
            if conversation is None:
                outcomes[draft["type"], "unknown_conversation"] += 1
                continue
            documents.append(filed(draft, conversation))
        existing = await self._activity.insert(documents)
        late = await self._redact_if_erased_meanwhile(documents)
        for document in documents:
            outcomes[
                document["type"], "duplicate" if document["_id"] in existing else "stored"
            ] += 1
        for document in late:
            outcomes[document["type"], "redacted_late"] += 1
        add_tally(self._metrics.activity, outcomes)
        return []

    async def _redact_if_erased_meanwhile(self, documents: Sequence[Document]) -> list[Document]:
        """An erasure marks the conversations erased, then redacts their items: read
        after our insert, a conversation not yet marked means the erasure's redaction
        comes later and finds our items; one marked now may have been redacted before
        our insert, so we redact ours (returned, to be counted)."""
        texts = [d for d in documents if carries_personal_data(d)]
        if not texts:
            return []
        now = await self._conversations.get_conversations(
            sorted({d["conversation_id"] for d in texts})
        )
        late = [d for d in texts if (now.get(d["conversation_id"]) or {}).get("erased")]
        if late:
            await self._activity.redact([d["_id"] for d in late])
        return late
