"""A visitor's messages through the real socket onto the real Kafka: acknowledged only
once Kafka has them, once per client_id, under the right identity; and every way a
socket or a message is refused."""

from __future__ import annotations

import contextlib

import pytest
from websockets.exceptions import ConnectionClosed

from switchboard_common.contract import INBOUND, MessageReceived, SenderKind
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_webchat.inbound import message_id

from .conftest import (
    SITE,
    RunningChat,
    hello,
    receive,
    say,
    sync,
    user_hash,
    widget,
)

pytestmark = pytest.mark.integration


def ce_id(headers: tuple[tuple[str, bytes | None], ...]) -> str:
    value = dict(headers)["ce_id"]
    assert value is not None
    return value.decode()


async def test_a_message_is_acknowledged_once_kafka_has_it(
    chat: RunningChat, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket, name="Ana")
        visitor = welcome["visitor"]
        assert welcome["verified"] is False
        assert welcome["max_chars"] == 10_000
        assert welcome["token"].startswith(f"{visitor}.")
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Where is my order?"})
        ack = await receive(socket)
        # Kafka has it by the time the ack is read.
        records = await probe.read_events(INBOUND, count=1)
    assert ack == {
        "type": "ack",
        "client_id": "c-1",
        "message_id": message_id(SITE, visitor, "c-1"),
        "seq": 1,
    }
    assert len(records) == 1
    record, event = records[0]
    assert isinstance(event, MessageReceived)
    assert record.key == f"webchat:{SITE}:{visitor}".encode()
    assert ce_id(record.headers) == ack["message_id"] == event.message_id
    assert event.sender.kind is SenderKind.WEBCHAT_VISITOR
    assert event.sender.value == visitor
    assert event.sender.display_name == "Ana"
    assert event.account == SITE
    assert event.channel.value == "webchat"
    assert event.provider_thread_id == visitor
    assert event.provider_message_id == "c-1"
    assert event.text == "Where is my order?"


async def test_the_same_client_id_again_is_the_same_ack_and_one_message(
    chat: RunningChat, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        welcome = await hello(socket)
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Hello"})
        first = await receive(socket)
    # The widget reconnects (its ack lost, say) and sends it again.
    async with widget(chat) as socket:
        again = await hello(socket, token=welcome["token"], after=0)
        assert again["visitor"] == welcome["visitor"]
        history = await sync(socket)
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Hello"})
        second = await receive(socket)
    assert second == first
    assert [(f["from"], f["client_id"], f["seq"]) for f in history] == [("visitor", "c-1", 1)]
    assert len(await probe.read(INBOUND, count=1, settle=2.0)) == 1
    resends = chat.parts.registry.get_sample_value("switchboard_webchat_reconnect_resends_total")
    assert resends == 1


async def test_a_visitor_the_site_vouches_for_writes_as_their_email(
    chat: RunningChat, probe: TopicProbe
) -> None:
    identity = {"email": "Ana@Example.com", "hash": user_hash("Ana@Example.com")}
    async with widget(chat) as socket:
        welcome = await hello(socket, identity=identity)
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Hi"})
        ack = await receive(socket)
        ((record, event),) = await probe.read_events(INBOUND, count=1)
    assert welcome["verified"] is True
    assert ack["type"] == "ack"
    assert isinstance(event, MessageReceived)
    assert record.key == b"email:ana@example.com"
    assert event.sender.kind is SenderKind.EMAIL
    assert event.sender.value == "ana@example.com"
    assert event.account == SITE
    assert event.provider_thread_id == welcome["visitor"]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (
            {"identity": {"email": "ana@example.com", "hash": user_hash("eve@example.com")}},
            "bad_identity",
        ),
        (
            {"identity": {"email": "ana@example.com", "hash": user_hash("ana@example.com", "x")}},
            "bad_identity",
        ),
        ({"token": "v_AAAAAAAAAAAAAAAAAAAAAA.forged"}, "bad_token"),
        ({"token": "not a token"}, "bad_token"),
    ],
)
async def test_a_wrong_hello_is_refused_and_closed(
    chat: RunningChat, fields: dict[str, object], code: str
) -> None:
    async with widget(chat) as socket:
        await say(socket, {"type": "hello", "token": None, "after": 0, **fields})
        error = await receive(socket)
        with pytest.raises(ConnectionClosed):
            await receive(socket)
    assert error["type"] == "error"
    assert error["code"] == code
    assert socket.close_code == 1008


async def test_a_token_of_another_secret_is_refused(chat: RunningChat) -> None:
    from switchboard_webchat.tokens import issue_token

    forged = issue_token(b"someone else's secret", "v_AAAAAAAAAAAAAAAAAAAAAA")
    async with widget(chat) as socket:
        await say(socket, {"type": "hello", "token": forged, "after": 0})
        error = await receive(socket)
    assert error["code"] == "bad_token"


async def test_a_page_of_another_origin_is_refused(chat: RunningChat) -> None:
    async with widget(chat, origin="https://evil.example") as socket:
        error = await receive(socket)
        with pytest.raises(ConnectionClosed):
            await receive(socket)
    assert error["code"] == "origin_not_allowed"
    assert socket.close_code == 1008


async def test_a_widget_of_another_site_is_refused(chat: RunningChat) -> None:
    async with widget(chat, query="?site=another-shop") as socket:
        error = await receive(socket)
        with pytest.raises(ConnectionClosed):
            await receive(socket)
    assert error["code"] == "unknown_site"
    assert socket.close_code == 1008


async def test_the_first_frame_must_be_hello(chat: RunningChat) -> None:
    async with widget(chat) as socket:
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Hi"})
        error = await receive(socket)
    assert error["code"] == "hello_required"


@pytest.mark.parametrize("chat_env", [{"WEBCHAT_HELLO_TIMEOUT_SECONDS": "0.5"}], indirect=True)
async def test_a_socket_that_never_says_hello_is_closed(chat: RunningChat) -> None:
    async with widget(chat) as socket:
        error = await receive(socket)
        with pytest.raises(ConnectionClosed):
            await receive(socket)
    assert error["code"] == "hello_required"
    assert socket.close_code == 1008


async def test_a_binary_frame_is_a_bad_frame_and_the_socket_stays(chat: RunningChat) -> None:
    async with widget(chat) as socket:
        await hello(socket)
        await socket.send(b"\x00\x01")
        frames = await sync(socket)
    assert [f["code"] for f in frames] == ["bad_frame"]


async def test_bad_frames_empty_and_too_long_messages_are_refused_and_nothing_published(
    chat: RunningChat, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        await hello(socket)
        await socket.send("not json")
        await say(socket, {"type": "send", "client_id": "bad id!", "text": "Hi"})
        await say(socket, {"type": "dance"})
        await say(socket, {"type": "send", "client_id": "c-1", "text": "  \n "})
        await say(socket, {"type": "send", "client_id": "c-2", "text": "x" * 10_001})
        await say(socket, {"type": "send", "client_id": "c-3", "text": "x" * 10_000})
        frames = await sync(socket)
    codes = [(f.get("code"), f.get("client_id")) for f in frames]
    assert codes == [
        ("bad_frame", None),
        ("bad_frame", None),
        ("bad_frame", None),
        ("empty", "c-1"),
        ("too_long", "c-2"),
        (None, "c-3"),  # the ack of the longest message allowed
    ]
    records = await probe.read_events(INBOUND, count=1, settle=1.0)
    assert [e.provider_message_id for _, e in records] == ["c-3"]  # type: ignore[attr-defined]


async def test_a_frame_over_the_size_limit_closes_the_socket(chat: RunningChat) -> None:
    async with widget(chat) as socket:
        await hello(socket)
        await say(socket, {"type": "send", "client_id": "c-1", "text": "x" * 70_000})
        with pytest.raises(ConnectionClosed):
            await receive(socket)
    assert socket.close_code == 1009


# Refills slower than any test runs: what is admitted depends on the burst alone.
SLOW = "0.001"


@pytest.mark.parametrize(
    "chat_env", [{"WEBCHAT_VISITOR_BURST": "3", "WEBCHAT_VISITOR_PER_SECOND": SLOW}], indirect=True
)
async def test_a_visitor_sending_too_fast_is_told_to_wait(chat: RunningChat) -> None:
    async with widget(chat) as socket:
        await hello(socket)
        for n in range(4):
            await say(socket, {"type": "send", "client_id": f"c-{n}", "text": f"line {n}"})
        frames = await sync(socket)
    assert [f["type"] for f in frames] == ["ack", "ack", "ack", "error"]
    assert frames[3]["code"] == "rate_limited"
    assert frames[3]["client_id"] == "c-3"
    assert frames[3]["retry_after"] > 0


@pytest.mark.parametrize(
    "chat_env",
    [{"WEBCHAT_VISITOR_BURST": "100", "WEBCHAT_IP_BURST": "3", "WEBCHAT_IP_PER_SECOND": SLOW}],
    indirect=True,
)
async def test_an_address_sending_too_fast_is_told_to_wait_whichever_visitor(
    chat: RunningChat,
) -> None:
    async with widget(chat) as first, widget(chat) as second:
        await hello(first)
        await hello(second)
        for n in range(2):
            await say(first, {"type": "send", "client_id": f"a-{n}", "text": "hi"})
        first_frames = await sync(first)
        for n in range(2):
            await say(second, {"type": "send", "client_id": f"b-{n}", "text": "hi"})
        second_frames = await sync(second)
    assert [f["type"] for f in first_frames] == ["ack", "ack"]
    assert [f["type"] for f in second_frames] == ["ack", "error"]
    assert second_frames[1]["code"] == "rate_limited"


@pytest.mark.parametrize("chat_env", [{"WEBCHAT_MAX_CONNECTIONS_PER_IP": "1"}], indirect=True)
async def test_an_address_holds_a_limited_number_of_sockets(chat: RunningChat) -> None:
    async with widget(chat) as first:
        await hello(first)
        async with widget(chat) as second:
            error = await receive(second)
    assert error["code"] == "too_many_connections"


async def test_the_ops_routes_and_the_widget_are_served(chat: RunningChat) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=chat.url) as http:
        widget_js = await http.get("/chat/widget.js")
        demo = await http.get("/chat/demo")
        ready = await http.get("/readyz")
        metrics = await http.get("/metrics")
    assert widget_js.status_code == 200
    assert widget_js.headers["content-type"].startswith("text/javascript")
    assert "switchboard-chat-log" in widget_js.text
    assert demo.status_code == 200
    assert '<script src="/chat/widget.js" data-site="shop"' in demo.text
    assert ready.json()["checks"] == {"kafka": "ok", "mongodb": "ok"}
    assert "switchboard_webchat_open_sockets" in metrics.text


@pytest.mark.parametrize(
    "fields",
    [
        {"token": "v_AAAAAAAAAAAAAAAAAAAAAA.\u00e9t\u00e9"},
        {"identity": {"email": "ana@example.com", "hash": "\u00e9" * 64}},
    ],
    ids=["token", "hash"],
)
async def test_a_hello_with_non_ascii_credentials_is_refused_not_crashed(
    chat: RunningChat, fields: dict[str, object]
) -> None:
    async with widget(chat) as socket:
        await say(socket, {"type": "hello", "token": None, "after": 0, **fields})
        error = await receive(socket)
        with pytest.raises(ConnectionClosed):
            await receive(socket)
    assert error["code"] in {"bad_token", "bad_identity"}
    assert socket.close_code == 1008


async def test_a_deeply_nested_frame_is_a_bad_frame_and_the_socket_stays(
    chat: RunningChat,
) -> None:
    async with widget(chat) as socket:
        await hello(socket)
        await socket.send("[" * 20_000 + "]" * 20_000)
        frames = await sync(socket)
    assert [f["code"] for f in frames] == ["bad_frame"]


async def test_a_deeply_nested_hello_is_told_to_say_hello(chat: RunningChat) -> None:
    async with widget(chat) as socket:
        await socket.send('{"type":"hello","x":' + "[" * 20_000 + "]" * 20_000 + "}")
        error = await receive(socket)
    assert error["code"] == "hello_required"


@pytest.mark.parametrize(
    "chat_env",
    [{"WEBCHAT_POLL_INTERVAL_SECONDS": "0.005", "WEBCHAT_VISITOR_BURST": "100"}],
    indirect=True,
)
async def test_a_socket_hears_its_own_message_once_as_its_ack(chat: RunningChat) -> None:
    # The replica's poll looks for new entries all the time; the one it finds between
    # storing a visitor's message and acknowledging it is that socket's own message.
    async with widget(chat) as socket:
        await hello(socket)
        for n in range(30):
            await say(socket, {"type": "send", "client_id": f"c-{n}", "text": f"line {n}"})
        frames = await sync(socket)
    assert [(f["type"], f["client_id"]) for f in frames] == [("ack", f"c-{n}") for n in range(30)]


@pytest.mark.parametrize(
    "chat_env",
    [{"WEBCHAT_ALLOWED_ORIGINS": "HTTPS://Shop.Example/ , https://other.example"}],
    indirect=True,
)
async def test_an_origin_listed_in_capitals_or_with_a_slash_is_the_browsers_origin(
    chat: RunningChat,
) -> None:
    async with widget(chat, origin="https://shop.example") as socket:
        welcome = await hello(socket)
    assert welcome["type"] == "welcome"
    async with widget(chat, origin="https://evil.example") as socket:
        error = await receive(socket)
    assert error["code"] == "origin_not_allowed"


async def test_sockets_sending_at_once_are_published_together_and_each_keeps_its_order(
    chat: RunningChat, probe: TopicProbe
) -> None:
    sockets, count = 8, 5
    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(widget(chat)) for _ in range(sockets)]
        visitors = [(await hello(socket))["visitor"] for socket in opened]
        for socket in opened:  # every frame at once, none waiting for its ack
            for n in range(count):
                await say(socket, {"type": "send", "client_id": f"c-{n}", "text": f"line {n}"})
        acks = [[await receive(socket) for _ in range(count)] for socket in opened]
        records = await probe.read_events(INBOUND, count=sockets * count, settle=1.0)
    for visitor, mine in zip(visitors, acks, strict=True):
        assert [a["client_id"] for a in mine] == [f"c-{n}" for n in range(count)]
        assert [a["seq"] for a in mine] == list(range(1, count + 1))
        assert [a["message_id"] for a in mine] == [
            message_id(SITE, visitor, f"c-{n}") for n in range(count)
        ]
    ids = {event.message_id for _, event in records if isinstance(event, MessageReceived)}
    assert len(ids) == len(records) == sockets * count
    publishes = chat.parts.registry.get_sample_value(
        "switchboard_publish_seconds_count", {"topic": INBOUND}
    )
    assert publishes is not None
    assert publishes < sockets * count  # batches, not a publish per message
