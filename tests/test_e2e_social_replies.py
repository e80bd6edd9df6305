"""Agent replies on WhatsApp, Messenger, X and Telegram, end to end: a customer writes
through the provider's signed webhook, a frontend publishes ``support.reply.requested``, and
the reply reaches a local server implementing the provider's documented send API — through
a 429 with ``Retry-After``, and with the provider's refusal (a user who blocked the bot, an
X user who takes no direct messages) as a ``failed`` status. The router and ingest-social
run as separate processes on real Kafka and the database."""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from switchboard_common.contract import (
    CONVERSATION_EVENTS,
    DeliveryError,
    DeliveryStatus,
    DeliveryUpdated,
    ReplySent,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.frontend import (
    Customer,
    Helpdesk,
    customer_timeline,
    eventually,
    messenger_text_webhook,
    post_meta_webhook,
)
from switchboard_devtools.providers import LocalMessenger, LocalTelegram, LocalWhatsApp, LocalX

pytestmark = pytest.mark.e2e

PHONE_NUMBER_ID = "106540352242922"  # the business number customers write to
PAGE_ID = "108457628476532"  # the Facebook page customers write to
X_ACCOUNT = "4337869213"  # the X account customers write to (x_dm_webhook's for_user_id)
#: Fresh per run: nothing that looks like a credential is kept in the repository.
WHATSAPP_TOKEN = secrets.token_urlsafe(24)
BOT_TOKEN = f"7012345678:{secrets.token_urlsafe(24)}"
PAGE_TOKEN = secrets.token_urlsafe(24)
#: OAuth 1.0a user-context credentials (access token and its secret) and the app's key.
X_TOKEN = f"{secrets.token_hex(12)}:{secrets.token_urlsafe(24)}"
X_APP_KEY = "switchboard-test-app"


@pytest.fixture(scope="module")
def whatsapp() -> Iterator[LocalWhatsApp]:
    with LocalWhatsApp.started(tokens={PHONE_NUMBER_ID: WHATSAPP_TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def telegram() -> Iterator[LocalTelegram]:
    with LocalTelegram.started(tokens={BOT_TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def messenger() -> Iterator[LocalMessenger]:
    # The Graph API serves WhatsApp and Messenger alike: one local server per product.
    with LocalMessenger.started(tokens={PAGE_ID: PAGE_TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def x() -> Iterator[LocalX]:
    consumer = (X_APP_KEY, TEST_SECRETS["X_CONSUMER_SECRET"])
    with LocalX.started(tokens={X_ACCOUNT: X_TOKEN}, consumer=consumer) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    infra: Infra, whatsapp: LocalWhatsApp, telegram: LocalTelegram, x: LocalX
) -> Iterator[Stack]:
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "ingest-social",
        extra_env={
            "META_GRAPH_API_URL": whatsapp.url,
            "WHATSAPP_ACCESS_TOKEN": WHATSAPP_TOKEN,
            "TELEGRAM_API_URL": telegram.url,
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "X_API_URL": x.url,
            "X_ACCESS_TOKEN": X_TOKEN,
            "X_CONSUMER_KEY": X_APP_KEY,
            "INGEST_SOCIAL_OUTBOUND_RETRY_SECONDS": "0.2",
        },
    ) as running:
        yield running


def customer(stack: Stack) -> Customer:
    return Customer(
        email=f"c{uuid.uuid4().hex[:8]}@example.org",
        phone=f"+3460{random.randrange(10**7):07d}",
        smtp_port=1,  # not used: this customer writes on social channels
        social_url=stack.url("ingest-social"),
        meta_secret=TEST_SECRETS["META_APP_SECRET"],
        telegram_user_id=random.randrange(10**8, 10**9),
        telegram_token=TEST_SECRETS["TELEGRAM_SECRET_TOKEN"],
        x_user_id=str(random.randrange(10**17, 10**19)),
        x_secret=TEST_SECRETS["X_CONSUMER_SECRET"],
    )


async def conversation(stack: Stack, identity: str) -> str:
    timeline = await customer_timeline(stack.url("router"), stack.router_auth(), identity)
    return str(timeline["items"][0]["conversation_id"])


async def outcome(helpdesk: Helpdesk, reply_id: str) -> DeliveryUpdated:
    async def found() -> DeliveryUpdated | None:
        statuses = (await helpdesk.deliveries()).get(reply_id, [])
        return statuses[0] if statuses else None

    return await eventually(found, what="the reply's delivery status")


async def test_a_whatsapp_reply_reaches_the_customer_through_a_rate_limit(
    stack: Stack, whatsapp: LocalWhatsApp
) -> None:
    ana = customer(stack)
    wa_id = ana.phone.lstrip("+")
    whatsapp.customer_wrote(wa_id)  # the provider's view: the window is open
    answer = await ana.whatsapp("Hi, where is my order?")
    assert answer.status_code == 200, answer.text
    conversation_id = await conversation(stack, f"whatsapp:{ana.phone}")

    whatsapp.throttle = 1  # the first try gets 429 with Retry-After
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        reply = await helpdesk.request_reply(conversation_id, "agent-7", "It ships today.")
        status = await outcome(helpdesk, reply.reply_id)
    assert status.status is DeliveryStatus.SENT, status
    assert whatsapp.throttle == 0, "the rate limit was met and waited out"
    [sent] = whatsapp.to(wa_id)
    assert (sent.text, sent.phone_number_id, sent.wamid) == (
        "It ships today.",
        PHONE_NUMBER_ID,
        status.provider_message_id,
    )
    assert status.channel is not None
    assert status.channel.value == "whatsapp"


async def test_a_telegram_reply_reaches_the_chat_and_a_blocked_bot_fails_clearly(
    stack: Stack, telegram: LocalTelegram
) -> None:
    ana, bob = customer(stack), customer(stack)
    for person in (ana, bob):
        answer = await person.telegram("Hello?")
        assert answer.status_code == 200, answer.text
    # One bot, known by its secret token alone: identities under the account "default".
    to_ana = await conversation(stack, f"telegram:default:{ana.telegram_user_id}")
    to_bob = await conversation(stack, f"telegram:default:{bob.telegram_user_id}")
    telegram.blocked.add(str(bob.telegram_user_id))

    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        first = await helpdesk.request_reply(to_ana, "agent-7", "Your parcel is on its way.")
        second = await helpdesk.request_reply(to_ana, "agent-7", "Tracking: 4411.")
        blocked = await helpdesk.request_reply(to_bob, "agent-7", "Are you there?")
        sent = [await outcome(helpdesk, r.reply_id) for r in (first, second)]
        refused = await outcome(helpdesk, blocked.reply_id)
    assert [s.status for s in sent] == [DeliveryStatus.SENT, DeliveryStatus.SENT]
    # In the order they were asked for.
    assert [m.text for m in telegram.to(str(ana.telegram_user_id))] == [
        "Your parcel is on its way.",
        "Tracking: 4411.",
    ]
    assert refused.status is DeliveryStatus.FAILED
    assert refused.error == DeliveryError(
        code="telegram_403", text="Forbidden: bot was blocked by the user"
    )
    assert telegram.to(str(bob.telegram_user_id)) == []


async def test_an_x_reply_reaches_the_customer_through_a_rate_limit_and_a_closed_dm_fails(
    stack: Stack, x: LocalX
) -> None:
    ana, bob = customer(stack), customer(stack)
    for person in (ana, bob):
        answer = await person.x_dm("Hi, my order never arrived.")
        assert answer.status_code == 200, answer.text
    assert ana.x_user_id is not None
    assert bob.x_user_id is not None
    # X user ids are global: identities are not filed under the account written to.
    to_ana = await conversation(stack, f"x:{ana.x_user_id}")
    to_bob = await conversation(stack, f"x:{bob.x_user_id}")
    x.closed.add(bob.x_user_id)  # Bob takes direct messages from people he follows only
    x.throttle = 1  # the first try gets 429 with Retry-After and x-rate-limit-reset
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        sent = await helpdesk.request_reply(to_ana, "agent-7", "A new one ships today.")
        refused = await helpdesk.request_reply(to_bob, "agent-7", "Could you check?")
        ok, gone = await outcome(helpdesk, sent.reply_id), await outcome(helpdesk, refused.reply_id)

        async def replied() -> list[ReplySent] | None:
            found = [
                e
                for _, e in await probe.read_events(CONVERSATION_EVENTS, timeout=1.0)
                if isinstance(e, ReplySent) and e.conversation_id in (to_ana, to_bob)
            ]
            return found or None

        replies_sent = await eventually(replied, what="support.reply.sent of the X reply")
    assert ok.status is DeliveryStatus.SENT, ok
    assert x.throttle == 0, "the rate limit was met and waited out"
    [message] = x.to(ana.x_user_id)
    assert (message.text, message.sender_id, message.dm_event_id) == (
        "A new one ships today.",
        X_ACCOUNT,
        ok.provider_message_id,
    )
    assert ok.channel is not None
    assert ok.channel.value == "x"
    assert [(r.conversation_id, r.agent_id) for r in replies_sent] == [(to_ana, "agent-7")]
    assert gone.status is DeliveryStatus.FAILED
    assert gone.error == DeliveryError(code="x_403", text="You cannot send messages to this user.")
    assert x.to(bob.x_user_id) == []


async def test_a_reply_too_long_for_whatsapp_is_refused_before_it_is_sent(
    stack: Stack, whatsapp: LocalWhatsApp
) -> None:
    ana = customer(stack)
    await ana.whatsapp("Please send me the full terms.")
    conversation_id = await conversation(stack, f"whatsapp:{ana.phone}")
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        reply = await helpdesk.request_reply(conversation_id, "agent-7", "x" * 5000)
        status = await outcome(helpdesk, reply.reply_id)
    assert status.status is DeliveryStatus.FAILED
    error: Any = status.error
    assert error.code == "text_too_long"
    assert whatsapp.to(ana.phone.lstrip("+")) == []


async def test_whatsapp_statuses_of_a_reply_become_delivery_updates(
    stack: Stack, whatsapp: LocalWhatsApp
) -> None:
    """Delivered and read as the provider reports them; and a send the provider took but
    then failed (its 24-hour window had closed, by its clock) ends ``failed`` with the
    provider's code and reason, instead of being dropped."""
    ana, bob = customer(stack), customer(stack)
    whatsapp.customer_wrote(ana.phone.lstrip("+"))  # Bob's window is closed at the provider
    for person in (ana, bob):
        await person.whatsapp("Is my order on its way?")
    to_ana = await conversation(stack, f"whatsapp:{ana.phone}")
    to_bob = await conversation(stack, f"whatsapp:{bob.phone}")
    async with TopicProbe(stack.kafka_bootstrap, stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        read = await helpdesk.request_reply(to_ana, "agent-7", "Yes, tomorrow.")
        late = await helpdesk.request_reply(to_bob, "agent-7", "Yes, on Monday.")
        for reply in (read, late):
            assert (await outcome(helpdesk, reply.reply_id)).status is DeliveryStatus.SENT
        [to_ana_sent] = whatsapp.to(ana.phone.lstrip("+"))
        [to_bob_sent] = whatsapp.to(bob.phone.lstrip("+"))
        for body in (
            whatsapp.status_webhook(to_ana_sent, "delivered"),
            whatsapp.status_webhook(to_ana_sent, "read"),
            whatsapp.failed_webhook(to_bob_sent),
        ):
            answer = await post_meta_webhook(
                stack.url("ingest-social"), body, TEST_SECRETS["META_APP_SECRET"]
            )
            assert answer.status_code == 200, answer.text

        async def reported() -> dict[str, list[DeliveryUpdated]] | None:
            found = await helpdesk.deliveries()
            done = len(found.get(read.reply_id, [])) >= 3 and len(found.get(late.reply_id, [])) >= 2
            return found if done else None

        found = await eventually(reported, what="the provider's statuses as delivery updates")
    assert [s.status for s in found[read.reply_id]] == [
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.READ,
    ]
    failed = found[late.reply_id][-1]
    assert failed.status is DeliveryStatus.FAILED
    assert failed.provider_message_id == to_bob_sent.wamid
    assert failed.error is not None
    assert failed.error.code == "whatsapp_131047"
    assert failed.error.text.startswith("Re-engagement message: Message failed to send because")


@pytest.fixture(scope="module")
def page_stack(infra: Infra, messenger: LocalMessenger) -> Iterator[Stack]:
    """A stack whose Graph API is the local Messenger server (one base URL serves both
    Meta products in production; here each product has a server of its own)."""
    with running_stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        "router",
        "ingest-social",
        extra_env={
            "META_GRAPH_API_URL": messenger.url,
            "META_PAGE_ACCESS_TOKEN": PAGE_TOKEN,
            "INGEST_SOCIAL_OUTBOUND_RETRY_SECONDS": "0.2",
        },
    ) as running:
        yield running


async def test_a_messenger_reply_reaches_the_person_and_a_refusal_says_why(
    page_stack: Stack, messenger: LocalMessenger
) -> None:
    ana, bob = (f"67{random.randrange(10**13):013d}" for _ in range(2))
    for psid in (ana, bob):
        body = messenger_text_webhook(f"Hello from {psid[-4:]}", page_id=PAGE_ID, psid=psid)
        answer = await post_meta_webhook(
            page_stack.url("ingest-social"), body, TEST_SECRETS["META_APP_SECRET"]
        )
        assert answer.status_code == 200, answer.text
        messenger.customer_wrote(psid)
    messenger.unavailable.add(bob)
    messenger.throttle = 1  # the first try gets Graph's rate-limit answer
    to_ana = await conversation(page_stack, f"messenger:{PAGE_ID}:{ana}")
    to_bob = await conversation(page_stack, f"messenger:{PAGE_ID}:{bob}")
    async with TopicProbe(page_stack.kafka_bootstrap, page_stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        sent = await helpdesk.request_reply(to_ana, "agent-7", "Your refund is on its way.")
        refused = await helpdesk.request_reply(to_bob, "agent-7", "Hello?")
        ok, gone = await outcome(helpdesk, sent.reply_id), await outcome(helpdesk, refused.reply_id)
    assert ok.status is DeliveryStatus.SENT
    [message] = messenger.to(ana)
    assert (message.text, message.messaging_type, message.message_id) == (
        "Your refund is on its way.",
        "RESPONSE",
        ok.provider_message_id,
    )
    assert gone.status is DeliveryStatus.FAILED
    assert gone.error == DeliveryError(
        code="messenger_551", text="(#551) This person isn't available right now."
    )


async def test_messenger_receipts_take_a_reply_from_sent_to_delivered_to_read(
    page_stack: Stack, messenger: LocalMessenger
) -> None:
    """Meta's delivery receipt names the message; its read receipt is a watermark: every
    message the page sent the person at or before it. A reply sent after the watermark
    stays unread, and a receipt Meta repeats publishes nothing new."""
    psid = f"67{random.randrange(10**13):013d}"
    body = messenger_text_webhook("Where is my refund?", page_id=PAGE_ID, psid=psid)
    social = page_stack.url("ingest-social")
    secret = TEST_SECRETS["META_APP_SECRET"]
    assert (await post_meta_webhook(social, body, secret)).status_code == 200
    messenger.customer_wrote(psid)
    to_ana = await conversation(page_stack, f"messenger:{PAGE_ID}:{psid}")
    async with TopicProbe(page_stack.kafka_bootstrap, page_stack.topics) as probe:
        helpdesk = Helpdesk(probe)
        first = await helpdesk.request_reply(to_ana, "agent-7", "It left today.")
        assert (await outcome(helpdesk, first.reply_id)).status is DeliveryStatus.SENT
        later = await helpdesk.request_reply(to_ana, "agent-7", "Tracking: 4411.")
        assert (await outcome(helpdesk, later.reply_id)).status is DeliveryStatus.SENT
        sent_first, sent_later = messenger.to(psid)
        receipts = [
            messenger.receipt_webhook(sent_first, "delivered"),
            messenger.receipt_webhook(sent_later, "delivered"),
            messenger.receipt_webhook(sent_first, "read"),  # up to the first reply only
        ]
        for receipt in receipts:
            answer = await post_meta_webhook(social, receipt, secret)
            assert answer.status_code == 200, answer.text
            assert answer.json()["published"] == 1, answer.text

        async def reported() -> dict[str, list[DeliveryUpdated]] | None:
            found = await helpdesk.deliveries()
            done = len(found.get(first.reply_id, [])) >= 3
            return found if done and len(found.get(later.reply_id, [])) >= 2 else None

        found = await eventually(reported, what="the receipts as delivery updates")
        # Meta repeats a receipt: what it says was reported already.
        again = await post_meta_webhook(social, receipts[-1], secret)
        assert again.status_code == 200, again.text
        assert again.json()["published"] == 0, again.text
        settled = await helpdesk.deliveries()
    assert [s.status for s in found[first.reply_id]] == [
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.READ,
    ]
    assert {s.provider_message_id for s in found[first.reply_id]} == {sent_first.message_id}
    assert [s.status for s in settled[later.reply_id]] == [
        DeliveryStatus.SENT,
        DeliveryStatus.DELIVERED,
    ]
    assert len(settled[first.reply_id]) == 3
