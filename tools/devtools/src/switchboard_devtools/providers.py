"""Local stand-ins for the send APIs of the messaging providers replies go out through, which
cannot be reached from here: the WhatsApp Cloud API (Meta Graph API, ``POST
/{version}/{phone_number_id}/messages``), the Messenger Platform Send API, which Instagram
messaging uses too (Meta Graph API, ``POST /{version}/{page_id}/messages`` or ``POST
/{version}/me/messages``), the Telegram Bot API (``POST /bot<token>/sendMessage``) and the
X API v2's direct messages (``POST /2/dm_conversations/with/{participant_id}/messages``). They
answer in the providers' documented formats, errors included: a wrong token, a bad or too long
message, rate limiting while ``throttle`` is above zero and, for Telegram, a user who blocked
the bot, for Messenger, a person who is not available and, for X, a user who does not take
direct messages from the account. WhatsApp's 24-hour customer-service
window is reported as the Cloud API does: the send is accepted and the failure comes later in a
status webhook, which ``failed_webhook`` builds. Messenger's 24-hour standard messaging window
is enforced synchronously, as the Send API does: the send is refused with error 10.

    with LocalWhatsApp.started(tokens={"106540352242922": "token-1"}) as whatsapp:
        ...  # META_GRAPH_API_URL=whatsapp.url
        whatsapp.customer_wrote("15551234567")
        whatsapp.sent[-1].wamid
    with LocalTelegram.started(tokens={"7012345678:AAE..."}) as telegram:
        ...  # TELEGRAM_API_URL=telegram.url
        telegram.blocked.add("123456789")
    with LocalMessenger.started(tokens={"104857362951847": "page-token"}) as messenger:
        ...  # META_GRAPH_API_URL=messenger.url
        messenger.customer_wrote("6543210987654321")
        messenger.sent[-1].message_id
    with LocalX.started(tokens={"4337869213": "user-context-token"}) as x:
        ...  # X_API_URL=x.url
        x.closed.add("1456789012345678901")
        x.sent[-1].dm_event_id
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard_common.http import http_server
from switchboard_devkit.running.inprocess import free_port
from switchboard_ingest_social.oauth1 import header_params, signature

#: Longest text WhatsApp and Telegram take in one message.
MAX_TEXT = 4096
#: Longest text the Messenger Send API takes in one message.
MESSENGER_MAX_TEXT = 2000
#: How long after the customer's last message a free-form WhatsApp or Messenger reply may be
#: sent (Messenger's standard messaging window).
SERVICE_WINDOW = 24 * 3600.0
#: How long after the person's last message Messenger takes a ``HUMAN_AGENT``-tagged reply.
HUMAN_AGENT_WINDOW = 7 * 24 * 3600.0

GRAPH_VERSION = re.compile(r"v\d+\.\d+")
#: What the Cloud API accepts as ``to``: a phone number, possibly formatted.
WHATSAPP_TO = re.compile(r"\+?[\d\s().-]*\d[\d\s().-]*")
WHATSAPP_STATUSES = ("sent", "delivered", "read", "failed")
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG")
MESSAGE_TAGS = ("CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "HUMAN_AGENT")
ERROR_CODES_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
REENGAGEMENT_DETAILS = (
    "Message failed to send because more than 24 hours have passed since the customer last "
    "replied to this number."
)


def _reengagement_error() -> dict[str, Any]:
    """Error 131047 as a status webhook reports it."""
    return {
        "code": 131047,
        "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": {"details": REENGAGEMENT_DETAILS},
        "href": ERROR_CODES_HREF,
    }


def _fbtrace_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")[:22]


def _wamid() -> str:
    # Real ids are standard base64 of an opaque binary key; 30 bytes needs no padding.
    return "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()


def _graph_error(status: int, error: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": {**error, "fbtrace_id": _fbtrace_id()}}, status_code=status)


def _invalid_token() -> JSONResponse:
    return _graph_error(
        401,
        {
            "message": "Invalid OAuth access token - Cannot parse access token",
            "type": "OAuthException",
            "code": 190,
        },
    )


def _unsupported_post(object_id: str) -> JSONResponse:
    """What the Graph API answers a token that cannot see ``object_id``."""
    return _graph_error(
        400,
        {
            "message": (
                f"Unsupported post request. Object with ID '{object_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this "
                "operation. Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api"
            ),
            "type": "GraphMethodException",
            "code": 100,
            "error_subcode": 33,
        },
    )


def _unknown_path(object_id: str) -> JSONResponse:
    return _graph_error(
        400,
        {
            "message": f"Unknown path components: /{object_id}/messages",
            "type": "OAuthException",
            "code": 2500,
        },
    )


def _invalid_parameter(details: str) -> JSONResponse:
    return _graph_error(
        400,
        {
            "message": "(#100) Invalid parameter",
            "type": "OAuthException",
            "code": 100,
            "error_data": {"messaging_product": "whatsapp", "details": details},
        },
    )


def _telegram_error(
    status: int, description: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"ok": False, "error_code": status, "description": description, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


@contextlib.contextmanager
def _serving(app: Starlette, port: int, *, ready_timeout: float = 10.0) -> Iterator[None]:
    """``app`` on 127.0.0.1:``port`` in a thread of its own until the block ends."""
    server = http_server(app, host="127.0.0.1", port=port)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread below
            failure.append(e)

    thread = threading.Thread(target=run, name=f"provider-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as http:
            while True:
                # Any answer will do: the server is listening and its app responds.
                with contextlib.suppress(httpx.HTTPError):
                    http.get("/")
                    break
                if not thread.is_alive():
                    raise RuntimeError(f"provider server on port {port} did not start") from (
                        failure[0] if failure else None
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"provider server on port {port} not up after {ready_timeout}s"
                    )
                time.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def _form_or_json(request: Request) -> dict[str, Any] | None:
    """The request's parameters, JSON or form-encoded; None when they cannot be read."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded":
            return dict(parse_qsl(raw.decode(), keep_blank_values=True))
        if not raw:
            return {}
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


@dataclass(kw_only=True)
class _LocalProvider:
    """What every local provider server has: its port, and a rate limit tests switch on."""

    port: int
    #: Sends still to be answered 429 (the provider's rate limit, for a while).
    throttle: int = 0
    #: Seconds in the 429's ``Retry-After`` (Telegram: ``retry_after``).
    retry_after: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The base URL services are pointed at (``META_GRAPH_API_URL``,
        ``TELEGRAM_API_URL``, ``X_API_URL``)."""
        return f"http://127.0.0.1:{self.port}"

    def _throttled(self) -> int | None:
        """This send's ``Retry-After`` when it is to be answered 429, else None."""
        with self.lock:
            if self.throttle <= 0:
                return None
            self.throttle -= 1
            return self.retry_after


@dataclass(kw_only=True)
class _LocalGraph(_LocalProvider):
    """A Graph API product: sends within 24 hours of the customer's last message."""

    #: Customer (wa_id, PSID or IGSID) -> unix time of their last message, which opens
    #: the 24-hour window.
    last_inbound: dict[str, float] = field(default_factory=dict)

    def customer_wrote(self, customer: str, at: float | None = None) -> None:
        """The customer sent us a message at ``at`` (now by default), opening the window."""
        with self.lock:
            self.last_inbound[customer] = time.time() if at is None else at


# ---------------------------------------------------------------- WhatsApp Cloud API


@dataclass(frozen=True)
class SentMessage:
    """A text message the local Cloud API accepted."""

    phone_number_id: str
    to: str
    text: str
    wamid: str
    #: The wamid it replies to (``context.message_id``), if any.
    context: str | None = None
    #: Why delivery failed (as the status webhook's ``errors`` entry), None when it did not.
    error: dict[str, Any] | None = None


@dataclass(kw_only=True)
class LocalWhatsApp(_LocalGraph):
    #: phone_number_id -> the access token that may send from it.
    tokens: dict[str, str]
    #: The WhatsApp Business Account the numbers belong to (``entry[].id`` in webhooks).
    business_account_id: str = "102290129340398"
    display_phone_number: str = "15550783881"
    sent: list[SentMessage] = field(default_factory=list)

    def to(self, wa_id: str) -> list[SentMessage]:
        with self.lock:
            return [m for m in self.sent if m.to == wa_id]

    def status_webhook(self, sent: SentMessage, status: str) -> bytes:
        """The body of the webhook Meta would POST to report ``status`` for ``sent``."""
        if status not in WHATSAPP_STATUSES:
            raise ValueError(f"status must be one of {WHATSAPP_STATUSES}, not {status!r}")
        entry: dict[str, Any] = {
            "id": sent.wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": sent.to,
        }
        if status == "failed":
            if sent.error is None:
                raise ValueError(f"{sent.wamid} did not fail: it has no error to report")
            entry["errors"] = [sent.error]
        body = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": self.business_account_id,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": self.display_phone_number,
                                    "phone_number_id": sent.phone_number_id,
                                },
                                "statuses": [entry],
                            },
                        }
                    ],
                }
            ],
        }
        return json.dumps(body).encode()

    def failed_webhook(self, sent: SentMessage) -> bytes:
        """The ``failed`` status webhook for ``sent``, with the error it was recorded with."""
        return self.status_webhook(sent, "failed")

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{version}/{phone_number_id}/messages", self._send, methods=["POST"])]
        )

    async def _send(self, request: Request) -> Response:
        version = request.path_params["version"]
        phone_number_id = request.path_params["phone_number_id"]
        if not GRAPH_VERSION.fullmatch(version):
            return _unknown_path(phone_number_id)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.lock:
            known = phone_number_id in self.tokens
            authorised = scheme.lower() == "bearer" and token in self.tokens.values()
            allowed = self.tokens.get(phone_number_id) == token
        if not authorised:
            return _invalid_token()
        if not (known and allowed):
            # A valid token for another number cannot see this one either.
            return _unsupported_post(phone_number_id)
        retry_after = self._throttled()
        if retry_after is not None:
            response = _graph_error(
                429,
                {
                    "message": "(#130429) Rate limit hit",
                    "type": "OAuthException",
                    "code": 130429,
                    "error_data": {
                        "messaging_product": "whatsapp",
                        "details": "Cloud API message throughput has been reached.",
                    },
                },
            )
            response.headers["Retry-After"] = str(retry_after)
            return response
        return self._accept(phone_number_id, await _form_or_json(request))

    def _accept(self, phone_number_id: str, body: dict[str, Any] | None) -> Response:
        if body is None:
            return _invalid_parameter("The request body must be a JSON object.")
        invalid = self._invalid(body)
        if invalid:
            return _invalid_parameter(invalid)
        to: str = body["to"]
        wa_id = re.sub(r"\D", "", to)
        context = body.get("context")
        with self.lock:
            wrote = self.last_inbound.get(wa_id)
            # Accepted either way: outside the window it fails later, in a status webhook.
            outside = wrote is None or time.time() - wrote > SERVICE_WINDOW
            message = SentMessage(
                phone_number_id=phone_number_id,
                to=wa_id,
                text=body["text"]["body"],
                wamid=_wamid(),
                context=context["message_id"] if context else None,
                error=_reengagement_error() if outside else None,
            )
            self.sent.append(message)
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": wa_id}],
                "messages": [{"id": message.wamid}],
            }
        )

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        """What is wrong with a text message's parameters, None when nothing is."""
        if body.get("messaging_product") != "whatsapp":
            return "The parameter messaging_product is required and must be 'whatsapp'."
        if body.get("recipient_type", "individual") != "individual":
            return "Param recipient_type must be 'individual'."
        to = body.get("to")
        if not isinstance(to, str) or not WHATSAPP_TO.fullmatch(to):
            return "The parameter to is required and must be a phone number."
        if body.get("type", "text") != "text":
            return "Only messages of type 'text' are supported here."
        text = body.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("body"), str):
            return "The parameter text['body'] is required."
        if not text["body"].strip():
            return "Param text['body'] must not be empty."
        if len(text["body"]) > MAX_TEXT:
            return f"Param text['body'] is too long: it must be at most {MAX_TEXT} characters."
        if not isinstance(text.get("preview_url", False), bool):
            return "Param text['preview_url'] must be a boolean."
        context = body.get("context")
        if context is not None and not (
            isinstance(context, dict) and isinstance(context.get("message_id"), str)
        ):
            return "Param context['message_id'] must be a message id."
        return None

    @classmethod
    @contextlib.contextmanager
    def started(cls, *, tokens: Mapping[str, str]) -> Iterator[LocalWhatsApp]:
        """Listening on 127.0.0.1 until the block ends; ``tokens`` maps each
        phone_number_id to the access token that may send from it."""
        whatsapp = cls(port=free_port(), tokens=dict(tokens))
        with _serving(whatsapp.app(), whatsapp.port):
            yield whatsapp


# ---------------------------------------------------------------- Messenger Platform Send API


def _messenger_error(
    status: int, message: str, code: int, *, subcode: int | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    return _graph_error(status, error)


def _messenger_message_id() -> str:
    # Real ids are ``m_`` and some 86 characters of URL-safe base64.
    return "m_" + secrets.token_urlsafe(64)


def _json_object(value: Any) -> dict[str, Any] | None:
    """``value`` as an object: form-encoded parameters carry objects JSON-serialised."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class MessengerMessage:
    """A text message the local Send API accepted."""

    #: The Page or Instagram account id it was sent from.
    account: str
    #: The PSID or IGSID it was sent to.
    recipient_id: str
    text: str
    message_id: str
    #: ``RESPONSE`` (the default), ``UPDATE`` or ``MESSAGE_TAG``.
    messaging_type: str
    #: The message tag, for ``MESSAGE_TAG``.
    tag: str | None = None
    #: When it was sent (unix ms): what receipts' watermarks are compared with.
    timestamp: int = 0


@dataclass(kw_only=True)
class LocalMessenger(_LocalGraph):
    #: Page or Instagram account id -> the Page access token that may send from it.
    tokens: dict[str, str]
    #: PSIDs/IGSIDs the Send API reports unavailable (blocked the Page, deactivated, ...).
    unavailable: set[str] = field(default_factory=set)
    sent: list[MessengerMessage] = field(default_factory=list)

    def to(self, recipient_id: str) -> list[MessengerMessage]:
        with self.lock:
            return [m for m in self.sent if m.recipient_id == recipient_id]

    def receipt_webhook(
        self, sent: MessengerMessage, status: str, *, instagram: bool = False
    ) -> bytes:
        """The body of the webhook Meta would POST when the person got (``delivered``) or
        read (``read``) ``sent``. Messenger's delivery names the message, with the
        watermark of its time; its read is by watermark alone (everything sent at or
        before ``sent``). Instagram's read names the message seen; Instagram sends no
        delivery receipts."""
        if status not in ("delivered", "read") or (instagram and status != "read"):
            raise ValueError(
                f"no {status!r} receipt on {'Instagram' if instagram else 'Messenger'}"
            )
        receipt: dict[str, Any]
        if status == "delivered":
            receipt = {"delivery": {"mids": [sent.message_id], "watermark": sent.timestamp}}
        elif instagram:
            receipt = {"read": {"mid": sent.message_id}}
        else:
            receipt = {"read": {"watermark": sent.timestamp}}
        now = int(time.time() * 1000)
        event = {
            "sender": {"id": sent.recipient_id},
            "recipient": {"id": sent.account},
            "timestamp": now,
            **receipt,
        }
        body = {
            "object": "instagram" if instagram else "page",
            "entry": [{"id": sent.account, "time": now, "messaging": [event]}],
        }
        return json.dumps(body).encode()

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{version}/{account}/messages", self._send, methods=["POST"])]
        )

    async def _send(self, request: Request) -> Response:
        version = request.path_params["version"]
        account = request.path_params["account"]
        if not GRAPH_VERSION.fullmatch(version):
            return _unknown_path(account)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = request.query_params.get("access_token", "")
        with self.lock:
            # The ids this token may send from; ``me`` is the first of them.
            owned = [id_ for id_, own in self.tokens.items() if own == token] if token else []
        if not owned:
            return _invalid_token()
        if account == "me":
            account = owned[0]
        elif account not in owned:
            # A valid token for another Page cannot see this one either.
            return _unsupported_post(account)
        retry_after = self._throttled()
        if retry_after is not None:
            response = _messenger_error(
                429, "(#613) Calls to this api have exceeded the rate limit.", 613
            )
            response.headers["Retry-After"] = str(retry_after)
            return response
        return self._accept(account, await _form_or_json(request))

    def _accept(self, account: str, body: dict[str, Any] | None) -> Response:
        if body is None:
            return _messenger_error(400, "(#100) The request body must be a JSON object.", 100)
        try:
            recipient_id, text, messaging_type, tag = self._parse(body)
        except ValueError as e:
            return _messenger_error(400, str(e), 100)
        # Tags other than HUMAN_AGENT may be sent at any time.
        window: float | None = SERVICE_WINDOW
        if tag is not None:
            window = HUMAN_AGENT_WINDOW if tag == "HUMAN_AGENT" else None
        with self.lock:
            if recipient_id in self.unavailable:
                return _messenger_error(
                    400, "(#551) This person isn't available right now.", 551, subcode=1545041
                )
            wrote = self.last_inbound.get(recipient_id)
            if window is not None and (wrote is None or time.time() - wrote > window):
                return _messenger_error(
                    400,
                    "(#10) This message is sent outside of allowed window. Learn more about the "
                    "new policy here: "
                    "https://developers.facebook.com/docs/messenger-platform/policy-overview",
                    10,
                    subcode=2018278,
                )
            sent = MessengerMessage(
                account=account,
                recipient_id=recipient_id,
                text=text,
                message_id=_messenger_message_id(),
                messaging_type=messaging_type,
                tag=tag,
                timestamp=int(time.time() * 1000),
            )
            self.sent.append(sent)
        return JSONResponse({"recipient_id": recipient_id, "message_id": sent.message_id})

    @staticmethod
    def _parse(body: dict[str, Any]) -> tuple[str, str, str, str | None]:
        """A text message's recipient id, text, messaging type and tag; raises ValueError
        with the Graph API's message when its parameters are wrong."""
        if body.get("recipient") is None:
            raise ValueError("(#100) The parameter recipient is required")
        recipient = _json_object(body["recipient"])
        recipient_id = recipient.get("id") if recipient is not None else None
        if (
            isinstance(recipient_id, bool)
            or not isinstance(recipient_id, int | str)
            or not str(recipient_id).strip()
        ):
            raise ValueError('(#100) Param recipient[id] must be a valid ID string (e.g., "123")')
        messaging_type = body.get("messaging_type") or "RESPONSE"
        if messaging_type not in MESSAGING_TYPES:
            raise ValueError(
                "(#100) Param messaging_type must be one of {" + ", ".join(MESSAGING_TYPES) + "}"
            )
        tag = body.get("tag") if messaging_type == "MESSAGE_TAG" else None
        if messaging_type == "MESSAGE_TAG" and tag not in MESSAGE_TAGS:
            raise ValueError("(#100) Param tag must be one of {" + ", ".join(MESSAGE_TAGS) + "}")
        message = _json_object(body.get("message"))
        if not message:
            raise ValueError("(#100) param message must be non-empty.")
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("(#100) param message[text] must be non-empty.")
        if len(text) > MESSENGER_MAX_TEXT:
            raise ValueError(
                "(#100) Length of param message[text] must be less than or equal to "
                f"{MESSENGER_MAX_TEXT}"
            )
        return str(recipient_id), text, messaging_type, tag

    @classmethod
    @contextlib.contextmanager
    def started(cls, *, tokens: Mapping[str, str]) -> Iterator[LocalMessenger]:
        """Listening on 127.0.0.1 until the block ends; ``tokens`` maps each Page or
        Instagram account id to the Page access token that may send from it."""
        messenger = cls(port=free_port(), tokens=dict(tokens))
        with _serving(messenger.app(), messenger.port):
            yield messenger


# ---------------------------------------------------------------- Telegram Bot API


@dataclass(frozen=True)
class TelegramMessage:
    """A message the local Bot API sent."""

    #: The bot's id: its token's part before ``:``.
    bot_id: str
    chat_id: str
    text: str
    message_id: int
    #: ``reply_parameters.message_id``, if it replies to a message.
    reply_to: int | None = None
    parse_mode: str | None = None


@dataclass(kw_only=True)
class LocalTelegram(_LocalProvider):
    tokens: set[str]
    #: Chats (as strings) whose user blocked the bot.
    blocked: set[str] = field(default_factory=set)
    sent: list[TelegramMessage] = field(default_factory=list)
    #: The last message_id given, per chat (Telegram numbers messages within a chat).
    last_message_id: dict[str, int] = field(default_factory=dict)

    def to(self, chat_id: int | str) -> list[TelegramMessage]:
        with self.lock:
            return [m for m in self.sent if m.chat_id == str(chat_id)]

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/bot{token}/{method}", self._method, methods=["GET", "POST"])]
        )

    async def _method(self, request: Request) -> Response:
        token = request.path_params["token"]
        with self.lock:
            known = token in self.tokens
        if not known:
            return _telegram_error(401, "Unauthorized")
        if request.path_params["method"].lower() != "sendmessage":
            return _telegram_error(404, "Not Found")
        retry_after = self._throttled()
        if retry_after is not None:
            return _telegram_error(
                429,
                f"Too Many Requests: retry after {retry_after}",
                headers={"Retry-After": str(retry_after)},
                parameters={"retry_after": retry_after},
            )
        body = await _form_or_json(request)
        if body is None:
            return _telegram_error(400, "Bad Request: can't parse request body")
        return self._send(token.split(":", 1)[0], body)

    def _send(self, bot_id: str, body: dict[str, Any]) -> Response:
        chat_id = body.get("chat_id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or chat_id == "":
            return _telegram_error(400, "Bad Request: chat not found")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return _telegram_error(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            return _telegram_error(400, "Bad Request: message is too long")
        try:
            reply_to = self._reply_to(body.get("reply_parameters"))
        except (TypeError, ValueError):
            return _telegram_error(400, "Bad Request: can't parse reply parameters JSON object")
        parse_mode = body.get("parse_mode")
        if parse_mode is not None and parse_mode not in ("HTML", "Markdown", "MarkdownV2"):
            return _telegram_error(400, "Bad Request: unsupported parse_mode")
        chat = str(chat_id)
        with self.lock:
            if chat in self.blocked:
                return _telegram_error(403, "Forbidden: bot was blocked by the user")
            message_id = self.last_message_id.get(chat, 0) + 1
            self.last_message_id[chat] = message_id
            self.sent.append(
                TelegramMessage(
                    bot_id=bot_id,
                    chat_id=chat,
                    text=text,
                    message_id=message_id,
                    reply_to=reply_to,
                    parse_mode=parse_mode,
                )
            )
        result: dict[str, Any] = {
            "message_id": message_id,
            "from": {
                "id": int(bot_id) if bot_id.isdigit() else bot_id,
                "is_bot": True,
                "first_name": "Switchboard",
            },
            "date": int(time.time()),
            "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": "private"},
            "text": text,
        }
        return JSONResponse({"ok": True, "result": result})

    @staticmethod
    def _reply_to(parameters: Any) -> int | None:
        """``reply_parameters.message_id``, None without one; raises when malformed."""
        if parameters is None:
            return None
        if isinstance(parameters, str):  # form-encoded: a JSON-serialised object
            parameters = json.loads(parameters)
        message_id = parameters.get("message_id") if isinstance(parameters, dict) else None
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise TypeError("reply_parameters needs an integer message_id")
        return message_id

    @classmethod
    @contextlib.contextmanager
    def started(cls, *, tokens: set[str] | frozenset[str]) -> Iterator[LocalTelegram]:
        """Listening on 127.0.0.1 until the block ends, for the bots with these tokens."""
        telegram = cls(port=free_port(), tokens=set(tokens))
        with _serving(telegram.app(), telegram.port):
            yield telegram


# ---------------------------------------------------------------- X API v2 direct messages

#: Longest text of one X direct message.
X_MAX_TEXT = 10_000
#: Requests per user in each 15-minute window of ``POST /2/dm_conversations/...``, which
#: the 429's ``x-rate-limit-limit`` reports.
X_DM_RATE_LIMIT = 200
#: X user ids: up to 19 digits.
X_USER_ID = re.compile(r"[0-9]{1,19}")
#: The epoch of X's snowflake ids (ms): ids grow with time, as X's do.
X_EPOCH_MS = 1288834974657


def _x_problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An API v2 error: problem details (RFC 7807) without a specific ``type``."""
    body = {"title": title, "type": "about:blank", "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, **extra)


def _x_invalid_request(parameter: str, value: Any, message: str) -> JSONResponse:
    """API v2's 400: the problem of type ``invalid-request``, naming the parameter."""
    body = {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }
    return JSONResponse(body, status_code=400)


def _snowflake() -> str:
    return str(((int(time.time() * 1000) - X_EPOCH_MS) << 22) | secrets.randbits(22))


@dataclass(frozen=True)
class XDirectMessage:
    """A direct message the local X API sent."""

    #: The business account it was sent from (the token's user).
    sender_id: str
    participant_id: str
    text: str
    dm_event_id: str
    #: A one-to-one conversation's id: the two user ids, lower first.
    dm_conversation_id: str


@dataclass(kw_only=True)
class LocalX(_LocalProvider):
    #: X user id of a business account -> its OAuth 2.0 user-context token, or
    #: ``<access token>:<secret>`` for OAuth 1.0a.
    tokens: dict[str, str]
    #: The app's consumer key and secret OAuth 1.0a requests are signed with.
    consumer: tuple[str, str] | None = None
    #: Users who take no direct messages from the accounts (their DM settings, a block).
    closed: set[str] = field(default_factory=set)
    sent: list[XDirectMessage] = field(default_factory=list)

    def to(self, participant_id: str) -> list[XDirectMessage]:
        with self.lock:
            return [m for m in self.sent if m.participant_id == participant_id]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/2/dm_conversations/with/{participant_id}/messages",
                    self._send,
                    methods=["POST"],
                )
            ]
        )

    def _user(self, request: Request) -> str | None:
        """The business account a request is authorised as: a bearer token, or an OAuth
        1.0a signature (RFC 5849, checked as X checks it) by its access token."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        with self.lock:
            owned = dict(self.tokens)
        if scheme.lower() == "bearer":
            return next((user for user, own in owned.items() if own == token and token), None)
        oauth = header_params(header)
        given = oauth.pop("oauth_signature", None)
        for user, own in owned.items():
            access, _, secret = own.partition(":")
            if self.consumer is None or oauth.get("oauth_token") != access or not secret:
                continue
            signed = {**dict(request.query_params), **oauth}
            expected = signature("POST", str(request.url), signed, self.consumer[1], secret)
            if oauth.get("oauth_consumer_key") == self.consumer[0] and given == expected:
                return user
        return None

    async def _send(self, request: Request) -> Response:
        user = self._user(request)
        if user is None:
            return _x_problem(401, "Unauthorized", "Unauthorized")
        retry_after = self._throttled()
        if retry_after is not None:
            # X itself says when the window resets; Retry-After is the same wait, in seconds.
            headers = {
                "Retry-After": str(retry_after),
                "x-rate-limit-limit": str(X_DM_RATE_LIMIT),
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(int(time.time()) + retry_after),
            }
            return _x_problem(429, "Too Many Requests", "Too Many Requests", headers=headers)
        participant_id = request.path_params["participant_id"]
        if not X_USER_ID.fullmatch(participant_id):
            return _x_invalid_request(
                "participant_id",
                participant_id,
                f"The `participant_id` query parameter value [{participant_id}] is not valid",
            )
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, ValueError):
            body = None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return _x_invalid_request("text", text, "text or attachments must be provided")
        if len(text) > X_MAX_TEXT:
            return _x_invalid_request(
                "text", len(text), f"text must be at most {X_MAX_TEXT} characters"
            )
        return self._accept(user, participant_id, text)

    def _accept(self, sender_id: str, participant_id: str, text: str) -> Response:
        with self.lock:
            if participant_id in self.closed:
                return _x_problem(403, "Forbidden", "You cannot send messages to this user.")
            low, high = sorted((sender_id, participant_id), key=int)
            message = XDirectMessage(
                sender_id=sender_id,
                participant_id=participant_id,
                text=text,
                dm_event_id=_snowflake(),
                dm_conversation_id=f"{low}-{high}",
            )
            self.sent.append(message)
        return JSONResponse(
            {
                "data": {
                    "dm_conversation_id": message.dm_conversation_id,
                    "dm_event_id": message.dm_event_id,
                }
            },
            status_code=201,
        )

    @classmethod
    @contextlib.contextmanager
    def started(
        cls, *, tokens: Mapping[str, str], consumer: tuple[str, str] | None = None
    ) -> Iterator[LocalX]:
        """Listening on 127.0.0.1 until the block ends; ``tokens`` maps each business
        account's X user id to the user-context credentials that send as it, and
        ``consumer`` is the app's key and secret for OAuth 1.0a ones."""
        x = cls(port=free_port(), tokens=dict(tokens), consumer=consumer)
        with _serving(x.app(), x.port):
            yield x
