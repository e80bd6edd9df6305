"""The pure core: tokens, vouched identities, frames, send limits, poll cursors and the
inbound message."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from switchboard_common.contract import Channel, SenderKind
from switchboard_webchat import frames
from switchboard_webchat.cursors import Cursors
from switchboard_webchat.frames import ErrorCode, FrameError, Hello, Ping, Seen, Send
from switchboard_webchat.inbound import message_id, received
from switchboard_webchat.limits import ConnectionCounter, SendLimiter
from switchboard_webchat.tokens import (
    Visitor,
    identity_hash,
    issue_token,
    new_visitor_id,
    verify_identity,
    verify_token,
)

pytestmark = pytest.mark.unit

SECRET = b"token-secret"


# --------------------------------------------------------------------------- tokens


def test_a_token_proves_its_visitor_id_and_nothing_else() -> None:
    visitor = new_visitor_id()
    token = issue_token(SECRET, visitor)
    assert verify_token(SECRET, token) == visitor
    assert verify_token(b"other secret", token) is None
    other = new_visitor_id()
    assert verify_token(SECRET, f"{other}.{token.split('.')[1]}") is None  # moved signature
    assert verify_token(SECRET, token + "x") is None
    assert verify_token(SECRET, token[:-1]) is None
    assert verify_token(SECRET, visitor) is None
    assert verify_token(SECRET, "") is None
    assert verify_token(SECRET, "ana@example.com." + token.split(".")[1]) is None


def test_visitor_ids_are_fresh_and_never_an_address() -> None:
    ids = {new_visitor_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("v_") and "@" not in i and "." not in i for i in ids)


def test_the_identity_hash_is_the_sites_hmac_of_the_email_in_hex() -> None:
    expected = hmac.new(b"site", b"ana@example.com", hashlib.sha256).hexdigest()
    assert identity_hash(b"site", "ana@example.com") == expected
    assert verify_identity(b"site", "ana@example.com", expected)
    assert verify_identity(b"site", "ana@example.com", expected.upper())
    assert not verify_identity(b"site", "eve@example.com", expected)
    assert not verify_identity(b"other", "ana@example.com", expected)
    not_an_address = identity_hash(b"site", "ana")
    assert not verify_identity(b"site", "ana", not_an_address)


def test_a_visitor_reads_the_mailbox_of_their_vouched_email_or_their_id() -> None:
    anonymous = Visitor("shop", "v_abc")
    vouched = Visitor("shop", "v_abc", email="ana@example.com")
    assert (anonymous.recipient, anonymous.identity) == ("v_abc", "webchat:shop:v_abc")
    assert (vouched.recipient, vouched.identity) == ("ana@example.com", "email:ana@example.com")


# --------------------------------------------------------------------------- frames


def test_client_frames_are_parsed_by_type() -> None:
    hello = frames.parse_frame(
        '{"type":"hello","token":null,"after":3,'
        '"identity":{"email":"a@b.c","hash":"ff"},"name":"Ana"}'
    )
    assert isinstance(hello, Hello)
    assert (hello.after, hello.name) == (3, "Ana")
    assert hello.identity is not None
    assert hello.identity.email == "a@b.c"
    send = frames.parse_frame('{"type":"send","client_id":"c_1-A","text":"hi"}')
    assert isinstance(send, Send)
    assert (send.client_id, send.text) == ("c_1-A", "hi")
    assert isinstance(frames.parse_frame('{"type":"seen","seq":7}'), Seen)
    assert isinstance(frames.parse_frame('{"type":"ping"}'), Ping)


@pytest.mark.parametrize(
    ("text", "client_id"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"type":"dance"}', None),
        ('{"text":"no type"}', None),
        ('{"type":"hello","after":-1}', None),
        ('{"type":"seen","seq":"x"}', None),
        ('{"type":"send","client_id":"ok_1"}', "ok_1"),  # no text: the id is echoed
        ('{"type":"send","client_id":"not ok!","text":"x"}', None),
        ('{"type":"send","client_id":"' + "a" * 65 + '","text":"x"}', None),
        ('{"type":"send","client_id":"","text":"x"}', None),
    ],
)
def test_anything_else_is_a_frame_error_without_the_text(text: str, client_id: str | None) -> None:
    with pytest.raises(FrameError) as caught:
        frames.parse_frame(text)
    assert caught.value.client_id == client_id
    assert '"x"' not in str(caught.value)


def test_a_message_must_have_something_to_say_within_the_limit() -> None:
    assert frames.check_text(" \n\t", 10) is ErrorCode.EMPTY
    assert frames.check_text("x" * 11, 10) is ErrorCode.TOO_LONG
    assert frames.check_text("x" * 10, 10) is None


def test_a_message_frame_says_when_in_rfc3339() -> None:
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    frame = frames.message(4, "reply:r", "agent", "Hi", at=at, client_id=None)
    assert frame["at"] == "2026-03-02T09:30:00Z"
    assert frames.encode(frame).startswith('{"type":"message","seq":4')


# --------------------------------------------------------------------------- limits


def test_a_visitor_gets_a_burst_then_a_message_a_second() -> None:
    limiter = SendLimiter(visitor_burst=3, visitor_per_second=1, ip_burst=100, ip_per_second=100)
    assert [limiter.admit("v", "ip", 0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.admit("v", "ip", 0.0) == 1.0
    assert limiter.admit("v", "ip", 0.5) == 0.5  # refused: nothing taken
    assert limiter.admit("v", "ip", 1.0) == 0
    assert limiter.admit("other", "ip", 1.0) == 0  # visitors apart
    assert [limiter.admit("v", "ip", 100.0) for _ in range(4)][3] > 0  # refills to the burst


def test_an_address_is_limited_across_its_visitors_and_a_refusal_takes_nothing() -> None:
    limiter = SendLimiter(visitor_burst=10, visitor_per_second=1, ip_burst=2, ip_per_second=2)
    assert limiter.admit("a", "ip", 0.0) == 0
    assert limiter.admit("b", "ip", 0.0) == 0
    assert limiter.admit("c", "ip", 0.0) == 0.5
    assert limiter.admit("c", "elsewhere", 0.0) == 0
    assert limiter.admit("c", "ip", 0.5) == 0  # c's refusal took none of its own tokens


def test_the_tables_of_buckets_are_bounded() -> None:
    limiter = SendLimiter(
        visitor_burst=1, visitor_per_second=1, ip_burst=10, ip_per_second=1, max_keys=2
    )
    for visitor in ("a", "b", "c"):
        assert limiter.admit(visitor, "ip", 0.0) == 0
    assert len(limiter.visitors) == 2
    assert limiter.admit("c", "ip", 0.0) > 0  # recent visitors keep their state


def test_connections_are_counted_per_address() -> None:
    connections = ConnectionCounter(2)
    assert connections.open("a")
    assert connections.open("a")
    assert not connections.open("a")
    assert connections.open("b")
    connections.close("a")
    assert connections.open("a")
    assert connections.total() == 3


# --------------------------------------------------------------------------- cursors


def test_a_cursor_pushes_each_seq_once_and_waits_below_a_gap() -> None:
    cursors = Cursors(gap_wait=10)
    cursors.watch("m", 2)
    assert cursors.fresh("m", [1, 2, 3], now=0) == [3]
    assert cursors.watermarks() == {"m": 3}
    assert cursors.fresh("m", [5], now=1) == [5]  # 4 not landed yet
    assert cursors.watermarks() == {"m": 3}  # so it is still asked for
    assert cursors.fresh("m", [5], now=2) == []  # 5 never twice
    assert cursors.fresh("m", [4, 5], now=3) == [4]
    assert cursors.watermarks() == {"m": 5}


def test_a_seq_that_never_lands_is_given_up() -> None:
    cursors = Cursors(gap_wait=10)
    cursors.watch("m", 0)
    assert cursors.fresh("m", [2, 3], now=0) == [2, 3]
    assert cursors.fresh("m", [2, 3], now=9) == []
    assert cursors.watermarks() == {"m": 0}
    assert cursors.fresh("m", [2, 3], now=10) == []
    assert cursors.watermarks() == {"m": 3}


def test_a_cursor_is_kept_for_a_second_socket_and_forgotten() -> None:
    cursors = Cursors()
    cursors.watch("m", 4)
    cursors.watch("m", 9)
    assert cursors.watermarks() == {"m": 4}
    cursors.forget("m")
    assert "m" not in cursors
    assert cursors.fresh("m", [5], now=0) == []


# --------------------------------------------------------------------------- inbound


def test_a_visitors_message_is_the_same_message_whenever_it_is_sent_again() -> None:
    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    visitor = Visitor("shop", "v_abc", name="Ana")
    first = received(visitor, "c-1", "Hi", now)
    again = received(visitor, "c-1", "Hi", now)
    assert (
        first.message.message_id == again.message.message_id == message_id("shop", "v_abc", "c-1")
    )
    assert message_id("shop", "v_abc", "c-2") != first.message.message_id
    assert message_id("other", "v_abc", "c-1") != first.message.message_id
    assert first.key == "webchat:shop:v_abc"
    assert first.message.channel is Channel.WEBCHAT
    assert first.message.sender.kind is SenderKind.WEBCHAT_VISITOR
    assert (first.message.account, first.message.provider_thread_id) == ("shop", "v_abc")
    vouched = received(Visitor("shop", "v_abc", email="ana@example.com"), "c-1", "Hi", now)
    assert vouched.key == "email:ana@example.com"
    assert vouched.message.sender.kind is SenderKind.EMAIL
    assert vouched.message.sender_authenticated is True


# --------------------------------------------------------------------------- logs


def test_uvicorns_per_socket_lines_with_the_clients_address_are_dropped() -> None:
    import logging

    from switchboard_webchat.logs import NoSocketAccessLog

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, None)

    keep = NoSocketAccessLog().filter
    assert not keep(record('%s - "WebSocket %s" [accepted]', "203.0.113.9:5000", "/chat/socket"))
    assert not keep(record('%s - "WebSocket %s" 403', "203.0.113.9:5000", "/chat/socket"))
    assert keep(record("Application startup complete."))


# --------------------------------------------------------------------------- sessions


async def test_a_socket_too_far_behind_gets_what_was_queued_in_order_then_closes() -> None:
    import asyncio
    import json

    from switchboard_webchat.hub import QUEUE_FRAMES, Session
    from switchboard_webchat.mailbox import Entry

    sent: list[int] = []
    closed: list[int] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text)["seq"])

    async def close(code: int) -> None:
        closed.append(code)

    session = Session("shop/v_x", send, close)
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    offered = [
        session.offer_entry(Entry(f"e{n}", "shop/v_x", n, "agent", "hi", at))
        for n in range(1, QUEUE_FRAMES + 3)
    ]
    assert offered == [True] * QUEUE_FRAMES + [False, False]
    await asyncio.wait_for(session.write(), timeout=5)
    assert sent == list(range(1, QUEUE_FRAMES + 1))
    assert closed == [1013]
    assert session.closed
    await session.reply(frames.PONG)  # nobody writes any more: never waits
