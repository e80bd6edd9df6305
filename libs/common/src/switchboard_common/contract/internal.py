"""Router-internal events: NOT part of the public contract.

The router is a pipeline of stages connected by internal topics (see
``services/router/README.md``). Frontends and other services must not consume these;
they may change without a version bump. They live here only so that the shared batch
consumer can check them like any other topic.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime

from switchboard_common.contract.enums import Channel
from switchboard_common.contract.events import ContractModel, MessageReceived, NonEmptyStr


class CustomerMessage(ContractModel):
    """A customer message after identity resolution, re-keyed by ``customer_id``.

    Identity resolution publishes it; the timeline consumes it. Keying by customer
    keeps one customer's messages in order even when they arrive on several channels
    (whose sender keys land on different partitions of ``support.inbound.v1``).

    ``customer_id`` is the customer the sender identity belongs to. When that customer has
    been merged into another, ``merged_into`` names the customer routing sees; the key
    stays ``customer_id``, so merging never moves a customer's messages between partitions.
    """

    ce_type: ClassVar[str] = "switchboard.router.customer_message"

    customer_id: NonEmptyStr
    #: The identity the sender resolved to, e.g. ``email:ana@example.com``.
    identity: NonEmptyStr
    message: MessageReceived
    resolved_at: AwareDatetime
    #: extension: the customer ``customer_id`` is merged into, when it is.
    merged_into: str | None = None
    #: extension: the tier of the customer routing sees (from a CRM profile).
    customer_tier: str | None = None


class ConversationStatusChanged(ContractModel):
    """A frontend resolved or reopened a conversation, re-keyed by ``customer_id``.

    The timeline forwards ``support.conversation.resolved``/``reopened`` onto the customer's
    stream so that threading sees status changes in order with the customer's messages.
    """

    ce_type: ClassVar[str] = "switchboard.router.conversation_status_changed"

    customer_id: NonEmptyStr
    conversation_id: NonEmptyStr
    status: Literal["resolved", "reopened"]
    at: AwareDatetime


class CustomerErased(ContractModel):
    """A customer's personal data was erased (GDPR); keyed by ``customer_id``.

    The timeline drops what it holds of the customer when it reaches this record and hands any
    later message filed under the customer back to identity resolution.
    """

    ce_type: ClassVar[str] = "switchboard.router.customer_erased"

    customer_id: NonEmptyStr
    erasure_id: NonEmptyStr
    at: AwareDatetime


class ReplyDelivery(ContractModel):
    """A requested reply with what sending it on its channel needs; keyed by
    ``conversation_id``.

    The router publishes it for each ``support.reply.requested`` it can address (it
    keeps the conversations and the customers' addresses); the service that speaks the
    channel (ingest-email for email) sends it and publishes ``support.delivery.updated``.
    Internal between Switchboard's own services: not for frontends.
    """

    ce_type: ClassVar[str] = "switchboard.router.reply_delivery"

    reply_id: NonEmptyStr
    conversation_id: NonEmptyStr
    customer_id: NonEmptyStr
    agent_id: NonEmptyStr
    channel: Channel
    #: The customer's address on the channel (an email address, an E.164 number, ...).
    recipient: NonEmptyStr
    #: The support address, page or bot the customer wrote to (the reply comes from it).
    account: str | None
    text: str
    html: str | None = None
    #: Email: the conversation's subject and the customer's Message-IDs in it, oldest
    #: first, so that the customer's mail client threads the reply.
    subject: str | None = None
    references: tuple[str, ...] = ()
    requested_at: AwareDatetime
    ordered_at: AwareDatetime
    #: An automatic acknowledgement, not an agent's reply: marked as such on the channel
    #: (email: ``Auto-Submitted: auto-replied``), and no ``support.reply.sent`` (it is no
    #: response, so SLA clocks keep running).
    automatic: bool = False
