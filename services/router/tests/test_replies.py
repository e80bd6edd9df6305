"""Requested replies, addressed (``timeline/replies.py``): what the router hands the
service speaking the channel, and the reasons it refuses one."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from switchboard_common.contract import (
    Channel,
    CustomerMessage,
    DeliveryStatus,
    DeliveryUpdated,
    ReplyDelivery,
    ReplyRequested,
    Sender,
    SenderKind,
)
from switchboard_common.settings import SettingsError
from switchboard_devkit.testing import builders
from switchboard_devkit.testing.builders import T0
from switchboard_router.assignment.policy import PolicyError, parse_policy
from switchboard_router.settings import RouterSettings
from switchboard_router.timeline import acknowledgement_policy
from switchboard_router.timeline import replies as replies_module
from switchboard_router.timeline.replies import (
    MAX_REFERENCES,
    TEXT_LIMITS,
    AcknowledgementPolicy,
    acknowledgement,
    acknowledgement_claim,
    plan_reply,
    recipient_of,
    wants_acknowledgement,
)
from switchboard_router.timeline.threading import Conversation, CustomerState

pytestmark = pytest.mark.unit
NOW = T0 + timedelta(minutes=5)


def request(text: str = "It arrives on Monday.", **overrides: Any) -> ReplyRequested:
    fields: dict[str, Any] = {
        "reply_id": "r-1",
        "conversation_id": "co-1",
        "agent_id": "agent-7",
        "text": text,
        "requested_at": T0,
        **overrides,
    }
    return ReplyRequested.model_validate(fields)


def conversation(channel: Channel = Channel.EMAIL, **overrides: Any) -> dict[str, Any]:
    return {
        "_id": "co-1",
        "customer_id": "cu-1",
        "channel": channel.value,
        "account": "help@support.example.com",
        "identity": "email:ana@example.org",
        "subject": "Where is my order?",
        **overrides,
    }


def state(refs: dict[str, str], *, erased: bool = False) -> CustomerState:
    return CustomerState(customer_id="cu-1", refs=refs, erased=erased)


def failure(planned: ReplyDelivery | DeliveryUpdated) -> str:
    assert isinstance(planned, DeliveryUpdated)
    assert planned.status is DeliveryStatus.FAILED
    assert planned.error is not None
    return planned.error.code


def test_an_email_reply_goes_to_the_customer_from_the_address_they_wrote_to() -> None:
    refs = {"a@mail.example.org": "co-1", "other@mail.example.org": "co-2", "b@x.org": "co-1"}
    planned = plan_reply(request(), conversation(), state(refs), NOW)
    assert isinstance(planned, ReplyDelivery)
    assert planned.recipient == "ana@example.org"
    assert planned.account == "help@support.example.com"
    assert planned.subject == "Where is my order?"
    # Only this conversation's Message-IDs, oldest first (the last is In-Reply-To).
    assert planned.references == ("a@mail.example.org", "b@x.org")
    assert (planned.customer_id, planned.agent_id, planned.ordered_at) == ("cu-1", "agent-7", NOW)


def test_references_keep_the_newest_message_ids() -> None:
    refs = {f"m{n}@mail.example.org": "co-1" for n in range(MAX_REFERENCES + 5)}
    planned = plan_reply(request(), conversation(), state(refs), NOW)
    assert isinstance(planned, ReplyDelivery)
    assert len(planned.references) == MAX_REFERENCES
    assert planned.references[-1] == f"m{MAX_REFERENCES + 4}@mail.example.org"


def test_an_unknown_conversation_fails_without_a_channel() -> None:
    planned = plan_reply(request(), None, None, NOW)
    assert failure(planned) == "unknown_conversation"
    assert isinstance(planned, DeliveryUpdated)
    assert planned.channel is None
    assert planned.reply_id == "r-1"


def test_an_erased_customer_gets_no_reply() -> None:
    assert failure(plan_reply(request(), conversation(), state({}, erased=True), NOW)) == "erased"
    erased_conversation = conversation(identity=None)
    assert failure(plan_reply(request(), erased_conversation, None, NOW)) == "erased"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_reply_fails(text: str) -> None:
    assert failure(plan_reply(request(text), conversation(), None, NOW)) == "empty_text"


def test_a_reply_over_the_channels_limit_is_refused_not_split() -> None:
    too_long = "x" * (TEXT_LIMITS[Channel.EMAIL] + 1)
    planned = plan_reply(request(too_long), conversation(), None, NOW)
    assert failure(planned) == "text_too_long"
    just_right = plan_reply(request("x" * TEXT_LIMITS[Channel.EMAIL]), conversation(), None, NOW)
    assert isinstance(just_right, ReplyDelivery)


def test_every_channel_can_be_replied_on() -> None:
    assert set(TEXT_LIMITS) == set(Channel)


def test_a_channel_switchboard_cannot_send_on_yet_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every channel has a sender today; a channel added to the contract before its
    # sender has no text limit, and is refused by name.
    limits = {c: n for c, n in TEXT_LIMITS.items() if c is not Channel.X}
    monkeypatch.setattr(replies_module, "TEXT_LIMITS", limits)
    planned = plan_reply(request(), conversation(Channel.X, identity="x:123"), None, NOW)
    assert failure(planned) == "channel_not_supported"
    assert isinstance(planned, DeliveryUpdated)
    assert planned.channel is Channel.X


def test_an_x_reply_goes_to_the_user_from_the_account_they_wrote_to_at_any_time() -> None:
    x = conversation(
        Channel.X,
        identity="x:1456789012345678901",
        account="4337869213",
        subject=None,
        last_message_at=NOW - timedelta(days=30),  # X keeps no reply window
    )
    planned = plan_reply(request("x" * 10_000), x, None, NOW)
    assert isinstance(planned, ReplyDelivery)
    assert (planned.channel, planned.recipient, planned.account) == (
        Channel.X,
        "1456789012345678901",
        "4337869213",
    )
    assert failure(plan_reply(request("x" * 10_001), x, None, NOW)) == "text_too_long"


@pytest.mark.parametrize(
    ("identity", "channel", "recipient"),
    [
        ("email:ana@example.org", Channel.EMAIL, "ana@example.org"),
        ("whatsapp:+34600111222", Channel.WHATSAPP, "+34600111222"),
        ("telegram:7012345678:4242", Channel.TELEGRAM, "4242"),
        ("messenger:108457628476532:6789", Channel.MESSENGER, "6789"),
        ("x:99887766", Channel.X, "99887766"),
        ("webchat:shop:v_Zm9vYmFy", Channel.WEBCHAT, "v_Zm9vYmFy"),
        # A visitor the site vouched for writes as their email, also on web chat.
        ("email:ana@example.org", Channel.WEBCHAT, "ana@example.org"),
    ],
)
def test_the_recipient_is_the_customers_id_on_the_channel(
    identity: str, channel: Channel, recipient: str
) -> None:
    assert recipient_of(identity) == recipient


def test_a_whatsapp_reply_after_the_customer_service_window_fails_with_the_reason() -> None:
    whatsapp = conversation(
        Channel.WHATSAPP,
        identity="whatsapp:+34600111222",
        account="106540352242922",
        last_message_at=NOW - timedelta(hours=25),
    )
    planned = plan_reply(request(), whatsapp, None, NOW)
    assert failure(planned) == "outside_customer_service_window"
    assert isinstance(planned, DeliveryUpdated)
    assert planned.error is not None
    assert "25 hours ago" in planned.error.text
    inside = {**whatsapp, "last_message_at": NOW - timedelta(hours=23)}
    assert isinstance(plan_reply(request(), inside, None, NOW), ReplyDelivery)


def test_the_window_counts_from_the_customers_latest_message_to_that_number() -> None:
    old = conversation(
        Channel.WHATSAPP,
        identity="whatsapp:+34600111222",
        account="106540352242922",
        last_message_at=NOW - timedelta(days=3),
    )
    recent = Conversation(
        conversation_id="co-2",
        channel=Channel.WHATSAPP,
        account="106540352242922",
        tenant=None,
        sender="+34600111222",
        thread=None,
        subject="",
        status="open",
        opened_at=NOW - timedelta(hours=2),
        last_message_at=NOW - timedelta(hours=1),
        resolved_at=None,
        message_count=1,
        previous_conversation_id=None,
        closed_reason=None,
        status_at=None,
    )
    customer = CustomerState(customer_id="cu-1", conversations={"co-2": recent})
    assert isinstance(plan_reply(request(), old, customer, NOW), ReplyDelivery)
    elsewhere = CustomerState(
        customer_id="cu-1", conversations={"co-2": replace(recent, account="another-number")}
    )
    assert failure(plan_reply(request(), old, elsewhere, NOW)) == "outside_customer_service_window"


# --------------------------------------------------------------------------- acknowledgements

POLICY = AcknowledgementPolicy.of_channels(
    frozenset({Channel.EMAIL}), "We have your message. Reference: {reference}", timedelta(hours=1)
)


def customer_message(**overrides: Any) -> CustomerMessage:
    return CustomerMessage(
        customer_id="cu-1",
        identity="email:ana@example.com",
        message=builders.message(
            "m-1", account="help@support.example.com", references=["<older@x.org>"], **overrides
        ),
        resolved_at=T0,
    )


def test_a_new_email_conversation_is_acknowledged_on_its_thread() -> None:
    record = customer_message()
    assert wants_acknowledgement(record, True, POLICY)
    text = POLICY.text_for(Channel.EMAIL, queue=None, language=None)
    assert text is not None
    ack = acknowledgement(record, "co-9", text, NOW)
    assert (ack.reply_id, ack.automatic, ack.recipient) == ("ack:co-9", True, "ana@example.com")
    assert ack.text == "We have your message. Reference: co-9"
    assert ack.references == ("<older@x.org>", "<m-1@mail.example.com>")
    assert ack.account == "help@support.example.com"


@pytest.mark.parametrize(
    ("opened", "overrides"),
    [
        (False, {}),  # a follow-up in an open conversation
        (True, {"auto_submitted": True}),  # an auto-reply, a bounce, bulk mail
        (True, {"kind": "reaction"}),  # not a request
        (True, {"channel": Channel.WHATSAPP}),  # not an acknowledged channel
    ],
)
def test_what_is_never_acknowledged(opened: bool, overrides: dict[str, Any]) -> None:
    if overrides.get("channel") is Channel.WHATSAPP:
        overrides |= {
            "sender": Sender(kind=SenderKind.PHONE, value="+34600111222", display_name=None)
        }
    assert not wants_acknowledgement(customer_message(**overrides), opened, POLICY)


def test_one_claim_per_customer_and_period() -> None:
    early = customer_message(received_at=T0)
    later = customer_message(received_at=T0 + timedelta(minutes=10))
    next_hour = customer_message(received_at=T0 + timedelta(hours=1))
    assert acknowledgement_claim(early, POLICY) == acknowledgement_claim(later, POLICY)
    assert acknowledgement_claim(early, POLICY) != acknowledgement_claim(next_hour, POLICY)


def test_acknowledgement_settings_say_what_is_wrong() -> None:
    dev = {"environment": "dev"}
    assert RouterSettings.load(**dev).acknowledged_channels == {Channel.EMAIL}
    assert RouterSettings.load(**dev, acknowledge_channels="none").acknowledged_channels == set()
    both = RouterSettings.load(**dev, acknowledge_channels="email, telegram")
    assert both.acknowledged_channels == {Channel.EMAIL, Channel.TELEGRAM}
    with pytest.raises(SettingsError, match="ROUTER_ACKNOWLEDGE_CHANNELS: 'fax'"):
        RouterSettings.load(**dev, acknowledge_channels="email,fax")
    with pytest.raises(SettingsError, match="ROUTER_ACKNOWLEDGEMENT_TEXT may use"):
        RouterSettings.load(**dev, acknowledgement_text="Dear {name}")


RULES = """
version: 1
queues:
  - name: vip
    when: {customer_tier: [vip]}
  - name: general
acknowledgements:
  window_seconds: 600
  rules:
    - when: {queue: [vip]}
      text: null
    - when: {channel: [email], language: [es]}
      text: "Hemos recibido tu mensaje ({reference})."
    - when: {channel: [email, telegram]}
      text: "We have your message ({reference})."
"""


def test_policy_rules_choose_by_channel_queue_and_language_first_match_wins() -> None:
    section = parse_policy(RULES).acknowledgements
    assert section is not None
    policy = AcknowledgementPolicy.of(section)
    assert policy.window == timedelta(minutes=10)
    assert policy.needs_queue
    assert policy.channels == {Channel.EMAIL, Channel.TELEGRAM}
    assert policy.text_for(Channel.EMAIL, "vip", "es") is None
    assert (
        policy.text_for(Channel.EMAIL, "general", "es")
        == "Hemos recibido tu mensaje ({reference})."
    )
    assert policy.text_for(Channel.EMAIL, "general", "en") == "We have your message ({reference})."
    assert (
        policy.text_for(Channel.TELEGRAM, "general", None) == "We have your message ({reference})."
    )
    assert policy.text_for(Channel.WHATSAPP, "general", "en") is None


def test_the_policy_or_the_settings_decide_never_both(monkeypatch: pytest.MonkeyPatch) -> None:
    section = parse_policy(RULES).acknowledgements
    dev = {"environment": "dev"}
    chosen = acknowledgement_policy(RouterSettings.load(**dev), section)
    assert chosen is not None
    assert chosen.window == timedelta(minutes=10)
    default = acknowledgement_policy(RouterSettings.load(**dev), None)
    assert default is not None
    assert default.channels == {Channel.EMAIL}
    assert (
        acknowledgement_policy(RouterSettings.load(**dev, acknowledge_channels="none"), None)
        is None
    )
    monkeypatch.setenv("ROUTER_ACKNOWLEDGE_CHANNELS", "telegram")
    with pytest.raises(SettingsError, match="replace ROUTER_ACKNOWLEDGE_CHANNELS; set one"):
        acknowledgement_policy(RouterSettings.load(**dev), section)


def test_a_text_some_channel_would_refuse_stops_the_router_at_start() -> None:
    long_text = "x" * 990 + " {reference}"  # fits email, not Instagram's 1,000 with the id
    text = (
        "version: 1\nqueues: [{name: general}]\n"
        f"acknowledgements:\n  rules: [{{text: '{long_text}'}}]\n"
    )
    section = parse_policy(text).acknowledgements
    with pytest.raises(SettingsError, match="the text for instagram is 1018 characters"):
        acknowledgement_policy(RouterSettings.load(environment="dev"), section)
    email_only = text.replace("[{text:", "[{when: {channel: [email]}, text:")
    assert acknowledgement_policy(
        RouterSettings.load(environment="dev"), parse_policy(email_only).acknowledgements
    )


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("[{when: {queue: [nosuch]}, text: hi}]", "unknown queue(s): nosuch"),
        ("[{text: 'ref {ticket}'}]", "may use {reference} only"),
        ("[{when: {channel: [fax]}, text: hi}]", "acknowledgements.rules[0].when.channel[0]"),
        ("[]", "acknowledgements.rules"),
    ],
)
def test_a_bad_acknowledgement_rule_stops_the_policy_with_where_and_why(
    rules: str, problem: str
) -> None:
    text = f"version: 1\nqueues: [{{name: general}}]\nacknowledgements:\n  rules: {rules}\n"
    with pytest.raises(PolicyError, match=re.escape(problem)):
        parse_policy(text)
