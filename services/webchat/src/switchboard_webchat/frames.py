"""The socket's protocol: the JSON text frames a widget sends and what it is answered.
Pure: text in, a typed frame or a ``FrameError`` out; server frames are plain dicts.

Client frames: ``hello`` (first, once), ``send``, ``seen``, ``ping``. Server frames:
``welcome``, ``message``, ``ack``, ``error``, ``pong``. The README describes each.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ClientId = Annotated[str, Field(pattern=CLIENT_ID.pattern)]


class ErrorCode(StrEnum):
    """Why a frame was not taken (the ``code`` of an error frame)."""

    ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # the page's origin is not the shop's: closed
    UNKNOWN_SITE = "unknown_site"  # the widget's data-site is not this chat's site: closed
    TOO_MANY_CONNECTIONS = "too_many_connections"  # this address has enough sockets: closed
    HELLO_REQUIRED = "hello_required"  # the first frame must be hello: closed
    BAD_FRAME = "bad_frame"  # not a frame of this protocol (the socket stays open)
    # A token this service did not issue: closed, the widget starts afresh.
    BAD_TOKEN = "bad_token"  # noqa: S105 - an error code, not a secret
    BAD_IDENTITY = "bad_identity"  # the site's hash does not match the email: closed
    EMPTY = "empty"  # nothing but whitespace
    TOO_LONG = "too_long"  # over max_chars
    RATE_LIMITED = "rate_limited"  # not taken; send it again after retry_after
    UNAVAILABLE = "unavailable"  # not taken (Kafka or the database); send it again later


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Identity(_Frame):
    email: Annotated[str, Field(min_length=3, max_length=320)]
    hash: Annotated[str, Field(min_length=1, max_length=128)]


class Hello(_Frame):
    type: Literal["hello"]
    token: Annotated[str, Field(max_length=200)] | None = None
    #: The highest ``seq`` the widget has shown: everything after it is sent.
    after: Annotated[int, Field(ge=0)] = 0
    identity: Identity | None = None
    name: Annotated[str, Field(max_length=200)] | None = None


class Send(_Frame):
    type: Literal["send"]
    client_id: ClientId
    text: str


class Seen(_Frame):
    type: Literal["seen"]
    seq: Annotated[int, Field(ge=0)]


class Ping(_Frame):
    type: Literal["ping"]


ClientFrame = Annotated[Hello | Send | Seen | Ping, Field(discriminator="type")]
_CLIENT_FRAME: TypeAdapter[Hello | Send | Seen | Ping] = TypeAdapter(ClientFrame)


class FrameError(ValueError):
    """A frame that is not part of the protocol; ``client_id`` when one could be read."""

    def __init__(self, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.client_id = client_id


def parse_frame(text: str) -> Hello | Send | Seen | Ping:
    """The client frame in ``text``; raises ``FrameError`` saying what is wrong (never
    echoing the text, which is the customer's)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser goes (a few KiB of brackets).
        raise FrameError("a frame is one JSON object") from None
    if not isinstance(data, dict):
        raise FrameError("a frame is one JSON object")
    try:
        return _CLIENT_FRAME.validate_python(data)
    except ValidationError as error:
        client_id = data.get("client_id")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'frame'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        # The client_id is echoed only when it is one (the widget matches on it).
        valid = isinstance(client_id, str) and CLIENT_ID.match(client_id) is not None
        raise FrameError(problems, client_id if valid else None) from None


def check_text(text: str, max_chars: int) -> ErrorCode | None:
    """Why a message's text cannot be sent, or None."""
    if not text.strip():
        return ErrorCode.EMPTY
    if len(text) > max_chars:
        return ErrorCode.TOO_LONG
    return None


# --------------------------------------------------------------------------- server frames


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def welcome(token: str, visitor: str, *, verified: bool, max_chars: int) -> dict[str, Any]:
    return {
        "type": "welcome",
        "token": token,
        "visitor": visitor,
        "verified": verified,
        "max_chars": max_chars,
    }


def ack(client_id: str, message_id: str, seq: int) -> dict[str, Any]:
    return {"type": "ack", "client_id": client_id, "message_id": message_id, "seq": seq}


def error(
    code: ErrorCode,
    message: str,
    *,
    client_id: str | None = None,
    retry_after: float | None = None,
) -> dict[str, Any]:
    return {
        "type": "error",
        "code": code.value,
        "message": message,
        "client_id": client_id,
        "retry_after": retry_after,
    }


def message(
    seq: int, entry_id: str, sender: str, text: str, *, at: datetime, client_id: str | None
) -> dict[str, Any]:
    """A mailbox entry as the widget shows it (``from``: visitor, agent, switchboard)."""
    return {
        "type": "message",
        "seq": seq,
        "id": entry_id,
        "from": sender,
        "text": text,
        "at": at.isoformat().replace("+00:00", "Z"),
        "client_id": client_id,
    }


PONG: dict[str, Any] = {"type": "pong"}
