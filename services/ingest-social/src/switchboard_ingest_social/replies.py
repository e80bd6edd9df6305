"""Agent replies on WhatsApp, Messenger, Instagram, X and Telegram: each provider's send API
as a ``ChannelSender``; ``switchboard_common.outbound`` does the rest (once per
``reply_id``, retries, statuses). See the README's "Replies".

- WhatsApp Cloud API: ``POST {META_GRAPH_API_URL}/{version}/{phone_number_id}/messages``
  with the access token, a text message to the customer's number. The answer's
  ``messages[0].id`` (a ``wamid``) is the provider message id; delivery, read and
  failure (the 24-hour customer-service window, 131047) come later in status webhooks.
- Messenger Platform Send API (Messenger and Instagram messaging):
  ``POST {META_GRAPH_API_URL}/{version}/{page or Instagram account id}/messages`` with
  the page access token, a ``RESPONSE`` to the person's page-scoped id. Outside the
  24-hour window it refuses at once (code 10, subcode 2018278).
- Telegram Bot API: ``POST {TELEGRAM_API_URL}/bot<token>/sendMessage`` to the customer's
  chat (a private chat's id is the user's id) with the bot the customer wrote to.
- X API v2: ``POST {X_API_URL}/2/dm_conversations/with/{participant_id}/messages`` with
  the OAuth 2.0 user-context token of the business account the customer wrote to; the
  answer's ``data.dm_event_id`` is the provider message id. X has no reply window: whether
  the customer takes the message is their DM setting, and a refusal is a 403.

How answers map: 2xx → ``Accepted``; 429 → ``Unavailable`` with the provider's
``Retry-After`` (WhatsApp's header, Telegram's ``parameters.retry_after``, X's header or
else the wait until its ``x-rate-limit-reset``); 5xx and
connection failures → ``Unavailable``, and so are the Graph API's rate-limit codes
(``GRAPH_THROTTLED``) whatever the HTTP status; any other 4xx → ``Refused`` with the
provider's code and text (``whatsapp_<code>``, ``messenger_<code>``,
``telegram_<error_code>``, ``x_<status>`` for X's problem details or ``x_<code>`` for its
``errors[].code``). No API here takes an idempotency key, so a reply whose hand-over
died before its answer is never handed over again: it ends ``failed`` with
``delivery_uncertain`` (``switchboard_common.outbound``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from switchboard_common.contract import (
    OUTBOUND,
    Channel,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    ReplyDelivery,
)
from switchboard_common.kafka import Outgoing
from switchboard_common.outbound import Accepted, Outcome, Refused, Unavailable
from switchboard_common.outbound_records import WATERMARKED, ReplyRecords, recipient_key
from switchboard_ingest_social.normalise.common import ProviderStatus, Watermark
from switchboard_ingest_social.oauth1 import OAuth1Credentials

#: The collection of reply records (``_id`` = ``reply_id``).
REPLIES = "social_replies"
#: Requests to one provider at once.
CONCURRENCY = 8


def _retry_after(response: httpx.Response, body: Any, now: float | None = None) -> float | None:
    header = response.headers.get("Retry-After")
    if header and header.strip().isdigit():
        return float(header)
    if isinstance(body, dict):
        parameters = body.get("parameters")
        if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"), int):
            return float(parameters["retry_after"])
    # X says when its rate-limit window ends (epoch seconds), not how long to wait; it
    # sends the header with every answer, but only a 429 means the window is used up.
    reset = response.headers.get("x-rate-limit-reset")
    if response.status_code == 429 and reset and reset.strip().isdigit():
        return max(0.0, float(reset) - (time.time() if now is None else now))
    return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _temporary(response: httpx.Response, body: Any, now: float | None = None) -> Unavailable | None:
    if response.status_code == 429 or response.status_code >= 500:
        return Unavailable(f"HTTP {response.status_code}", _retry_after(response, body, now))
    return None


#: Graph API error codes that mean "later", not "no": rate and throughput limits.
GRAPH_THROTTLED = frozenset({4, 17, 32, 613, 80006, 130429})


def _graph_refusal(channel: Channel, response: httpx.Response, answer: Any) -> Outcome:
    """A Graph API answer that is not a success: throttled (for now) or refused."""
    problem = answer.get("error", {}) if isinstance(answer, dict) else {}
    code = problem.get("code", response.status_code)
    if code in GRAPH_THROTTLED:
        return Unavailable(f"{channel.value} {code}", _retry_after(response, answer))
    details = (problem.get("error_data") or {}).get("details")
    text = str(problem.get("message") or f"HTTP {response.status_code}")
    return Refused(f"{channel.value}_{code}", f"{text}: {details}" if details else text)


async def _graph_post(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    body: dict[str, Any],
    *,
    channel: Channel,
    message_id: Callable[[dict[str, Any]], Any],
) -> Outcome:
    """One Graph API send; ``message_id`` finds the sent message's id in a success."""
    requested_at = datetime.now(UTC)
    try:
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        return Unavailable(f"{type(error).__name__}: {error}")
    answer = _json(response)
    temporary = _temporary(response, answer)
    if temporary is not None:
        return temporary
    sent = message_id(answer) if response.is_success and isinstance(answer, dict) else None
    if sent:
        return Accepted(str(sent), requested_at)
    return _graph_refusal(channel, response, answer)


@dataclass(frozen=True)
class WhatsAppSender:
    """WhatsApp Cloud API text messages. ``tokens`` maps a phone_number_id to its access
    token; ``default_token`` serves the numbers not listed."""

    base_url: str
    version: str
    tokens: Mapping[str, str]
    default_token: str | None
    client: httpx.AsyncClient

    def token_for(self, phone_number_id: str) -> str | None:
        return self.tokens.get(phone_number_id, self.default_token)

    async def send(self, order: ReplyDelivery) -> Outcome:
        number = order.account or ""
        token = self.token_for(number)
        if token is None:
            return Refused("no_credentials", "no WhatsApp access token for this number")
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": order.recipient.lstrip("+"),
            "type": "text",
            "text": {"body": order.text, "preview_url": False},
        }
        url = f"{self.base_url.rstrip('/')}/{self.version}/{number}/messages"

        def wamid(answer: dict[str, Any]) -> Any:
            return (answer.get("messages") or [{}])[0].get("id")

        return await _graph_post(
            self.client, url, token, body, channel=Channel.WHATSAPP, message_id=wamid
        )


@dataclass(frozen=True)
class MessengerSender:
    """Messenger Platform Send API, for Messenger and Instagram messaging: a text
    ``RESPONSE`` to the person's page-scoped id from the page (or Instagram account) they
    wrote to. ``tokens`` maps a page or Instagram account id to its page access token;
    ``default_token`` serves the ones not listed."""

    base_url: str
    version: str
    tokens: Mapping[str, str]
    default_token: str | None
    client: httpx.AsyncClient

    async def send(self, order: ReplyDelivery) -> Outcome:
        account = order.account or ""
        token = self.tokens.get(account, self.default_token)
        if token is None:
            return Refused("no_credentials", f"no page access token for this {order.channel}")
        body = {
            "recipient": {"id": order.recipient},
            "messaging_type": "RESPONSE",
            "message": {"text": order.text},
        }
        url = f"{self.base_url.rstrip('/')}/{self.version}/{account}/messages"

        def mid(answer: dict[str, Any]) -> Any:
            return answer.get("message_id")

        return await _graph_post(
            self.client, url, token, body, channel=order.channel, message_id=mid
        )


@dataclass(frozen=True)
class TelegramSender:
    """Telegram Bot API ``sendMessage``. ``tokens`` maps a bot id to its token (the part
    of a token before ``:`` is its bot's id); ``default_token`` serves the identities
    filed under the account ``default`` (a deployment with one bot, see the README)."""

    base_url: str
    tokens: Mapping[str, str]
    default_token: str | None
    client: httpx.AsyncClient

    def token_for(self, bot: str) -> str | None:
        if bot == "default":
            return self.default_token
        return self.tokens.get(bot)

    async def send(self, order: ReplyDelivery) -> Outcome:
        token = self.token_for(order.account or "default")
        if token is None:
            return Refused("no_credentials", "no Telegram bot token for this bot")
        url = f"{self.base_url.rstrip('/')}/bot{token}/sendMessage"
        try:
            response = await self.client.post(
                url, json={"chat_id": order.recipient, "text": order.text}
            )
        except httpx.HTTPError as error:
            return Unavailable(f"{type(error).__name__}: {error}")
        answer = _json(response)
        temporary = _temporary(response, answer)
        if temporary is not None:
            return temporary
        if isinstance(answer, dict) and answer.get("ok"):
            return Accepted(str(answer["result"]["message_id"]))
        code = answer.get("error_code", response.status_code) if isinstance(answer, dict) else None
        description = answer.get("description") if isinstance(answer, dict) else None
        return Refused(
            f"telegram_{code or response.status_code}",
            str(description or f"HTTP {response.status_code}"),
        )


def _x_refusal(response: httpx.Response, answer: Any) -> Refused:
    """X's answer to a send it will not make. API v2 answers problem details (``title``,
    ``detail``, ``type``, ``status``; a 400 adds ``errors`` naming the parameters); some
    refusals still come as v1.1's ``{"errors": [{"code", "message"}]}``, whose code says
    more than the status (349: cannot message this user)."""
    body = answer if isinstance(answer, dict) else {}
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    if isinstance(first.get("code"), int):
        text = first.get("message") or body.get("detail") or f"HTTP {response.status_code}"
        return Refused(f"x_{first['code']}", str(text))
    status = body.get("status")
    code = status if isinstance(status, int) else response.status_code
    text = str(body.get("detail") or body.get("title") or f"HTTP {response.status_code}")
    if first.get("message") and first["message"] != text:
        text = f"{text} ({first['message']})"
    return Refused(f"x_{code}", text)


@dataclass(frozen=True)
class XSender:
    """X API v2 direct messages, from the business account the customer wrote to (the
    conversation's account, an X user id). ``tokens`` maps an account to its
    credentials, ``default_token`` serves the ones not listed: ``<access token>:<secret>``
    signs with OAuth 1.0a and the app's ``consumer`` key and secret (these do not
    expire); anything else is an OAuth 2.0 user-context token (scope ``dm.write``), sent
    as a bearer token, which X expires after two hours. ``clock`` (epoch seconds) turns
    ``x-rate-limit-reset`` into a wait and stamps OAuth 1.0a requests."""

    base_url: str
    tokens: Mapping[str, str]
    default_token: str | None
    client: httpx.AsyncClient
    clock: Callable[[], float] = time.time
    #: The app's consumer key and secret, for OAuth 1.0a credentials.
    consumer: tuple[str, str] | None = None

    def authorization(self, token: str, url: str) -> str | None:
        """The Authorization header for ``token`` (None: OAuth 1.0a without the app's keys)."""
        access, colon, secret = token.partition(":")
        if not colon:
            return f"Bearer {token}"
        if self.consumer is None:
            return None
        credentials = OAuth1Credentials(*self.consumer, access, secret)
        return credentials.authorization(
            "POST", url, nonce=secrets.token_hex(16), timestamp=int(self.clock())
        )

    async def send(self, order: ReplyDelivery) -> Outcome:
        token = self.tokens.get(order.account or "", self.default_token)
        if token is None:
            return Refused("no_credentials", "no X access token for this account")
        url = f"{self.base_url.rstrip('/')}/2/dm_conversations/with/{order.recipient}/messages"
        authorization = self.authorization(token, url)
        if authorization is None:
            return Refused("no_credentials", "OAuth 1.0a credentials need X_CONSUMER_KEY")
        requested_at = datetime.now(UTC)
        try:
            response = await self.client.post(
                url, json={"text": order.text}, headers={"Authorization": authorization}
            )
        except httpx.HTTPError as error:
            return Unavailable(f"{type(error).__name__}: {error}")
        answer = _json(response)
        temporary = _temporary(response, answer, self.clock())
        if temporary is not None:
            return temporary
        data = answer.get("data") if isinstance(answer, dict) else None
        if response.is_success and isinstance(data, dict) and data.get("dm_event_id"):
            return Accepted(str(data["dm_event_id"]), requested_at)
        return _x_refusal(response, answer)


class _Sender(Protocol):
    async def send(self, order: ReplyDelivery) -> Outcome: ...


class SocialSenders:
    """The ``ChannelSender`` of ingest-social: each order to its channel's sender, a few
    at a time."""

    def __init__(
        self,
        whatsapp: WhatsAppSender | None = None,
        telegram: TelegramSender | None = None,
        messenger: MessengerSender | None = None,
        x: XSender | None = None,
    ) -> None:
        self._senders: dict[Channel, _Sender] = {}
        if whatsapp is not None:
            self._senders[Channel.WHATSAPP] = whatsapp
        if telegram is not None:
            self._senders[Channel.TELEGRAM] = telegram
        if messenger is not None:
            self._senders[Channel.MESSENGER] = messenger
            self._senders[Channel.INSTAGRAM] = messenger
        if x is not None:
            self._senders[Channel.X] = x
        self.channels = frozenset(self._senders)

    def planned_id(self, order: ReplyDelivery) -> str | None:  # noqa: ARG002 - no idempotency key
        return None

    async def send_all(self, orders: Sequence[ReplyDelivery]) -> list[Outcome]:
        """Customers in parallel, each customer's replies one after another in the order
        they were requested (so they arrive in that order)."""
        limit = asyncio.Semaphore(CONCURRENCY)
        outcomes: dict[int, Outcome] = {}
        by_customer: dict[tuple[Channel, str | None, str], list[int]] = {}
        for index, order in enumerate(orders):
            key = (order.channel, order.account, order.recipient)
            by_customer.setdefault(key, []).append(index)

        async def in_turn(indexes: list[int]) -> None:
            async with limit:
                for index in indexes:
                    order = orders[index]
                    outcomes[index] = await self._senders[order.channel].send(order)

        await asyncio.gather(*(in_turn(indexes) for indexes in by_customer.values()))
        return [outcomes[i] for i in range(len(orders))]


#: Provider statuses that say something a frontend did not know ("sent" it has already).
REPORTED = {
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}


#: Channels whose receipts may speak of every message up to a time (Messenger's
#: watermarks): what was reported of a reply is noted, so a later receipt reports only
#: what is new.


class StatusReporter:
    """Provider statuses of Switchboard's own replies → ``support.delivery.updated``.

    Per channel of a webhook: one read finds the replies of the statuses that name a
    message (by provider message id); one read finds those of receipts by watermark
    (every reply to that person from that account handed over at or before it, not yet
    reported so, nor read); on a watermarked channel, one write notes what was
    reported. Statuses of messages Switchboard did not send, and ``sent``, are left to
    the caller to count as dropped. The event id is the provider's message id and status
    however the reply was found, so a provider retrying its webhook, or a receipt
    repeating an earlier one, publishes nothing new.
    """

    def __init__(
        self,
        records: ReplyRecords,
        publish: Callable[[Sequence[Outgoing]], Awaitable[None]],
        clock: Callable[[], datetime],
    ) -> None:
        self._records = records
        self._publish = publish
        self._clock = clock

    async def report(self, statuses: Sequence[ProviderStatus]) -> int:
        """Publish what these statuses say of replies; return how many statuses spoke
        of at least one reply."""
        wanted = [s for s in statuses if s.status in REPORTED]
        outgoing: list[Outgoing] = []
        spoke = 0
        marks: dict[tuple[Channel, str], list[str]] = {}
        for channel in dict.fromkeys(s.channel for s in wanted):
            of_channel = [s for s in wanted if s.channel is channel]
            for status, replies in await self._replies(channel, of_channel):
                spoke += bool(replies)
                for reply in replies:
                    outgoing.append(self._event(channel, status, reply))
                    if channel in WATERMARKED:
                        marks.setdefault((channel, status.status), []).append(reply.message)
        if outgoing:
            await self._publish(outgoing)
        for (channel, name), messages in marks.items():
            await self._records.mark_reported(channel, name, messages)
        return spoke

    async def _replies(
        self, channel: Channel, statuses: Sequence[ProviderStatus]
    ) -> list[tuple[ProviderStatus, list[_Reply]]]:
        """Each status with the replies it speaks of."""
        named = [s.provider_message_id for s in statuses if s.provider_message_id]
        by_id = await self._records.replies_of(channel, named) if named else {}
        # The latest watermark per person: one query finds what every receipt needs.
        latest: dict[str, datetime] = {}
        for status in statuses:
            if status.watermark is not None:
                to = _to(channel, status.watermark)
                latest[to] = max(latest.get(to, status.watermark.until), status.watermark.until)
        # Nothing more is said of a reply once read: a "delivered" after it goes back.
        by_time = await self._records.sent_before(latest, unless="read") if latest else {}
        found: list[tuple[ProviderStatus, list[_Reply]]] = []
        for status in statuses:
            mark = status.watermark
            replies: list[_Reply] = []
            if mark is not None:
                replies = [
                    _Reply(sent.provider_message_id, sent.reply_id, sent.conversation_id)
                    for sent in by_time.get(_to(channel, mark), [])
                    if sent.handed_at <= mark.until and status.status not in sent.reported
                ]
            elif status.provider_message_id in by_id:
                sent = by_id[status.provider_message_id]
                # Receipts arrive in any order: nothing is said of a reply after "read".
                if not ({"read", status.status} & sent.reported):
                    replies = [
                        _Reply(sent.provider_message_id, sent.reply_id, sent.conversation_id)
                    ]
            found.append((status, replies))
        return found

    def _event(self, channel: Channel, status: ProviderStatus, reply: _Reply) -> Outgoing:
        failed = status.status == "failed"
        error = DeliveryError(
            code=status.error_code or f"{channel.value}_failed",
            text=status.error_text or "the provider reported a failure",
        )
        event = DeliveryUpdated(
            reply_id=reply.reply_id,
            conversation_id=reply.conversation_id,
            channel=channel,
            status=REPORTED[status.status],
            provider_message_id=reply.message,
            error=error if failed else None,
            at=status.at or self._clock(),
        )
        event_id = f"{channel.value}:{reply.message}:{status.status}"
        return Outgoing(OUTBOUND, reply.conversation_id, event, event_id=event_id)


@dataclass(frozen=True)
class _Reply:
    """A reply a status speaks of: its provider message id, reply and conversation."""

    message: str
    reply_id: str
    conversation_id: str


def _to(channel: Channel, mark: Watermark) -> str:
    return recipient_key(channel, mark.account, mark.recipient)
