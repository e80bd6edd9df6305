"""XSender: what it asks of the X API v2, and how it reads each answer (no network:
answers are handed back by an ``httpx.MockTransport`` in X's documented shapes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from switchboard_common.contract import Channel, ReplyDelivery
from switchboard_common.outbound import Accepted, Outcome, Refused, Unavailable
from switchboard_ingest_social.oauth1 import OAuth1Credentials, header_params, signature
from switchboard_ingest_social.replies import SocialSenders, XSender

pytestmark = pytest.mark.unit

ACCOUNT = "4337869213"  # the business account the customer wrote to
CUSTOMER = "1456789012345678901"
TOKEN = "x-user-context-token"  # noqa: S105 - a made-up token
NOW = 1_780_000_000.0


def order(text: str = "Your refund is on its way.", account: str | None = ACCOUNT) -> ReplyDelivery:
    at = datetime(2026, 6, 8, 21, 3, tzinfo=UTC)
    return ReplyDelivery(
        reply_id="rep-1",
        conversation_id="c-1",
        customer_id="cust-1",
        agent_id="agent-7",
        channel=Channel.X,
        recipient=CUSTOMER,
        account=account,
        text=text,
        requested_at=at,
        ordered_at=at,
    )


Handler = Callable[[httpx.Request], httpx.Response]


async def send(handler: Handler, *, tokens: dict[str, str] | None = None) -> Outcome:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = XSender(
            base_url="https://api.x.test/",
            tokens={ACCOUNT: TOKEN} if tokens is None else tokens,
            default_token=None,
            client=client,
            clock=lambda: NOW,
        )
        return await sender.send(order())


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


async def test_a_direct_message_is_posted_to_the_participant_and_accepted_by_event_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = {"dm_conversation_id": f"{ACCOUNT}-{CUSTOMER}", "dm_event_id": "1580705921830768647"}
        return httpx.Response(201, json={"data": data})

    before = datetime.now(UTC)
    sent = await send(handler)
    assert isinstance(sent, Accepted)
    assert sent.provider_message_id == "1580705921830768647"
    assert sent.requested_at is not None
    assert before <= sent.requested_at <= datetime.now(UTC)  # when the request left
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == (f"https://api.x.test/2/dm_conversations/with/{CUSTOMER}/messages")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {"text": "Your refund is on its way."}


async def test_an_account_without_a_token_is_refused_without_a_request() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent without a token")

    outcome = await send(handler, tokens={"999": "other-token"})
    assert outcome == Refused("no_credentials", "no X access token for this account")


async def test_the_default_token_serves_accounts_not_listed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(201, json={"data": {"dm_event_id": "17"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = XSender(base_url="https://api.x.test", tokens={}, default_token="d", client=client)  # noqa: S106
        sent = await sender.send(order())
        assert isinstance(sent, Accepted)
        assert sent.provider_message_id == "17"
    assert seen == ["Bearer d"]


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    """An X API v2 error as problem details."""
    return {"title": title, "type": "about:blank", "status": status, "detail": detail}


TOO_MANY = problem(429, "Too Many Requests", "Too Many Requests")


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "7", "x-rate-limit-reset": str(int(NOW) + 900)}, 7.0),
        ({"x-rate-limit-reset": str(int(NOW) + 42), "x-rate-limit-remaining": "0"}, 42.0),
        ({"x-rate-limit-reset": str(int(NOW) - 5)}, 0.0),  # already past: no negative wait
        ({}, None),
    ],
)
async def test_a_rate_limit_is_waited_out_for_as_long_as_x_says(
    headers: dict[str, str], wait: float | None
) -> None:
    outcome = await send(answer(429, TOO_MANY, headers))
    assert outcome == Unavailable("HTTP 429", wait)


async def test_server_errors_and_lost_connections_are_for_later() -> None:
    # X sends its rate-limit headers with every answer: an outage is no used-up window.
    reset = {"x-rate-limit-reset": str(int(NOW) + 900), "x-rate-limit-remaining": "180"}
    outage = answer(503, {"title": "Service Unavailable"}, reset)
    assert await send(outage) == Unavailable("HTTP 503")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    outcome = await send(refused)
    assert isinstance(outcome, Unavailable)
    assert outcome.reason.startswith("ConnectError")


@pytest.mark.parametrize(
    ("status", "body", "refused"),
    [
        (
            403,
            problem(403, "Forbidden", "You cannot send messages to this user."),
            Refused("x_403", "You cannot send messages to this user."),
        ),
        (
            401,
            problem(401, "Unauthorized", "Unauthorized"),
            Refused("x_401", "Unauthorized"),
        ),
        (
            400,
            {
                "errors": [{"parameters": {"text": ["x" * 3]}, "message": "text is too long"}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request",
            },
            Refused(
                "x_400", "One or more parameters to your request was invalid. (text is too long)"
            ),
        ),
        (
            403,
            {"errors": [{"code": 349, "message": "You cannot send messages to this user."}]},
            Refused("x_349", "You cannot send messages to this user."),
        ),
        (404, "not json at all", Refused("x_404", "HTTP 404")),
    ],
)
async def test_other_client_errors_are_refused_with_xs_code_and_text(
    status: int, body: Any, refused: Refused
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    assert await send(handler) == refused


async def test_a_success_without_an_event_id_is_not_taken_for_a_send() -> None:
    outcome = await send(answer(201, {"data": {}}))
    assert outcome == Refused("x_201", "HTTP 201")


#: X's documented OAuth 1.0a example ("Creating a signature"): its inputs and signature.
DOCUMENTED = {
    "consumer_key": "xvz1evFS4wEEPTGEFPHBog",
    "consumer_secret": "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
    "token": "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
    "token_secret": "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
}


def test_oauth1_signs_xs_documented_example() -> None:
    header = OAuth1Credentials(**DOCUMENTED).authorization(
        "POST",
        "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
        nonce="kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
        timestamp=1318622958,
        form={"status": "Hello Ladies + Gentlemen, a signed OAuth request!"},
    )
    params = header_params(header)
    assert params["oauth_signature"] == "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
    assert params["oauth_token"] == DOCUMENTED["token"]
    assert header.startswith('OAuth oauth_consumer_key="xvz1evFS4wEEPTGEFPHBog", ')


async def test_an_access_token_with_its_secret_signs_with_oauth1_and_needs_the_app_keys() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(201, json={"data": {"dm_event_id": "18"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        keys = ("app-key", "app-secret")
        signing = XSender(
            "https://api.x.test", {ACCOUNT: "tok:sec"}, None, client, lambda: NOW, keys
        )
        assert isinstance(await signing.send(order()), Accepted)
        unsigned = XSender("https://api.x.test", {ACCOUNT: "tok:sec"}, None, client)
        assert await unsigned.send(order()) == Refused(
            "no_credentials", "OAuth 1.0a credentials need X_CONSUMER_KEY"
        )
    [header] = seen
    params = header_params(header)
    assert (params["oauth_token"], params["oauth_consumer_key"]) == ("tok", "app-key")
    assert params["oauth_timestamp"] == str(int(NOW))
    url = f"https://api.x.test/2/dm_conversations/with/{CUSTOMER}/messages"
    signed = {k: v for k, v in params.items() if k != "oauth_signature"}
    assert params["oauth_signature"] == signature("POST", url, signed, "app-secret", "sec")


def test_x_orders_go_to_the_x_sender() -> None:
    client = httpx.AsyncClient()
    sender = XSender(base_url="https://api.x.test", tokens={}, default_token="t", client=client)  # noqa: S106
    assert SocialSenders(x=sender).channels == frozenset({Channel.X})
    assert SocialSenders().channels == frozenset()
