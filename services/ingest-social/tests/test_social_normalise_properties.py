"""Properties of every normaliser: arbitrary input never crashes them (it validates or
is refused with a ValidationError), and normalising is deterministic, so a redelivered
webhook yields the same message ids and keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from switchboard_devtools.testing.social import BOT, RECEIVED_AT, load_sample
from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise import (
    Normalised,
    normalise_meta,
    normalise_telegram,
    normalise_x,
)

pytestmark = pytest.mark.unit

Normaliser = Callable[[dict[str, Any], AccountDirectory], Normalised]
NORMALISERS: dict[str, Normaliser] = {
    "meta": lambda p, d: normalise_meta(p, d, RECEIVED_AT),
    "x": lambda p, d: normalise_x(p, d, RECEIVED_AT),
    "telegram": lambda p, d: normalise_telegram(p, BOT, d, RECEIVED_AT),
}
SAMPLES = {
    "meta": [
        "whatsapp_text",
        "whatsapp_image",
        "whatsapp_interactive",
        "whatsapp_status",
        "messenger_text",
        "messenger_postback",
        "messenger_echo",
        "instagram_text",
        "instagram_story_reply",
    ],
    "x": ["x_dm"],
    "telegram": ["telegram_message", "telegram_edited_message"],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, provider: str) -> dict[str, Any]:
    """A real sample with one value somewhere replaced by arbitrary JSON."""
    sample = load_sample(draw(st.sampled_from(SAMPLES[provider])))
    node: Any = sample
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict | list) or draw(st.booleans()):
                node[key] = draw(json_values)
                break
            node = node[key]
        elif isinstance(node, list) and node:
            index = draw(st.integers(min_value=0, max_value=len(node) - 1))
            if not isinstance(node[index], dict | list) or draw(st.booleans()):
                node[index] = draw(json_values)
                break
            node = node[index]
        else:
            break
    return sample


@pytest.mark.parametrize("provider", sorted(NORMALISERS))
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_payloads_validate_or_are_refused(
    provider: str, data: st.DataObject, directory: AccountDirectory
) -> None:
    payload = data.draw(
        st.one_of(mutated(provider), st.dictionaries(st.text(max_size=12), json_values))
    )
    try:
        result = NORMALISERS[provider](payload, directory)
    except ValidationError:
        return
    for inbound in result.messages:
        assert inbound.message.message_id.startswith(f"{inbound.message.channel.value}:")
        assert inbound.key.startswith(f"{inbound.message.channel.value}:")


@pytest.mark.parametrize(
    ("provider", "sample"), [(p, s) for p, names in SAMPLES.items() for s in names]
)
def test_redelivery_gives_the_same_ids_and_keys(
    provider: str, sample: str, directory: AccountDirectory
) -> None:
    first = NORMALISERS[provider](load_sample(sample), directory)
    again = NORMALISERS[provider](load_sample(sample), directory)
    assert [(m.key, m.message) for m in first.messages] == [
        (m.key, m.message) for m in again.messages
    ]
    ids = [m.message.message_id for m in first.messages]
    assert len(ids) == len(set(ids))
