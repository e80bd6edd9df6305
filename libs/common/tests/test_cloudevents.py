from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from switchboard_common.cloudevents import (
    DecodeError,
    decode,
    encode,
    event_headers,
    read_attributes,
    rfc3339,
)
from switchboard_common.contract import INBOUND, TOPICS_BY_NAME, OfferAccepted
from switchboard_devkit.testing.builders import message

pytestmark = pytest.mark.unit
INBOUND_SPEC = TOPICS_BY_NAME[INBOUND]


def _headers(**overrides: str | None) -> list[tuple[str, bytes | None]]:
    base = event_headers(message(), source="/tests", event_id="e-1")
    base.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in overrides.items():
        if v is None:
            base.pop(k, None)
    return [(k, v.encode()) for k, v in base.items()]


def test_headers_are_cloudevents_binary_mode() -> None:
    moment = datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    headers = event_headers(message(), source="/switchboard/ingest-email", time=moment)
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_type"] == "support.message.received"
    assert headers["ce_source"] == "/switchboard/ingest-email"
    assert headers["ce_time"] == "2026-03-02T09:00:00Z"
    assert headers["content-type"] == "application/json"
    assert len(headers["ce_id"]) == 36  # a UUID unless given


def test_decode_returns_attributes_and_payload() -> None:
    attributes, event = decode(INBOUND_SPEC, _headers(), encode(message("m-9")))
    assert attributes.id == "e-1"
    assert attributes.type == "support.message.received"
    assert event == message("m-9")


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        (_headers(ce_type=None), encode(message()), "bad_headers"),
        (_headers(ce_specversion="0.3"), encode(message()), "bad_headers"),
        (_headers(ce_time="yesterday"), encode(message()), "bad_headers"),
        (_headers(**{"content-type": "text/plain"}), encode(message()), "bad_headers"),
        (_headers(ce_type="support.agent.upserted"), encode(message()), "unknown_type"),
        (_headers(ce_type="support.nonsense"), encode(message()), "unknown_type"),
        (_headers(), b"\xff\xfe not json", "not_json"),
        (_headers(), None, "not_json"),
        (_headers(), json.dumps({"message_id": "m"}).encode(), "invalid_payload"),
    ],
)
def test_decode_refuses_with_a_bounded_reason(
    headers: list[tuple[str, bytes | None]], value: bytes | None, reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(INBOUND_SPEC, headers, value)
    assert caught.value.reason == reason


def test_validation_errors_do_not_echo_personal_input() -> None:
    payload = json.loads(message().model_dump_json())
    payload["sender"]["kind"] = "ana.secret@example.com"
    with pytest.raises(DecodeError) as caught:
        decode(INBOUND_SPEC, _headers(), json.dumps(payload).encode())
    assert "ana.secret@example.com" not in str(caught.value)
    assert "sender.kind" in str(caught.value)


def test_rfc3339_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    assert rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


def test_read_attributes_names_every_missing_header() -> None:
    with pytest.raises(DecodeError, match="ce_id, ce_source"):
        read_attributes({"ce_specversion": "1.0", "ce_type": "x", "ce_time": "2026-01-01T00:00Z"})


def test_events_of_other_topics_encode_too() -> None:
    offer = OfferAccepted(agent_id="a1", conversation_id="c1")
    headers = event_headers(offer, source="/tests")
    assert headers["ce_type"] == "support.offer.accepted"
    assert json.loads(encode(offer)) == {"agent_id": "a1", "conversation_id": "c1"}
