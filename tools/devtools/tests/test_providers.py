"""The local WhatsApp Cloud API, Messenger Send API, Telegram Bot API and X API v2 direct
messages answer as the real ones document."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from switchboard_devtools.providers import (
    X_MAX_TEXT,
    LocalMessenger,
    LocalTelegram,
    LocalWhatsApp,
    LocalX,
)
from switchboard_ingest_social.oauth1 import OAuth1Credentials

pytestmark = pytest.mark.unit

PHONE_NUMBER_ID = "106540352242922"
ACCESS_TOKEN = "token-1"  # noqa: S105 - a made-up token for a local server
CUSTOMER = "15551234567"
BOT_TOKEN = "7012345678:AAE-local-test-token"  # noqa: S105 - a made-up token
CHAT_ID = 123456789
PAGE_ID = "104857362951847"
PAGE_TOKEN = "page-token-1"  # noqa: S105 - a made-up token
OTHER_PAGE_ID = "178239465017263"
OTHER_PAGE_TOKEN = "page-token-2"  # noqa: S105 - a made-up token
PSID = "6543210987654321"
X_ACCOUNT = "4337869213"
X_TOKEN = "x-user-context-token-1"  # noqa: S105 - a made-up token
X_USER = "1456789012345678901"
OUTSIDE_WINDOW = {
    "message": "(#10) This message is sent outside of allowed window. Learn more about the new "
    "policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview",
    "type": "OAuthException",
    "code": 10,
    "error_subcode": 2018278,
}


@pytest.fixture(scope="module")
def whatsapp_server() -> Iterator[LocalWhatsApp]:
    with LocalWhatsApp.started(tokens={PHONE_NUMBER_ID: ACCESS_TOKEN}) as whatsapp:
        yield whatsapp


@pytest.fixture
def whatsapp(whatsapp_server: LocalWhatsApp) -> LocalWhatsApp:
    # One server for the module, reset per test.
    with whatsapp_server.lock:
        whatsapp_server.sent.clear()
        whatsapp_server.last_inbound.clear()
    whatsapp_server.throttle, whatsapp_server.retry_after = 0, 1
    return whatsapp_server


@pytest.fixture(scope="module")
def telegram_server() -> Iterator[LocalTelegram]:
    with LocalTelegram.started(tokens={BOT_TOKEN}) as telegram:
        yield telegram


@pytest.fixture
def telegram(telegram_server: LocalTelegram) -> LocalTelegram:
    with telegram_server.lock:
        telegram_server.sent.clear()
        telegram_server.blocked.clear()
    telegram_server.throttle, telegram_server.retry_after = 0, 1
    return telegram_server


@pytest.fixture(scope="module")
def messenger_server() -> Iterator[LocalMessenger]:
    tokens = {PAGE_ID: PAGE_TOKEN, OTHER_PAGE_ID: OTHER_PAGE_TOKEN}
    with LocalMessenger.started(tokens=tokens) as messenger:
        yield messenger


@pytest.fixture
def messenger(messenger_server: LocalMessenger) -> LocalMessenger:
    with messenger_server.lock:
        messenger_server.sent.clear()
        messenger_server.last_inbound.clear()
        messenger_server.unavailable.clear()
    messenger_server.throttle, messenger_server.retry_after = 0, 1
    return messenger_server


def send_whatsapp(
    whatsapp: LocalWhatsApp,
    text: str = "Hello, your ticket is open.",
    *,
    token: str | None = ACCESS_TOKEN,
    phone_number_id: str = PHONE_NUMBER_ID,
    **extra: Any,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "type": "text",
        "text": {"body": text, "preview_url": False},
        **extra,
    }
    return httpx.post(
        f"{whatsapp.url}/v21.0/{phone_number_id}/messages", json=body, headers=headers
    )


def send_telegram(
    telegram: LocalTelegram, text: str = "Hello", *, token: str = BOT_TOKEN, **extra: Any
) -> httpx.Response:
    body = {"chat_id": CHAT_ID, "text": text, **extra}
    return httpx.post(f"{telegram.url}/bot{token}/sendMessage", json=body)


def send_messenger(
    messenger: LocalMessenger,
    text: str = "Hello, your ticket is open.",
    *,
    token: str | None = PAGE_TOKEN,
    account: str = PAGE_ID,
    in_query: bool = False,
    **extra: Any,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None and not in_query else {}
    params = {"access_token": token} if token is not None and in_query else {}
    body = {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": text},
        **extra,
    }
    return httpx.post(
        f"{messenger.url}/v21.0/{account}/messages", json=body, headers=headers, params=params
    )


def graph_error(response: httpx.Response) -> dict[str, Any]:
    """The response's error without its (random) fbtrace_id."""
    error: dict[str, Any] = response.json()["error"]
    assert error.pop("fbtrace_id")
    return error


def assert_graph_error(response: httpx.Response, status: int, code: int, kind: str) -> None:
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, kind)
    assert error["fbtrace_id"]


# ---------------------------------------------------------------- WhatsApp


def test_whatsapp_send_within_the_window_is_accepted_and_recorded(
    whatsapp: LocalWhatsApp,
) -> None:
    whatsapp.customer_wrote(CUSTOMER)
    response = send_whatsapp(whatsapp, context={"message_id": "wamid.inbound"})
    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": CUSTOMER, "wa_id": CUSTOMER}]
    (message,) = body["messages"]
    assert message["id"].startswith("wamid.")
    (sent,) = whatsapp.sent
    assert (sent.phone_number_id, sent.to, sent.text) == (
        PHONE_NUMBER_ID,
        CUSTOMER,
        "Hello, your ticket is open.",
    )
    assert (sent.wamid, sent.context, sent.error) == (message["id"], "wamid.inbound", None)
    webhook = json.loads(whatsapp.status_webhook(sent, "delivered"))
    (status,) = webhook["entry"][0]["changes"][0]["value"]["statuses"]
    assert (status["id"], status["status"], status["recipient_id"]) == (
        sent.wamid,
        "delivered",
        CUSTOMER,
    )
    assert "errors" not in status
    with pytest.raises(ValueError, match="did not fail"):
        whatsapp.failed_webhook(sent)


@pytest.mark.parametrize(
    ("token", "status", "code", "kind"),
    [
        (None, 401, 190, "OAuthException"),
        ("wrong-token", 401, 190, "OAuthException"),
    ],
)
def test_whatsapp_refuses_a_missing_or_wrong_token(
    whatsapp: LocalWhatsApp, token: str | None, status: int, code: int, kind: str
) -> None:
    response = send_whatsapp(whatsapp, token=token)
    assert_graph_error(response, status, code, kind)
    assert response.json()["error"]["message"] == (
        "Invalid OAuth access token - Cannot parse access token"
    )
    assert whatsapp.sent == []


def test_whatsapp_refuses_an_unknown_phone_number_id(whatsapp: LocalWhatsApp) -> None:
    response = send_whatsapp(whatsapp, phone_number_id="999")
    assert_graph_error(response, 400, 100, "GraphMethodException")
    assert "Object with ID '999' does not exist" in response.json()["error"]["message"]


def test_whatsapp_refuses_too_long_and_missing_parameters(whatsapp: LocalWhatsApp) -> None:
    whatsapp.customer_wrote(CUSTOMER)
    assert send_whatsapp(whatsapp, "x" * 4096).status_code == 200
    response = send_whatsapp(whatsapp, "x" * 4097)
    assert_graph_error(response, 400, 100, "OAuthException")
    error = response.json()["error"]
    assert error["message"] == "(#100) Invalid parameter"
    assert "too long" in error["error_data"]["details"]
    response = send_whatsapp(whatsapp, messaging_product=None)
    assert_graph_error(response, 400, 100, "OAuthException")
    assert "messaging_product" in response.json()["error"]["error_data"]["details"]
    assert len(whatsapp.sent) == 1


def test_whatsapp_rate_limit_answers_429_until_the_throttle_is_used_up(
    whatsapp: LocalWhatsApp,
) -> None:
    whatsapp.customer_wrote(CUSTOMER)
    whatsapp.throttle, whatsapp.retry_after = 2, 3
    for _ in range(2):
        response = send_whatsapp(whatsapp)
        assert_graph_error(response, 429, 130429, "OAuthException")
        assert response.headers["Retry-After"] == "3"
        error = response.json()["error"]
        assert error["message"] == "(#130429) Rate limit hit"
        assert error["error_data"] == {
            "messaging_product": "whatsapp",
            "details": "Cloud API message throughput has been reached.",
        }
    assert send_whatsapp(whatsapp).status_code == 200
    assert whatsapp.throttle == 0
    assert len(whatsapp.sent) == 1


@pytest.mark.parametrize("last_inbound", [None, 25 * 3600])
def test_whatsapp_outside_the_window_is_accepted_then_fails_in_the_status_webhook(
    whatsapp: LocalWhatsApp, last_inbound: float | None
) -> None:
    if last_inbound is not None:
        whatsapp.customer_wrote(CUSTOMER, at=time.time() - last_inbound)
    response = send_whatsapp(whatsapp)
    assert response.status_code == 200
    (sent,) = whatsapp.sent
    assert sent.wamid == response.json()["messages"][0]["id"]
    assert sent.error is not None
    assert sent.error["code"] == 131047
    webhook = json.loads(whatsapp.failed_webhook(sent))
    assert webhook["object"] == "whatsapp_business_account"
    (entry,) = webhook["entry"]
    assert entry["id"] == whatsapp.business_account_id
    (change,) = entry["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {
        "display_phone_number": "15550783881",
        "phone_number_id": PHONE_NUMBER_ID,
    }
    (status,) = value["statuses"]
    assert (status["id"], status["status"], status["recipient_id"]) == (
        sent.wamid,
        "failed",
        CUSTOMER,
    )
    assert status["timestamp"].isdigit()
    assert status["errors"] == [
        {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {
                "details": "Message failed to send because more than 24 hours have passed "
                "since the customer last replied to this number."
            },
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ]


# ---------------------------------------------------------------- Messenger


def test_messenger_send_is_answered_and_recorded(messenger: LocalMessenger) -> None:
    messenger.customer_wrote(PSID)
    by_header = send_messenger(messenger, "First")
    by_query = send_messenger(messenger, "Second", in_query=True)
    as_me = send_messenger(messenger, "Third", token=OTHER_PAGE_TOKEN, account="me")
    form = httpx.post(
        f"{messenger.url}/v21.0/{PAGE_ID}/messages",
        params={"access_token": PAGE_TOKEN},
        data={
            "recipient": json.dumps({"id": PSID}),
            "messaging_type": "UPDATE",
            "message": json.dumps({"text": "Fourth"}),
        },
    )
    responses = [by_header, by_query, as_me, form]
    assert [r.status_code for r in responses] == [200] * 4
    bodies = [r.json() for r in responses]
    assert all(set(b) == {"recipient_id", "message_id"} for b in bodies)
    assert all(b["recipient_id"] == PSID and b["message_id"].startswith("m_") for b in bodies)
    assert len({b["message_id"] for b in bodies}) == 4
    assert [(m.account, m.recipient_id, m.text, m.messaging_type) for m in messenger.sent] == [
        (PAGE_ID, PSID, "First", "RESPONSE"),
        (PAGE_ID, PSID, "Second", "RESPONSE"),
        (OTHER_PAGE_ID, PSID, "Third", "RESPONSE"),
        (PAGE_ID, PSID, "Fourth", "UPDATE"),
    ]
    assert [m.message_id for m in messenger.sent] == [b["message_id"] for b in bodies]
    assert messenger.to(PSID) == messenger.sent
    assert messenger.to("someone-else") == []


def test_messenger_receipts_are_built_as_meta_sends_them(messenger: LocalMessenger) -> None:
    messenger.customer_wrote(PSID)
    before = int(time.time() * 1000)
    assert send_messenger(messenger).status_code == 200
    [sent] = messenger.sent
    assert before <= sent.timestamp <= int(time.time() * 1000)

    def event(body: bytes, obj: str) -> dict[str, Any]:
        payload = json.loads(body)
        assert payload["object"] == obj
        [entry] = payload["entry"]
        [receipt] = entry["messaging"]
        assert entry["id"] == receipt["recipient"]["id"] == PAGE_ID
        assert receipt["sender"]["id"] == PSID
        assert receipt["timestamp"] >= sent.timestamp
        found: dict[str, Any] = receipt
        return found

    delivered = event(messenger.receipt_webhook(sent, "delivered"), "page")
    assert delivered["delivery"] == {"mids": [sent.message_id], "watermark": sent.timestamp}
    read = event(messenger.receipt_webhook(sent, "read"), "page")
    assert read["read"] == {"watermark": sent.timestamp}
    seen = event(messenger.receipt_webhook(sent, "read", instagram=True), "instagram")
    assert seen["read"] == {"mid": sent.message_id}
    with pytest.raises(ValueError, match="Instagram"):
        messenger.receipt_webhook(sent, "delivered", instagram=True)


@pytest.mark.parametrize("in_query", [False, True])
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_messenger_refuses_a_missing_or_wrong_token(
    messenger: LocalMessenger, token: str | None, in_query: bool
) -> None:
    messenger.customer_wrote(PSID)
    response = send_messenger(messenger, token=token, in_query=in_query)
    assert response.status_code == 401
    assert graph_error(response) == {
        "message": "Invalid OAuth access token - Cannot parse access token",
        "type": "OAuthException",
        "code": 190,
    }
    assert messenger.sent == []


def test_messenger_refuses_a_token_for_another_page(messenger: LocalMessenger) -> None:
    messenger.customer_wrote(PSID)
    response = send_messenger(messenger, token=OTHER_PAGE_TOKEN)
    assert_graph_error(response, 400, 100, "GraphMethodException")
    error = response.json()["error"]
    assert error["error_subcode"] == 33
    assert error["message"].startswith(
        f"Unsupported post request. Object with ID '{PAGE_ID}' does not exist"
    )
    assert messenger.sent == []


def test_messenger_refuses_too_long_text(messenger: LocalMessenger) -> None:
    messenger.customer_wrote(PSID)
    assert send_messenger(messenger, "x" * 2000).status_code == 200
    response = send_messenger(messenger, "x" * 2001)
    assert response.status_code == 400
    assert graph_error(response) == {
        "message": "(#100) Length of param message[text] must be less than or equal to 2000",
        "type": "OAuthException",
        "code": 100,
    }
    assert len(messenger.sent) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipient": None}, "(#100) The parameter recipient is required"),
        ({"recipient": {}}, '(#100) Param recipient[id] must be a valid ID string (e.g., "123")'),
        ({"message": None}, "(#100) param message must be non-empty."),
        ({"message": {"text": " "}}, "(#100) param message[text] must be non-empty."),
        (
            {"messaging_type": "PROMOTIONAL"},
            "(#100) Param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}",
        ),
        (
            {"messaging_type": "MESSAGE_TAG"},
            "(#100) Param tag must be one of {CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE, "
            "ACCOUNT_UPDATE, HUMAN_AGENT}",
        ),
    ],
)
def test_messenger_refuses_missing_parameters(
    messenger: LocalMessenger, change: dict[str, Any], message: str
) -> None:
    messenger.customer_wrote(PSID)
    response = send_messenger(messenger, **change)
    assert response.status_code == 400
    assert graph_error(response) == {"message": message, "type": "OAuthException", "code": 100}
    assert messenger.sent == []


@pytest.mark.parametrize("last_inbound", [None, 25 * 3600])
@pytest.mark.parametrize("messaging_type", ["RESPONSE", None, "UPDATE"])
def test_messenger_outside_the_window_is_refused(
    messenger: LocalMessenger, last_inbound: float | None, messaging_type: str | None
) -> None:
    if last_inbound is not None:
        messenger.customer_wrote(PSID, at=time.time() - last_inbound)
    response = send_messenger(messenger, messaging_type=messaging_type)
    assert response.status_code == 400
    assert graph_error(response) == OUTSIDE_WINDOW
    assert messenger.sent == []


def test_messenger_tags_may_be_sent_outside_the_window(messenger: LocalMessenger) -> None:
    messenger.customer_wrote(PSID, at=time.time() - 6 * 24 * 3600)
    for tag in ("ACCOUNT_UPDATE", "HUMAN_AGENT"):
        response = send_messenger(messenger, messaging_type="MESSAGE_TAG", tag=tag)
        assert response.status_code == 200
    assert [(m.messaging_type, m.tag) for m in messenger.sent] == [
        ("MESSAGE_TAG", "ACCOUNT_UPDATE"),
        ("MESSAGE_TAG", "HUMAN_AGENT"),
    ]
    # HUMAN_AGENT only within seven days of the person's last message.
    messenger.customer_wrote(PSID, at=time.time() - 8 * 24 * 3600)
    response = send_messenger(messenger, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
    assert response.status_code == 400
    assert graph_error(response) == OUTSIDE_WINDOW


def test_messenger_unavailable_person_is_refused(messenger: LocalMessenger) -> None:
    messenger.customer_wrote(PSID)
    messenger.unavailable.add(PSID)
    response = send_messenger(messenger)
    assert response.status_code == 400
    assert graph_error(response) == {
        "message": "(#551) This person isn't available right now.",
        "type": "OAuthException",
        "code": 551,
        "error_subcode": 1545041,
    }
    assert messenger.sent == []


def test_messenger_rate_limit_answers_429_until_the_throttle_is_used_up(
    messenger: LocalMessenger,
) -> None:
    messenger.customer_wrote(PSID)
    messenger.throttle, messenger.retry_after = 2, 7
    for _ in range(2):
        response = send_messenger(messenger)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert graph_error(response) == {
            "message": "(#613) Calls to this api have exceeded the rate limit.",
            "type": "OAuthException",
            "code": 613,
        }
    assert send_messenger(messenger).status_code == 200
    assert messenger.throttle == 0
    assert len(messenger.sent) == 1


# ---------------------------------------------------------------- Telegram


def test_telegram_send_is_answered_and_recorded(telegram: LocalTelegram) -> None:
    first = send_telegram(telegram, "Hello", reply_parameters={"message_id": 41})
    second = send_telegram(telegram, "Again")
    assert first.status_code == second.status_code == 200
    body = first.json()
    assert body["ok"] is True
    result = body["result"]
    assert result["chat"] == {"id": CHAT_ID, "type": "private"}
    assert result["text"] == "Hello"
    assert isinstance(result["date"], int)
    assert second.json()["result"]["message_id"] > result["message_id"]
    assert [(m.bot_id, m.chat_id, m.text, m.reply_to) for m in telegram.sent] == [
        ("7012345678", str(CHAT_ID), "Hello", 41),
        ("7012345678", str(CHAT_ID), "Again", None),
    ]
    assert telegram.sent[0].message_id == result["message_id"]


def test_telegram_refuses_an_unknown_token(telegram: LocalTelegram) -> None:
    response = send_telegram(telegram, token="7012345678:wrong")  # noqa: S106 - made up
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ({"chat_id": CHAT_ID, "text": "x" * 4097}, "Bad Request: message is too long"),
        ({"chat_id": CHAT_ID, "text": ""}, "Bad Request: message text is empty"),
        ({"text": "Hello"}, "Bad Request: chat not found"),
    ],
)
def test_telegram_refuses_bad_requests(
    telegram: LocalTelegram, body: dict[str, Any], description: str
) -> None:
    response = httpx.post(f"{telegram.url}/bot{BOT_TOKEN}/sendMessage", json=body)
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error_code": 400, "description": description}
    assert telegram.sent == []


def test_telegram_blocked_chat_is_forbidden(telegram: LocalTelegram) -> None:
    telegram.blocked.add(str(CHAT_ID))
    response = send_telegram(telegram)
    assert response.status_code == 403
    assert response.json() == {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    assert telegram.sent == []


def test_telegram_rate_limit_answers_429_until_the_throttle_is_used_up(
    telegram: LocalTelegram,
) -> None:
    telegram.throttle, telegram.retry_after = 1, 5
    response = send_telegram(telegram)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 5",
        "parameters": {"retry_after": 5},
    }
    assert send_telegram(telegram).status_code == 200
    assert len(telegram.sent) == 1


# ---------------------------------------------------------------- X


@pytest.fixture(scope="module")
def x_server() -> Iterator[LocalX]:
    with LocalX.started(tokens={X_ACCOUNT: X_TOKEN}) as x:
        yield x


@pytest.fixture
def x(x_server: LocalX) -> LocalX:
    with x_server.lock:
        x_server.sent.clear()
        x_server.closed.clear()
    x_server.throttle, x_server.retry_after = 0, 1
    return x_server


def send_x(
    x: LocalX, body: Any = None, *, token: str | None = X_TOKEN, participant: str = X_USER
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(
        f"{x.url}/2/dm_conversations/with/{participant}/messages",
        json={"text": "Your refund is on its way."} if body is None else body,
        headers=headers,
    )


def test_x_direct_message_is_created_and_recorded(x: LocalX) -> None:
    first, second = send_x(x), send_x(x, {"text": "Tracking: 4411."})
    assert first.status_code == second.status_code == 201
    data = first.json()["data"]
    assert data["dm_conversation_id"] == f"{X_ACCOUNT}-{X_USER}"  # lower id first
    assert data["dm_event_id"].isdigit()
    assert int(second.json()["data"]["dm_event_id"]) > int(data["dm_event_id"])
    assert [(m.sender_id, m.participant_id, m.text) for m in x.to(X_USER)] == [
        (X_ACCOUNT, X_USER, "Your refund is on its way."),
        (X_ACCOUNT, X_USER, "Tracking: 4411."),
    ]
    assert x.sent[0].dm_event_id == data["dm_event_id"]


def test_x_takes_an_oauth1_signed_request_and_refuses_a_wrongly_signed_one() -> None:
    keys = ("app-key", "app-secret")
    with LocalX.started(tokens={X_ACCOUNT: "tok:sec"}, consumer=keys) as x:
        url = f"{x.url}/2/dm_conversations/with/{X_USER}/messages"

        def post(secret: str) -> httpx.Response:
            credentials = OAuth1Credentials(*keys, "tok", secret)
            header = credentials.authorization("POST", url, nonce="n1", timestamp=1)
            return httpx.post(url, json={"text": "Hi"}, headers={"Authorization": header})

        assert post("sec").status_code == 201
        assert post("not-the-secret").status_code == 401
        assert [m.sender_id for m in x.to(X_USER)] == [X_ACCOUNT]


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_x_refuses_a_missing_or_wrong_token(x: LocalX, token: str | None) -> None:
    response = send_x(x, token=token)
    assert response.status_code == 401
    assert response.json() == {
        "title": "Unauthorized",
        "type": "about:blank",
        "status": 401,
        "detail": "Unauthorized",
    }
    assert x.sent == []


@pytest.mark.parametrize(
    ("body", "participant", "parameter", "message"),
    [
        ({"text": "x" * (X_MAX_TEXT + 1)}, X_USER, "text", "text must be at most 10000 characters"),
        ({"text": "  "}, X_USER, "text", "text or attachments must be provided"),
        ({}, X_USER, "text", "text or attachments must be provided"),
        (
            {"text": "Hi"},
            "jack",
            "participant_id",
            "The `participant_id` query parameter value [jack] is not valid",
        ),
    ],
)
def test_x_refuses_invalid_requests_naming_the_parameter(
    x: LocalX, body: dict[str, Any], participant: str, parameter: str, message: str
) -> None:
    response = send_x(x, body, participant=participant)
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"] == "https://api.twitter.com/2/problems/invalid-request"
    assert problem["title"] == "Invalid Request"
    [error] = problem["errors"]
    assert (list(error["parameters"]), error["message"]) == ([parameter], message)
    assert x.sent == []


def test_x_takes_the_longest_text(x: LocalX) -> None:
    assert send_x(x, {"text": "x" * X_MAX_TEXT}).status_code == 201


def test_x_user_who_takes_no_direct_messages_is_forbidden(x: LocalX) -> None:
    x.closed.add(X_USER)
    response = send_x(x)
    assert response.status_code == 403
    assert response.json() == {
        "title": "Forbidden",
        "type": "about:blank",
        "status": 403,
        "detail": "You cannot send messages to this user.",
    }
    assert x.sent == []


def test_x_rate_limit_answers_429_with_the_reset_until_the_throttle_is_used_up(
    x: LocalX,
) -> None:
    x.throttle, x.retry_after = 2, 9
    for _ in range(2):
        before = int(time.time())
        response = send_x(x)
        assert response.status_code == 429
        assert response.json()["status"] == 429
        assert response.headers["Retry-After"] == "9"
        assert response.headers["x-rate-limit-remaining"] == "0"
        reset = int(response.headers["x-rate-limit-reset"])
        assert before + 9 <= reset <= int(time.time()) + 9
    assert send_x(x).status_code == 201
    assert x.throttle == 0
    assert len(x.sent) == 1
