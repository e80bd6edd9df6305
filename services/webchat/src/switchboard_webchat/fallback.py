"""Optional (``WEBCHAT_EMAIL_FALLBACK_SECONDS``): a reply to a vouched visitor that no
widget has shown in time also goes to them by email.

Each replica's loop claims the copies that are due (``Mailboxes.claim_fallbacks``: one
replica wins each) and publishes them as email orders on the reply-deliveries topic,
which the email channel's sender (ingest-email) sends like any reply. A copy is marked
``automatic``: the agent's reply was handed over already (on web chat), so the copy is
no new response and publishes no second ``support.reply.sent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from pymongo.errors import PyMongoError

from switchboard_common.contract import REPLY_DELIVERIES, Channel, ReplyDelivery
from switchboard_common.kafka import Outgoing
from switchboard_common.logging import get_logger
from switchboard_common.publishing import DurablePublisher, PublishUnavailableError
from switchboard_webchat.mailbox import Entry, Fallback, Mailboxes

log = get_logger(__name__)


def email_copy(entry: Entry, fallback: Fallback, *, sender: str, now: datetime) -> ReplyDelivery:
    """The email order for a reply not seen on web chat (pure). Same ``reply_id``: the
    same reply, on a second channel."""
    _, _, address = entry.mailbox.partition("/")
    return ReplyDelivery(
        reply_id=str(entry.reply_id),
        conversation_id=str(entry.conversation_id),
        customer_id=fallback.customer_id,
        agent_id=fallback.agent_id,
        channel=Channel.EMAIL,
        recipient=address,
        account=sender,
        text=entry.text,
        requested_at=fallback.requested_at,
        ordered_at=now,
        automatic=True,
    )


class EmailFallback:
    """The background loop that sends due copies."""

    def __init__(
        self,
        mailboxes: Mailboxes,
        publisher: DurablePublisher,
        *,
        sender: str,
        interval: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._mailboxes = mailboxes
        self._publisher = publisher
        self._sender = sender
        self._interval = interval
        self._clock = clock

    async def tick(self, now: datetime | None = None) -> int:
        """Send the copies due by ``now`` (the clock's reading by default); how many.
        Copies not published are due again."""
        now = now or self._clock()
        due = await self._mailboxes.claim_fallbacks(now)
        sent = [entry for entry, _ in due]
        copies = [
            email_copy(entry, fallback, sender=self._sender, now=now)
            for entry, fallback in due
            if entry.reply_id and entry.conversation_id
        ]
        if copies:
            try:
                await self._publisher.publish(
                    [
                        Outgoing(
                            REPLY_DELIVERIES,
                            copy.conversation_id,
                            copy,
                            event_id=f"reply:{copy.reply_id}:email",
                        )
                        for copy in copies
                    ]
                )
            except PublishUnavailableError:
                await self._mailboxes.unclaim_fallbacks(sent)
                raise
        await self._mailboxes.fallbacks_sent(sent)
        return len(copies)

    async def run(self) -> None:
        """Every interval, ``tick``; a failed tick is logged and tried again."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except (PyMongoError, PublishUnavailableError) as error:
                log.warning("email copies not sent yet", error_type=type(error).__name__)
