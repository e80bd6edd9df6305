"""Classification (pure) and the policy file: priority, skills, language, queues, and
clear errors for a bad policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_common.contract import Channel, Priority
from switchboard_devtools.testing.router_assignment import FixedLanguage, activity
from switchboard_router.assignment.classify import Py3LangIdDetector, classify, select_queue
from switchboard_router.assignment.policy import PolicyError, load_policy, parse_policy

pytestmark = pytest.mark.unit

DEFAULT = load_policy()


def test_priority_is_the_most_urgent_of_tier_channel_and_keywords() -> None:
    plain = classify(activity("c", text="hello there"), DEFAULT, FixedLanguage())
    assert plain is not None
    assert plain.priority == Priority.NORMAL
    vip = classify(activity("c", customer_tier="vip"), DEFAULT, FixedLanguage())
    assert vip is not None
    assert vip.priority == Priority.URGENT
    assert vip.priority_from == ("tier:vip",)
    outage = classify(activity("c", text="The app is DOWN, not working!"), DEFAULT, FixedLanguage())
    assert outage is not None
    assert outage.priority == Priority.HIGH
    assert "keywords:outage" in outage.priority_from
    instagram = classify(activity("c", channel=Channel.INSTAGRAM), DEFAULT, FixedLanguage())
    assert instagram is not None
    assert instagram.priority == Priority.NORMAL  # the default is more urgent than low


def test_keywords_match_whole_words_only() -> None:
    policy = parse_policy(
        "classification:\n  keyword_rules:\n    - {name: u, keywords: [urgent], priority: urgent}\n"
        "queues: [{name: q}]\n"
    )
    hit = classify(activity("c", subject="URGENT: help"), policy, FixedLanguage())
    miss = classify(activity("c", text="nonurgentness"), policy, FixedLanguage())
    assert hit is not None
    assert miss is not None
    assert (hit.priority, miss.priority) == (Priority.URGENT, Priority.NORMAL)


def test_topics_require_skills_and_the_language_is_a_required_skill() -> None:
    result = classify(
        activity("c", text="Where is my invoice? I was charged twice"), DEFAULT, FixedLanguage("es")
    )
    assert result is not None
    assert result.topics == ("billing",)
    assert result.skills == {"billing": 1, "language:es": 1}
    assert result.language == "es"


def test_the_shipped_language_model_detects_languages_offline() -> None:
    detect = Py3LangIdDetector()
    samples = {
        "en": "Hello, my order has not arrived yet and I need it for tomorrow",
        "es": "Hola, mi pedido todavía no ha llegado y lo necesito para mañana",
        "fr": "Bonjour, ma commande n'est toujours pas arrivée, pouvez-vous m'aider",
        "de": "Hallo, meine Bestellung ist noch nicht angekommen, bitte helfen Sie mir",
    }
    for language, text in samples.items():
        result = classify(activity("c", text=text), DEFAULT, detect)
        assert result is not None
        assert result.language == language, text


def test_short_texts_fall_back_to_the_default_language() -> None:
    result = classify(activity("c", text="ok"), DEFAULT, Py3LangIdDetector())
    assert result is not None
    assert result.language is None
    assert not any(s.startswith("language:") for s in result.skills)


def test_auto_submitted_messages_are_not_routed() -> None:
    assert classify(activity("c", auto_submitted=True), DEFAULT, FixedLanguage()) is None


def test_the_first_queue_whose_conditions_hold_is_chosen() -> None:
    def queue_for(**fields: object) -> str:
        result = classify(activity("c", **fields), DEFAULT, FixedLanguage())
        assert result is not None
        return select_queue(
            result,
            DEFAULT,
            channel=str(fields.get("channel", "email")),
            customer_tier=fields.get("customer_tier"),  # type: ignore[arg-type]
            tenant=None,
        ).name

    assert queue_for(customer_tier="vip") == "vip"
    assert queue_for(text="urgent please") == "urgent"
    assert queue_for(text="hello") == "general"
    no_match = parse_policy("queues: [{name: only-x, when: {channel: [x]}}]\n")
    result = classify(activity("c"), no_match, FixedLanguage())
    assert result is not None
    queue = select_queue(result, no_match, channel="email", customer_tier=None, tenant=None)
    assert queue.name == "overflow"
    by_channel = parse_policy(
        "queues: [{name: chat, when: {channel: [whatsapp, telegram]}}, {name: general}]\n"
    )
    result = classify(activity("c"), by_channel, FixedLanguage())
    assert result is not None
    chosen = {
        channel: select_queue(
            result, by_channel, channel=channel, customer_tier=None, tenant=None
        ).name
        for channel in ("whatsapp", "telegram", "email")
    }
    assert chosen == {"whatsapp": "chat", "telegram": "chat", "email": "general"}


def test_policy_errors_name_the_file_the_line_the_field_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "queues:\n"
        "  - name: general\n"
        "    steps:\n"
        "      - {after_seconds: 10, preferred: {billing: 11}}\n"
        "offers: {timeout_seconds: -1}\n"
    )
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    text = str(error.value)
    assert (
        f"{path}:4: queues[0].steps[0].preferred.billing: Input should be less than or equal to 10"
        in text
    )
    assert f"{path}:5: offers.timeout_seconds:" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("queues: []\n", "queues: List should have at least 1 item"),
        ("queues: [{name: a}, {name: a}]\n", "queue names must be unique: a"),
        ("queues: [{name: a, colour: red}]\n", "queues[0].colour: Extra inputs are not permitted"),
        ("queues:\n  - {name: a\n", "not valid YAML"),
        ("- just a list\n", "the policy must be a mapping"),
        (
            "queues: [{name: a, steps: [{after_seconds: 5}, {after_seconds: 1}]}]\n",
            "steps must have strictly increasing after_seconds",
        ),
    ],
)
def test_invalid_policies_are_refused_with_a_reason(text: str, expected: str) -> None:
    with pytest.raises(PolicyError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(text, source="p.yaml")


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the routing policy"):
        load_policy(tmp_path / "missing.yaml")


def test_web_chat_overflows_like_the_other_chat_channels() -> None:
    """Live chat waits minutes, not the quarter hour email may: the shipped queues send
    what still waits to the overflow queue after a minute, as for WhatsApp."""
    for queue in DEFAULT.queues:
        assert queue.overflow_after(Channel.WEBCHAT) == queue.overflow_after(Channel.WHATSAPP)
    assert DEFAULT.queues[-1].overflow_after(Channel.WEBCHAT) == 60
