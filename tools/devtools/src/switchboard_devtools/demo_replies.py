"""The demo's replies to customers: the acknowledgements Switchboard sent to the new email
conversations, one agent reply published as a helpdesk frontend does
(``support.reply.requested``), their statuses on ``support.outbound.v1``, and the mail
itself when ``make run``'s mail sink keeps it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from switchboard_common.contract.events import DeliveryUpdated, ReplyRequested
from switchboard_common.contract.topics import OUTBOUND
from switchboard_common.kafka import EventPublisher, Outgoing, make_broker
from switchboard_devkit.running.processes import outbox_dir
from switchboard_devtools.frontend import customer_timeline, eventually

if TYPE_CHECKING:
    from switchboard_devtools.demo import Demo, Seen

_T = TypeVar("_T")

#: What the agent answers (the first mail of the demo asks for a refund).
REPLY_TEXT = (
    "Hello, you are right: the second payment was a duplicate. We have refunded it; "
    "it reaches your account within three working days."
)


def say(text: str) -> None:
    print(text, flush=True)


def outbox() -> Path | None:
    """``SWITCHBOARD_DEMO_OUTBOX``, or ``make run``'s mail sink when this is a checkout."""
    given = os.environ.get("SWITCHBOARD_DEMO_OUTBOX")
    if given:
        return Path(given)
    try:
        return outbox_dir()
    except RuntimeError:  # not run from a checkout: no sink to read
        return None


async def until(found: Callable[[], _T | None], seconds: float) -> _T | None:
    """``found()`` once it has something, or None after ``seconds`` (the demo then says
    what is missing instead of failing)."""

    async def probe() -> _T | None:
        return found()

    try:
        return await eventually(probe, timeout=seconds)
    except AssertionError:
        return None


def acknowledgements(seen: Seen) -> list[DeliveryUpdated] | None:
    found = [s[-1] for reply_id, s in seen.deliveries.items() if reply_id.startswith("ack:")]
    return found or None


async def show_replies(demo: Demo, seen: Seen, auth: dict[str, str]) -> None:
    """``auth``: the router's read token, to find the first customer's conversation."""
    say("\nacknowledgements (support.delivery.updated on support.outbound.v1):")
    acks = await until(lambda: acknowledgements(seen), 10)
    if acks is None:
        say(
            "  none: ingest-email sends them once OUTBOUND_SMTP_URL names a relay "
            "(`make run` starts a local mail sink for it)"
        )
        return
    for ack in acks:
        say(f"  {ack.status:9} {ack.channel:6} {ack.conversation_id[:24]:24} {ack.reply_id[:40]}")
    # The agent answers the first customer (the refund), found through the read API.
    timeline = await customer_timeline(demo.services["router"], auth, f"email:{demo.customers[0]}")
    conversation_id = timeline["items"][0]["conversation_id"]
    agents = [getattr(d, "agent_id", None) for d in seen.decisions.get(conversation_id, [])]
    agent_id = next((a for a in reversed(agents) if a), "agent-ana")
    reply = ReplyRequested(
        reply_id=f"demo-{demo.run}-reply",
        conversation_id=conversation_id,
        agent_id=agent_id,
        text=REPLY_TEXT,
        requested_at=datetime.now(UTC),
    )
    broker = make_broker(demo.settings)
    await broker.connect()
    try:
        publisher = EventPublisher(
            broker, demo.settings.topics, "helpdesk-demo", publishes=[OUTBOUND]
        )
        await publisher.publish_all([Outgoing(OUTBOUND, conversation_id, reply)])
    finally:
        await broker.stop()
    say(f"\n{agent_id} replies (support.reply.requested on support.outbound.v1):")
    statuses = await until(lambda: seen.deliveries.get(reply.reply_id), 30)
    for status in statuses or []:
        said = status.error.code if status.error else status.provider_message_id
        say(f"  {status.status:9} {status.channel:6} {conversation_id[:24]:24} {said}")
    if statuses is None:
        say("  no status yet: see the ingest-email log")


def show_outbox(where: Path | None, customers: Sequence[str], since: float) -> None:
    """The mail the sink kept for the demo's customers since the demo started."""
    if where is None or not where.is_dir():
        return
    mails: list[EmailMessage] = []
    for path in sorted(where.glob("*.eml")):
        if path.stat().st_mtime < since:
            continue
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        if isinstance(mail, EmailMessage) and mail["To"] in customers:
            mails.append(mail)
    say(f"\nmail sent to the customers ({where}):")
    for mail in mails:
        body = mail.get_body(("plain",))
        first = body.get_content().strip().splitlines()[0] if body is not None else ""
        kind = "acknowledgement" if mail["Auto-Submitted"] else "agent reply"
        say(f"  {kind:15} To {mail['To']:26} {mail['Subject']}")
        say(f"  {'':15} In-Reply-To {mail['In-Reply-To']}  «{first[:70]}»")
    if not mails:
        say("  none yet")
