"""Fixtures of webchat's tests: the service on real Kafka and the real database, and a
widget's side of the socket (the ``websockets`` client)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from switchboard_devkit.running.inprocess import free_port, running
from switchboard_webchat.app import Webchat, build
from switchboard_webchat.settings import WebchatSettings

ORIGIN = "https://shop.example"
IDENTITY_SECRET = "test-identity-secret"  # noqa: S105 - a test's own secret
TOKEN_SECRET = "test-token-secret"  # noqa: S105 - a test's own secret
SITE = "shop"


def user_hash(email: str, secret: str = IDENTITY_SECRET) -> str:
    """What the shop's server computes for a signed-in customer."""
    return hmac.new(secret.encode(), email.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class RunningChat:
    url: str
    parts: Webchat

    @property
    def socket_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/chat/socket"


@pytest.fixture
def chat_env(request: pytest.FixtureRequest, service_env: dict[str, str]) -> dict[str, str]:
    """Environment of a webchat under test (this test's topics and database).

    A test changes it with ``@pytest.mark.parametrize("chat_env", [{NAME: value}],
    indirect=True)``.
    """
    env = {
        **service_env,
        "WEBCHAT_ALLOWED_ORIGINS": ORIGIN,
        "WEBCHAT_SITE_ID": SITE,
        "WEBCHAT_IDENTITY_SECRET": IDENTITY_SECRET,
        "WEBCHAT_TOKEN_SECRET": TOKEN_SECRET,
        "WEBCHAT_POLL_INTERVAL_SECONDS": "0.2",
        "WEBCHAT_OUTBOUND_RETRY_SECONDS": "0.1",
    }
    env.update(getattr(request, "param", {}))
    return env


@contextlib.asynccontextmanager
async def start_chat(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, port: int | None = None
) -> AsyncIterator[RunningChat]:
    """A webchat replica on a port of its own (its demo page is an allowed origin);
    ``port`` to start one again where a page already is."""
    port = port or free_port()
    origins = f"{env['WEBCHAT_ALLOWED_ORIGINS']},http://127.0.0.1:{port}"
    own = {"WEBCHAT_HTTP_PORT": str(port), "WEBCHAT_ALLOWED_ORIGINS": origins}
    for name, value in {**env, **own}.items():
        monkeypatch.setenv(name, value)
    runtime, parts = build(WebchatSettings.load())
    async with running(runtime) as url:
        yield RunningChat(url, parts)


@pytest.fixture
async def chat(
    chat_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningChat]:
    """webchat started in-process on real Kafka and the real database."""
    async with start_chat(chat_env, monkeypatch) as running_chat:
        yield running_chat


@contextlib.asynccontextmanager
async def widget(
    chat: RunningChat, origin: str = ORIGIN, query: str = ""
) -> AsyncIterator[ClientConnection]:
    """A socket as a page of ``origin`` opens it."""
    async with connect(chat.socket_url + query, origin=Origin(origin), open_timeout=10) as socket:
        yield socket


async def receive(socket: ClientConnection, timeout: float = 20.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout))
    return frame


async def say(socket: ClientConnection, frame: dict[str, Any]) -> None:
    await socket.send(json.dumps(frame))


async def hello(socket: ClientConnection, **fields: Any) -> dict[str, Any]:
    """Say hello; the welcome frame."""
    await say(socket, {"type": "hello", "token": None, "after": 0, **fields})
    welcome = await receive(socket)
    assert welcome["type"] == "welcome", welcome
    return welcome


async def receive_until(
    socket: ClientConnection, wanted: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first frame ``wanted`` accepts, and every frame before it."""
    before: list[dict[str, Any]] = []
    while not wanted(frame := await receive(socket)):
        before.append(frame)
    return frame, before


async def sync(socket: ClientConnection) -> list[dict[str, Any]]:
    """Every frame the server queued before answering a ping."""
    await say(socket, {"type": "ping"})
    _, before = await receive_until(socket, lambda f: f["type"] == "pong")
    return before
