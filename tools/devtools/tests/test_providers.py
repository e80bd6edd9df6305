"""The local WhatsApp Cloud API and Telegram Bot API answer as the real ones document."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from switchboard_devtools.providers import LocalTelegram, LocalWhatsApp

pytestmark = pytest.mark.unit

PHONE_NUMBER_ID = "106540352242922"
ACCESS_TOKEN = "token-1"  # noqa: S105 - a made-up token for a local server
CUSTOMER = "15551234567"
BOT_TOKEN = "7012345678:AAE-local-test-token"  # noqa: S105 - a made-up token
CHAT_ID = 123456789


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
