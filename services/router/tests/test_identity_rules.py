"""The pure identity and linking rules: canonical identities, precedence, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard_common.contract import Channel, SenderKind
from switchboard_devtools.testing.router_timeline import inbound
from switchboard_router.timeline.identity import (
    IdentityError,
    identities_for_profile_key,
    identity_of,
    may_link,
    normalise_phone,
    parse_identity,
    profile_key_for,
    pseudonym,
)
from switchboard_router.timeline.linking import (
    Evidence,
    Profile,
    merge_refusal,
    plan_profile,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("channel", "sender", "account", "identity"),
    [
        (Channel.EMAIL, " Ana.Perez@Example.COM ", None, "email:ana.perez@example.com"),
        (Channel.WHATSAPP, "+34 600-111-222", None, "whatsapp:+34600111222"),
        (Channel.WHATSAPP, "34600111222", None, "whatsapp:+34600111222"),
        (Channel.WHATSAPP, "0034600111222", None, "whatsapp:+34600111222"),
        (Channel.X, "1234567890", None, "x:1234567890"),
        (Channel.MESSENGER, "6789", "page-1", "messenger:page-1:6789"),
        (Channel.INSTAGRAM, "17841", "ig-9", "instagram:ig-9:17841"),
        (Channel.TELEGRAM, "555", "bot-7", "telegram:bot-7:555"),
        (Channel.WEBCHAT, "v_3fA9", "shop", "webchat:shop:v_3fA9"),
    ],
)
def test_identity_is_built_from_the_sender_and_account(
    channel: Channel, sender: str, account: str | None, identity: str
) -> None:
    message = inbound("m", channel=channel, sender=sender, account=account)
    assert identity_of(message) == identity
    assert parse_identity(identity) == identity


@pytest.mark.parametrize(
    ("channel", "authenticated", "links"),
    [
        (Channel.EMAIL, True, True),
        (Channel.EMAIL, False, False),
        (Channel.EMAIL, None, False),  # not checked is not authenticated
        (Channel.WHATSAPP, None, True),  # the provider's signed webhook names the sender
        (Channel.MESSENGER, None, True),
    ],
)
def test_only_authenticated_email_may_link_identities(
    channel: Channel, authenticated: bool | None, links: bool
) -> None:
    message = inbound("m", channel=channel, sender_authenticated=authenticated)
    assert may_link(message) is links


def test_a_web_chat_visitor_the_site_vouched_for_is_their_email_customer() -> None:
    vouched = inbound(
        "m", channel=Channel.WEBCHAT, sender="Ana@Example.com", sender_kind=SenderKind.EMAIL
    )
    assert identity_of(vouched) == "email:ana@example.com"
    # Only web chat takes a second kind: an email sender on WhatsApp is still refused.
    with pytest.raises(IdentityError, match="does not belong on channel"):
        identity_of(vouched.model_copy(update={"channel": Channel.WHATSAPP}))


def test_account_scoped_ids_need_their_account() -> None:
    message = inbound("m", channel=Channel.MESSENGER, sender="6789").model_copy(
        update={"account": None}
    )
    with pytest.raises(IdentityError, match="account missing"):
        identity_of(message)


def test_a_sender_kind_from_another_channel_is_refused() -> None:
    email = inbound("m", channel=Channel.EMAIL)
    wrong = email.model_copy(update={"channel": Channel.WHATSAPP})
    with pytest.raises(IdentityError, match="does not belong on channel"):
        identity_of(wrong)


@pytest.mark.parametrize("phone", ["12", "+0123456789", "+34 600 abc", "++34600111222", ""])
def test_phones_that_are_not_e164_are_refused(phone: str) -> None:
    with pytest.raises(IdentityError):
        normalise_phone(phone)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("EMAIL:Ana@Example.com", "email:ana@example.com"),
        ("email:<ana@example.com>", "email:ana@example.com"),
        ("whatsapp:+34 600 111 222", "whatsapp:+34600111222"),
        ("Messenger:page-1:6789", "messenger:page-1:6789"),
    ],
)
def test_queries_are_normalised_like_inbound_identities(text: str, canonical: str) -> None:
    assert parse_identity(text) == canonical


@pytest.mark.parametrize(
    "text",
    ["ana@example.com", "sms:+34600111222", "email:not-an-address", "messenger:6789", "x:a b"],
)
def test_bad_queries_say_what_is_expected(text: str) -> None:
    with pytest.raises(IdentityError):
        parse_identity(text)


def test_profile_keys_link_emails_and_whatsapp_phones_only() -> None:
    assert profile_key_for("email:ana@example.com") == ("email:ana@example.com", "verified_email")
    assert profile_key_for("whatsapp:+34600111222") == ("phone:+34600111222", "phone")
    assert profile_key_for("telegram:bot:1") is None
    assert identities_for_profile_key("phone:+34600111222") == ("whatsapp:+34600111222",)
    assert identities_for_profile_key("external:crm-1") == ()
    assert pseudonym("email:ana@example.com") != pseudonym("email:bob@example.com")
    assert "ana" not in pseudonym("email:ana@example.com")


_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-",
                 min_size=1, max_size=20)  # fmt: skip


@given(local=_local, domain=st.sampled_from(["Example.com", "mail.EXAMPLE.org", "x.io"]))
def test_email_identity_is_case_insensitive_and_stable(local: str, domain: str) -> None:
    upper = identity_of(inbound("m", sender=f"{local}@{domain}".upper()))
    lower = identity_of(inbound("m", sender=f"{local}@{domain}".lower()))
    assert upper == lower == parse_identity(upper)


@given(digits=st.text(alphabet="0123456789", min_size=6, max_size=13), country=st.integers(1, 9))
def test_phone_spellings_normalise_to_one_identity(digits: str, country: int) -> None:
    plain = f"+{country}{digits}"
    spaced = f"+{country} {digits[:3]}-{digits[3:]}"
    bare = f"{country}{digits}"
    assert normalise_phone(plain) == normalise_phone(spaced) == normalise_phone(bare) == plain


# --------------------------------------------------------------------------- linking


def test_external_id_holder_is_the_anchor_and_the_target_joins_it() -> None:
    profile = Profile(external_id="crm-1", verified_emails=("ana@example.com",))
    evidence = [
        Evidence("external_id", "external:crm-1", "cu-holder"),
        Evidence("verified_email", "email:ana@example.com", "cu-email"),
    ]
    plan = plan_profile("cu-target", profile, evidence, {"cu-holder": frozenset({"crm-1"})})
    assert plan.anchor == "cu-holder"
    assert [(m.survivor, m.absorbed, m.reason) for m in plan.merges] == [
        ("cu-holder", "cu-target", "external_id"),
        ("cu-holder", "cu-email", "verified_email"),
    ]
    assert plan.claims == ("external:crm-1", "email:ana@example.com")


def test_precedence_records_the_strongest_rule_for_each_customer() -> None:
    profile = Profile(verified_emails=("ana@example.com",), phones=("+34600111222",))
    evidence = [
        Evidence("phone", "phone:+34600111222", "cu-b"),
        Evidence("verified_email", "email:ana@example.com", "cu-b"),
        Evidence("phone", "phone:+34600111222", "cu-a"),
    ]
    plan = plan_profile("cu-t", profile, evidence, {})
    assert [(m.absorbed, m.reason, m.ids) for m in plan.merges] == [
        ("cu-b", "verified_email", ("email:ana@example.com", "phone:+34600111222")),
        ("cu-a", "phone", ("phone:+34600111222",)),
    ]


def test_customers_whose_external_ids_disagree_are_never_merged() -> None:
    profile = Profile(external_id="crm-1", phones=("+34600111222",))
    evidence = [Evidence("phone", "phone:+34600111222", "cu-other")]
    plan = plan_profile("cu-t", profile, evidence, {"cu-other": frozenset({"crm-2"})})
    assert plan.merges == ()
    assert [(r.customer_id, r.reason) for r in plan.refusals] == [
        ("cu-other", "external ids disagree")
    ]
    assert "phone:+34600111222" not in plan.claims
    assert merge_refusal("a", "b", frozenset({"crm-1"}), frozenset({"crm-2"})) is not None
    assert merge_refusal("a", "b", frozenset({"crm-1"}), frozenset()) is None
    assert merge_refusal("a", "a", frozenset(), frozenset()) == "already the same customer"


def test_a_customer_with_another_external_id_refuses_the_whole_profile() -> None:
    plan = plan_profile("cu-t", Profile(external_id="crm-9"), [], {"cu-t": frozenset({"crm-1"})})
    assert plan.rejected is not None
    assert plan.merges == ()


def test_profile_normalisation_rejects_bad_phones_and_lowercases_emails() -> None:
    profile = Profile.normalised(
        external_id=" crm-1 ",
        verified_emails=["Ana@Example.com", "ana@example.com"],
        phones=["+34 600 111 222"],
        tier="vip",
    )
    assert profile == Profile("crm-1", ("ana@example.com",), ("+34600111222",), "vip")
    with pytest.raises(IdentityError):
        Profile.normalised(external_id=None, verified_emails=[], phones=["12"], tier=None)


_customers = st.sampled_from(["cu-1", "cu-2", "cu-3", "cu-4", "cu-5"])
_ext = st.frozensets(st.sampled_from(["crm-a", "crm-b"]), max_size=1)


@given(
    target=_customers,
    external=st.none() | st.sampled_from(["crm-a", "crm-b"]),
    evidence=st.lists(
        st.builds(
            Evidence,
            rule=st.sampled_from(["external_id", "verified_email", "phone"]),
            key=st.sampled_from(["external:crm-a", "email:a@x.io", "phone:+3460011"]),
            owner=_customers,
        ),
        max_size=6,
    ),
    ids=st.dictionaries(_customers, _ext),
)
def test_a_plan_never_joins_disagreeing_external_ids(
    target: str,
    external: str | None,
    evidence: list[Evidence],
    ids: dict[str, frozenset[str]],
) -> None:
    plan = plan_profile(target, Profile(external_id=external), evidence, ids)
    if plan.rejected:
        return
    group = set(ids.get(plan.anchor, frozenset())) | set(ids.get(target, frozenset()))
    if external:
        group.add(external)
    absorbed = [m.absorbed for m in plan.merges]
    assert len(absorbed) == len(set(absorbed))  # each customer joins once
    assert plan.anchor not in absorbed
    assert all(m.survivor == plan.anchor for m in plan.merges)
    for merge in plan.merges:
        theirs = ids.get(merge.absorbed, frozenset())
        assert not (group and theirs and not (group & theirs))
        group |= theirs
    assert len(group) <= 1  # one person, at most one CRM record
