"""Replies to web chat visitors: the hand-over is storing the reply in the visitor's
mailbox, which any replica's socket then shows (``hub``).

The shared ``ReplyDispatcher`` calls ``WebchatSender``; a reply is written once per
``reply_id`` (its entry id is planned from it, so a hand-over that died midway is simply
written again under the same id) and then pushed to this replica's open sockets at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from pymongo.errors import PyMongoError

from switchboard_common.contract import Channel, ReplyDelivery
from switchboard_common.logging import get_logger
from switchboard_common.outbound import Accepted, Outcome, Refused, Unavailable
from switchboard_webchat.mailbox import (
    Entry,
    Fallback,
    Mailboxes,
    NewEntry,
    mailbox_key,
    reply_entry_id,
)

log = get_logger(__name__)


def recipient_of(order: ReplyDelivery) -> str:
    """The mailbox's recipient: a visitor id, or a vouched email (lower-cased, as the
    router's identities are)."""
    return order.recipient.lower() if "@" in order.recipient else order.recipient


class WebchatSender:
    """The ``ChannelSender`` of web chat."""

    channels = frozenset({Channel.WEBCHAT})

    def __init__(
        self,
        mailboxes: Mailboxes,
        *,
        site: str,
        stored: Callable[[Sequence[Entry]], None],
        clock: Callable[[], datetime],
        email_fallback: timedelta | None = None,
    ) -> None:
        self._mailboxes = mailboxes
        self._site = site
        self._stored = stored
        self._clock = clock
        self._email_fallback = email_fallback

    def planned_id(self, order: ReplyDelivery) -> str:
        return reply_entry_id(order.reply_id)

    def _fallback(self, order: ReplyDelivery, now: datetime) -> Fallback | None:
        """An agent's reply to a vouched visitor (an email address) gets an email copy
        if no widget shows it in time; acknowledgements never do."""
        if self._email_fallback is None or order.automatic or "@" not in order.recipient:
            return None
        return Fallback(
            order.customer_id, order.agent_id, order.requested_at, now + self._email_fallback
        )

    async def send_all(self, orders: Sequence[ReplyDelivery]) -> list[Outcome]:
        now = self._clock()
        outcomes: list[Outcome | None] = []
        new: list[NewEntry] = []
        for order in orders:
            if (order.account or self._site) != self._site:
                outcomes.append(
                    Refused(
                        "webchat_unknown_site",
                        "the reply names a site this web chat does not serve",
                    )
                )
                continue
            outcomes.append(None)
            new.append(
                NewEntry(
                    entry_id=reply_entry_id(order.reply_id),
                    mailbox=mailbox_key(self._site, recipient_of(order)),
                    sender="switchboard" if order.automatic else "agent",
                    text=order.text,
                    at=now,
                    reply_id=order.reply_id,
                    conversation_id=order.conversation_id,
                    fallback=self._fallback(order, now),
                )
            )
        try:
            entries = await self._mailboxes.append(new)
        except PyMongoError as error:
            log.warning("mailbox unavailable for replies", error_type=type(error).__name__)
            return [o or Unavailable(f"mailbox: {type(error).__name__}") for o in outcomes]
        self._stored(entries)
        stored = iter(entries)
        return [
            o or Accepted(provider_message_id=next(stored).entry_id, requested_at=now)
            for o in outcomes
        ]
