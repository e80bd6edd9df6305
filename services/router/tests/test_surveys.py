"""Surveys' pure core: the policy section checked at start, which due survey is sent
(and why not), what answers it, and the scores read from a customer's message."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard_common.contract import Channel, FeedbackKind, ReplyDelivery
from switchboard_common.settings import SettingsError
from switchboard_devkit.testing.builders import T0
from switchboard_router.assignment.policy import PolicyError, parse_policy
from switchboard_router.timeline import survey_policy
from switchboard_router.timeline.surveys import (
    Score,
    Survey,
    SurveyPolicy,
    feedback,
    is_answer,
    parse_score,
    plan_survey,
)
from switchboard_router.timeline.threading import Conversation, CustomerState

pytestmark = pytest.mark.unit

HOUR = timedelta(hours=1)
POLICY = SurveyPolicy(
    kind=FeedbackKind.CSAT,
    channels=frozenset({Channel.EMAIL, Channel.WHATSAPP}),
    delay=HOUR,
    answer_window=timedelta(days=2),
    text="Rate us 1-5 ({reference})",
)
DUE = T0 + 2 * HOUR


def survey(**overrides: Any) -> Survey:
    fields: dict[str, Any] = {
        "conversation_id": "cv-1",
        "customer_id": "cu-1",
        "channel": Channel.EMAIL,
        "state": "scheduled",
        "kind": FeedbackKind.CSAT,
        "resolved_at": T0 + HOUR,
        "due_at": DUE,
    }
    return Survey(**{**fields, **overrides})


def document(channel: Channel = Channel.EMAIL, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "_id": "cv-1",
        "customer_id": "cu-1",
        "channel": channel.value,
        "identity": "email:ana@example.com"
        if channel is Channel.EMAIL
        else "whatsapp:+34600111222",
        "account": "help@support.example.com",
        "subject": "Order 4411",
        "status": "resolved",
        "resolved_at": T0 + HOUR,
        "last_message_at": T0,
    }
    return {**fields, **overrides}


def conversation(**overrides: Any) -> Conversation:
    fields: dict[str, Any] = {
        "conversation_id": "cv-1",
        "channel": Channel.EMAIL,
        "account": None,
        "tenant": None,
        "sender": "s",
        "thread": None,
        "subject": "",
        "status": "resolved",
        "opened_at": T0,
        "last_message_at": T0,
        "resolved_at": T0 + HOUR,
        "message_count": 1,
    }
    return Conversation(**{**fields, **overrides})


# --------------------------------------------------------------------------- policy


def test_the_surveys_section_is_off_unless_configured_and_read_when_it_is() -> None:
    assert parse_policy("version: 1\nqueues: [{name: general}]\n").surveys is None
    section = parse_policy(
        "version: 1\nqueues: [{name: general}]\nsurveys:\n  kind: nps\n"
        "  channels: [email]\n  delay_seconds: 60\n  text: 'From 0 to 10?'\n"
    ).surveys
    chosen = survey_policy(section)
    assert chosen is not None
    assert (chosen.kind, chosen.channels, chosen.delay) == (
        FeedbackKind.NPS,
        frozenset({Channel.EMAIL}),
        timedelta(seconds=60),
    )
    assert chosen.answer_window == timedelta(days=3)
    assert survey_policy(None) is None


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("{kind: stars, channels: [email], text: hi}", "surveys.kind"),
        ("{kind: csat, channels: [], text: hi}", "surveys.channels"),
        ("{kind: csat, channels: [fax], text: hi}", "surveys.channels[0]"),
        ("{kind: csat, channels: [email], text: 'ref {ticket}'}", "may use {reference} only"),
        ("{kind: csat, channels: [email], text: hi, delay_seconds: -1}", "delay_seconds"),
        ("{kind: csat, channels: [email], text: hi, answer_window_seconds: 0}", "answer_window"),
        ("{kind: csat, channels: [email]}", "surveys.text"),
    ],
)
def test_a_bad_surveys_section_stops_the_policy_with_where_and_why(
    section: str, problem: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(problem)):
        parse_policy(f"version: 1\nqueues: [{{name: general}}]\nsurveys: {section}\n")


def test_a_text_a_surveyed_channel_would_refuse_stops_the_router_at_start() -> None:
    text = "x" * 990 + " {reference}"  # fits email, not Instagram's 1,000 with the id
    policy = (
        "version: 1\nqueues: [{name: general}]\nsurveys: {kind: csat, channels: [%s], text: '%s'}\n"
    )
    with pytest.raises(SettingsError, match="the text for instagram is 1018 characters"):
        survey_policy(parse_policy(policy % ("email, instagram", text)).surveys)
    assert survey_policy(parse_policy(policy % ("email", text)).surveys) is not None


# --------------------------------------------------------------------------- sending


def test_a_due_survey_goes_to_the_customer_as_an_automatic_reply_once_per_conversation() -> None:
    state = CustomerState("cu-1", refs={"m-1@mail": "cv-1", "m-9@mail": "cv-9"})
    planned = plan_survey(survey(), document(), state, POLICY, DUE)
    assert isinstance(planned, ReplyDelivery)
    assert planned.reply_id == "survey:cv-1"
    assert planned.automatic
    assert (planned.recipient, planned.account) == ("ana@example.com", "help@support.example.com")
    assert planned.text == "Rate us 1-5 (cv-1)"
    assert (planned.subject, planned.references) == ("Order 4411", ("m-1@mail",))


@pytest.mark.parametrize(
    ("case", "conversation_doc", "state", "reason"),
    [
        ("auto-reply", document(auto_submitted=True), None, "auto_submitted"),
        ("reopened", document(status="open", resolved_at=None), None, "reopened"),
        ("erased", document(identity=None), None, "erased"),
        ("erased state", document(), CustomerState("cu-1", erased=True), "erased"),
        ("unknown", None, None, "unknown_conversation"),
        ("not surveyed", document(Channel.TELEGRAM), None, "channel_not_surveyed"),
        (
            "window closed",
            document(Channel.WHATSAPP, last_message_at=DUE - timedelta(hours=25)),
            None,
            "outside_reply_window",
        ),
    ],
)
def test_what_never_gets_a_survey(
    case: str,
    conversation_doc: dict[str, Any] | None,
    state: CustomerState | None,
    reason: str,
) -> None:
    assert plan_survey(survey(), conversation_doc, state, POLICY, DUE) == reason, case


def test_the_threading_state_says_whether_it_was_reopened_before_the_document_does() -> None:
    reopened = CustomerState("cu-1", conversations={"cv-1": conversation(status="open")})
    assert plan_survey(survey(), document(), reopened, POLICY, DUE) == "reopened"


def test_a_conversation_resolved_again_later_waits_for_that_resolutions_delay() -> None:
    again = CustomerState("cu-1", conversations={"cv-1": conversation(resolved_at=DUE)})
    assert plan_survey(survey(), document(), again, POLICY, DUE) is None
    assert isinstance(plan_survey(survey(), document(), again, POLICY, DUE + HOUR), ReplyDelivery)


def test_whatsapp_inside_its_window_is_surveyed() -> None:
    recent = document(Channel.WHATSAPP, last_message_at=DUE - timedelta(hours=23))
    planned = plan_survey(survey(channel=Channel.WHATSAPP), recent, None, POLICY, DUE)
    assert isinstance(planned, ReplyDelivery)
    assert planned.recipient == "+34600111222"


# --------------------------------------------------------------------------- answers

SENT = survey(state="sent", sent_at=DUE, answer_until=DUE + timedelta(days=2))


def test_the_next_message_within_the_window_may_answer() -> None:
    assert is_answer(SENT, conversation(), "m-2", DUE + HOUR)
    assert not is_answer(SENT, conversation(), "m-2", DUE + timedelta(days=3))
    assert not is_answer(SENT, conversation(status="open"), "m-2", DUE + HOUR)
    wrote_since = conversation(last_message_at=DUE + timedelta(minutes=5))
    assert not is_answer(SENT, wrote_since, "m-2", DUE + HOUR)
    assert not is_answer(survey(), conversation(), "m-2", DUE + HOUR)  # never sent
    assert not is_answer(SENT, None, "m-2", DUE + HOUR)


def test_the_answer_redelivered_is_still_the_answer_and_nothing_else_is() -> None:
    answered = survey(
        state="answered",
        sent_at=DUE,
        answer_until=DUE + HOUR,
        answer_message_id="m-2",
    )
    # The state already holds the answer (its last message is the answer's).
    after = conversation(last_message_at=DUE + timedelta(minutes=1))
    assert is_answer(answered, after, "m-2", DUE + timedelta(minutes=1))
    assert not is_answer(answered, after, "m-3", DUE + timedelta(minutes=2))


def test_a_rating_counts_once_per_survey() -> None:
    rating = feedback(SENT, Score(4, "kind"), DUE + HOUR)
    assert (rating.feedback_id, rating.source, rating.kind, rating.score, rating.comment) == (
        "survey:cv-1",
        "survey_reply",
        FeedbackKind.CSAT,
        4,
        "kind",
    )


# --------------------------------------------------------------------------- scores


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("5", FeedbackKind.CSAT, Score(5, None)),
        ("4/5", FeedbackKind.CSAT, Score(4, None)),
        (" 4 / 5 thanks", FeedbackKind.CSAT, Score(4, "thanks")),
        ("9 great service", FeedbackKind.NPS, Score(9, "great service")),
        ("10!", FeedbackKind.NPS, Score(10, None)),
        ("0", FeedbackKind.NPS, Score(0, None)),
        ("3 - slow, but solved", FeedbackKind.CSAT, Score(3, "slow, but solved")),
        ("0", FeedbackKind.CSAT, None),
        ("6", FeedbackKind.CSAT, None),
        ("11", FeedbackKind.NPS, None),
        ("8/10", FeedbackKind.CSAT, None),
        ("4.5", FeedbackKind.CSAT, None),
        ("12345 is my order", FeedbackKind.NPS, None),
        ("-1", FeedbackKind.NPS, None),
        ("it is broken again", FeedbackKind.CSAT, None),
        ("", FeedbackKind.CSAT, None),
    ],
)
def test_scores_read_from_a_message(text: str, kind: FeedbackKind, expected: Score | None) -> None:
    assert parse_score(text, kind) == expected


KINDS = st.sampled_from(list(FeedbackKind))
# A comment a person writes after a score: starts with a letter.
COMMENTS = st.text(min_size=1, max_size=50).map(lambda t: "a" + t)


@given(kind=KINDS, data=st.data())
def test_every_score_of_the_scale_is_read_with_its_comment(
    kind: FeedbackKind, data: st.DataObject
) -> None:
    score = data.draw(st.sampled_from(list(kind.scores)))
    comment = data.draw(COMMENTS)
    separator = data.draw(st.sampled_from([" ", "! ", ", ", " - ", "\n"]))
    found = parse_score(f"{score}{separator}{comment}", kind)
    assert found is not None
    assert found.score == score
    assert found.comment == comment.strip()


@given(kind=KINDS, number=st.integers(min_value=0, max_value=999), rest=st.text(max_size=20))
def test_a_number_off_the_scale_is_never_a_score(
    kind: FeedbackKind, number: int, rest: str
) -> None:
    found = parse_score(f"{number}{rest}", kind)
    if number not in kind.scores:
        assert found is None
    if found is not None:
        assert found.score in kind.scores


@given(kind=KINDS, text=st.text(max_size=80))
def test_any_text_gives_a_score_of_the_scale_or_none(kind: FeedbackKind, text: str) -> None:
    found = parse_score(text, kind)
    assert found is None or (
        found.score in kind.scores and (found.comment is None or len(found.comment) <= 2000)
    )
    if not text.lstrip()[:1].isdigit():
        assert found is None
