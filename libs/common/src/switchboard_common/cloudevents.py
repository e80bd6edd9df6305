"""CloudEvents 1.0 binary-mode headers on Kafka records (CONTRACT.md).

Every record carries ``ce_specversion``, ``ce_id``, ``ce_type``, ``ce_source``,
``ce_time`` and ``content-type: application/json``; the value is the JSON payload.
These functions are pure: they build and check headers and payloads, nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from switchboard_common.contract.events import ContractModel
from switchboard_common.contract.topics import TopicSpec

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time")

RejectReason = Literal["not_json", "invalid_payload", "bad_headers", "unknown_type"]


@dataclass(frozen=True, slots=True)
class CloudEventAttributes:
    """The CloudEvents context attributes of one record."""

    id: str
    type: str
    source: str
    time: datetime
    specversion: str = SPECVERSION


class DecodeError(ValueError):
    """A record that does not satisfy the contract; ``reason`` is a bounded category."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


def source_for(service: str) -> str:
    """The ``ce_source`` of a Switchboard service, e.g. ``/switchboard/router``."""
    return f"/switchboard/{service}"


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; refuses naive datetimes."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every Switchboard timestamp carries a zone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_headers(
    event: ContractModel,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
) -> dict[str, str]:
    """Binary-mode headers for publishing ``event``.

    ``event_id`` defaults to a random UUID; pass a deterministic one when the same
    event may be published again (a retry is then recognisably the same event).
    """
    if not event.ce_type:
        raise TypeError(f"{type(event).__name__} is not a publishable contract event")
    return {
        "ce_specversion": SPECVERSION,
        "ce_id": event_id or str(uuid.uuid4()),
        "ce_type": event.ce_type,
        "ce_source": source,
        "ce_time": rfc3339(time or datetime.now(UTC)),
        "content-type": CONTENT_TYPE,
    }


def encode(event: ContractModel) -> bytes:
    """The record value of ``event``: its JSON."""
    return event.model_dump_json().encode()


def header_map(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """Kafka headers as a dict of strings (last one wins; undecodable values dropped)."""
    out: dict[str, str] = {}
    for key, value in headers:
        if value is None:
            continue
        try:
            out[key] = value.decode()
        except UnicodeDecodeError:
            continue
    return out


def read_attributes(headers: Mapping[str, str]) -> CloudEventAttributes:
    """Check and read the CloudEvents attributes; raises ``DecodeError`` (bad_headers)."""
    missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
    if missing:
        raise DecodeError("bad_headers", f"missing CloudEvents headers: {', '.join(missing)}")
    if headers["ce_specversion"] != SPECVERSION:
        raise DecodeError(
            "bad_headers", f"unsupported ce_specversion {headers['ce_specversion']!r}"
        )
    content_type = headers.get("content-type", CONTENT_TYPE).split(";")[0].strip()
    if content_type != CONTENT_TYPE:
        raise DecodeError("bad_headers", f"content-type must be {CONTENT_TYPE}")
    try:
        time = datetime.fromisoformat(headers["ce_time"])
    except ValueError:
        raise DecodeError("bad_headers", "ce_time is not RFC 3339") from None
    if time.tzinfo is None:
        raise DecodeError("bad_headers", "ce_time has no time zone")
    return CloudEventAttributes(
        id=headers["ce_id"],
        type=headers["ce_type"],
        source=headers["ce_source"],
        time=time,
        specversion=headers["ce_specversion"],
    )


def describe_validation_error(error: ValidationError) -> str:
    """A readable summary of what is wrong, without echoing the (personal) input."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:10]:
        location = ".".join(str(p) for p in item["loc"]) or "payload"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def decode(
    topic: TopicSpec,
    headers: Iterable[tuple[str, bytes | None]],
    value: bytes | None,
) -> tuple[CloudEventAttributes, ContractModel]:
    """Check a record from ``topic`` against the contract and parse its payload.

    Raises ``DecodeError`` with a bounded reason when headers are missing or wrong, the
    ``ce_type`` does not belong on this topic, the value is not JSON, or the payload
    does not validate.
    """
    attributes = read_attributes(header_map(headers))
    model = topic.types.get(attributes.type)
    if model is None:
        allowed = ", ".join(sorted(topic.types))
        raise DecodeError(
            "unknown_type",
            f"ce_type {attributes.type!r} is not carried by {topic.name} (allowed: {allowed})",
        )
    if value is None:
        raise DecodeError("not_json", "record has no value")
    try:
        event = model.model_validate_json(value)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            raise DecodeError("not_json", "value is not valid JSON") from None
        raise DecodeError(
            "invalid_payload",
            f"{attributes.type} payload invalid: {describe_validation_error(error)}",
        ) from None
    return attributes, event
