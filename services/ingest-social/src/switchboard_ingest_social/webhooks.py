"""The webhook HTTP API: handshakes, signature checks, and the accept/reject decisions.

Every POST goes through the same steps, in this order, and stops at the first failure:

1. body size: over ``max_body_bytes`` → 413, without reading past the limit;
2. signature (raw bytes, constant time): missing → 401, wrong → 403; nothing published;
3. JSON and the provider's payload schema → 400 with the reason;
4. every account the payload speaks for must be signed by *its* secret → 403;
5. publish every message and wait for Kafka's acknowledgement of all of them → 200,
   or 503 when Kafka is unreachable or slower than the publish timeout.

A verified webhook with nothing to publish (statuses, echoes, unknown kinds) gets 200,
with what was dropped counted by reason.

X's CRC check (``GET /webhooks/x``) signs with the consumer secret, so it is rate-limited
per client and in total (429 with ``Retry-After``) and answers only tokens shaped as X's
(400 otherwise): never a text that could be a webhook body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from switchboard_common.cloudevents import describe_validation_error
from switchboard_common.contract import Channel
from switchboard_common.logging import get_logger
from switchboard_ingest_social import signatures
from switchboard_ingest_social.accounts import META_CHANNELS, AccountDirectory
from switchboard_ingest_social.metrics import IngestSocialMetrics, Outcome
from switchboard_ingest_social.normalise import (
    Normalised,
    meta_provider,
    normalise_meta,
    normalise_telegram,
    normalise_x,
)
from switchboard_ingest_social.normalise.common import Dropped, ProviderStatus
from switchboard_ingest_social.publishing import InboundPublisher, KafkaUnavailableError
from switchboard_ingest_social.ratelimit import RateLimiter
from switchboard_ingest_social.replies import StatusReporter

log = get_logger(__name__)

_STATUS = {
    Outcome.ACCEPTED: 200,
    Outcome.IGNORED: 200,
    Outcome.INVALID: 400,
    Outcome.TOO_LARGE: 413,
    Outcome.UNAVAILABLE: 503,
}
#: Meta's challenge is a number; echo only harmless characters, never arbitrary input.
_CHALLENGE = re.compile(r"^[0-9A-Za-z_.-]{1,256}$")
_BOT_ID = re.compile(r"^[0-9]{1,20}$")
META_SIGNATURE = "X-Hub-Signature-256"
X_SIGNATURE = "x-twitter-webhooks-signature"
TELEGRAM_TOKEN_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name


class WebhookRejectedError(Exception):
    """A request refused before publishing; carries the answer."""

    def __init__(self, status: int, outcome: Outcome, detail: str, provider: str) -> None:
        super().__init__(detail)
        self.status = status
        self.outcome = outcome
        self.detail = detail
        self.provider = provider


def _answer(status: int, outcome: Outcome, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": outcome.value, "detail": detail, **extra}, status_code=status)


_ERROR_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"status": {"type": "string"}, "detail": {"type": "string"}},
                "required": ["status", "detail"],
            }
        }
    }
}
_DESCRIPTIONS = {
    200: "Verified; every message acknowledged by Kafka (or nothing to publish).",
    400: "Body is not JSON or not a valid payload of this provider.",
    401: "Signature (or secret token) header missing; nothing published.",
    403: "Signature (or secret token) wrong; nothing published.",
    413: "Body larger than INGEST_SOCIAL_MAX_BODY_BYTES.",
    503: "Kafka unavailable or slower than the publish timeout: retry later.",
}
POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, **_ERROR_BODY} for status, text in _DESCRIPTIONS.items()
}


class WebhookApi:
    """The webhook endpoints, bound to one deployment's accounts, publisher and clock."""

    def __init__(
        self,
        *,
        directory: AccountDirectory,
        verify_token: bytes,
        publisher: InboundPublisher,
        metrics: IngestSocialMetrics,
        max_body_bytes: int,
        crc_limiter: RateLimiter,
        clock: Callable[[], datetime],
        statuses: StatusReporter | None = None,
    ) -> None:
        #: Turns provider statuses of Switchboard's replies into delivery updates (None:
        #: replies are off, and statuses are counted as dropped).
        self.statuses = statuses
        self.directory = directory
        self.verify_token = verify_token
        self.publisher = publisher
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.crc_limiter = crc_limiter
        self.clock = clock

    # ------------------------------------------------------------------ shared steps

    async def read_body(self, request: Request, provider: str) -> bytes:
        """The raw body, refusing (413) as soon as it is known to exceed the limit."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large(provider)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(provider)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, provider: str) -> WebhookRejectedError:
        return WebhookRejectedError(
            413,
            Outcome.TOO_LARGE,
            f"body larger than {self.max_body_bytes} bytes",
            provider,
        )

    @staticmethod
    def parse_json(body: bytes, provider: str) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except json.JSONDecodeError as error:
            reason = f"body is not valid JSON: {error.msg} at position {error.pos}"
        except UnicodeDecodeError:
            reason = "body is not valid JSON: not UTF-8"
        except (ValueError, RecursionError):
            # Valid JSON beyond the parser's limits: a number of thousands of digits, or
            # nesting deeper than the interpreter's recursion limit.
            reason = "body is not valid JSON: a number or nesting beyond the parser's limits"
        else:
            reason = ""
        if reason:
            raise WebhookRejectedError(400, Outcome.INVALID, reason, provider)
        if not isinstance(payload, dict):
            raise WebhookRejectedError(400, Outcome.INVALID, "body must be a JSON object", provider)
        return payload

    @staticmethod
    def signature_failure(
        verdict: signatures.Verdict, provider: str, header: str
    ) -> WebhookRejectedError:
        if verdict is signatures.Verdict.MISSING:
            return WebhookRejectedError(
                401, Outcome.BAD_SIGNATURE, f"missing {header} header", provider
            )
        return WebhookRejectedError(
            403, Outcome.BAD_SIGNATURE, f"{header} does not match the body", provider
        )

    def check_accounts(self, normalised: Normalised, secret: bytes, provider: str) -> None:
        """Every account in the payload must be one the matching secret signs for."""
        for channel, account in sorted(normalised.accounts):
            if not self.directory.signed_by(channel, account, secret):
                raise WebhookRejectedError(
                    403,
                    Outcome.BAD_SIGNATURE,
                    f"signed with a secret other than that of {channel.value} account {account}",
                    provider,
                )

    async def deliver(self, normalised: Normalised, provider: str) -> JSONResponse:
        for (label, reason), count in normalised.dropped.items():
            self.metrics.dropped.labels(provider=label, reason=reason.value).inc(count)
        try:
            reported = await self._report(normalised.statuses)
        except PyMongoError as error:
            log.warning("webhook not acknowledged: database unavailable", provider=provider)
            self.metrics.requests.labels(provider=provider, outcome=Outcome.UNAVAILABLE.value).inc()
            return _answer(
                503, Outcome.UNAVAILABLE, f"database unavailable ({type(error).__name__})"
            )
        except KafkaUnavailableError as error:
            log.warning(
                "webhook not acknowledged: kafka unavailable", provider=provider, reason=str(error)
            )
            self.metrics.requests.labels(provider=provider, outcome=Outcome.UNAVAILABLE.value).inc()
            return _answer(503, Outcome.UNAVAILABLE, "Kafka unavailable; retry later")
        unreported = len(normalised.statuses) - reported  # not ours, or only "sent"
        if unreported:
            channel = normalised.statuses[0].channel.value  # one provider per webhook
            self.metrics.dropped.labels(provider=channel, reason=Dropped.STATUS.value).inc(
                unreported
            )
        dropped = sum(normalised.dropped.values()) + unreported
        if not normalised.messages:
            outcome = Outcome.ACCEPTED if reported else Outcome.IGNORED
            self.metrics.requests.labels(provider=provider, outcome=outcome.value).inc()
            detail = "statuses reported" if reported else "nothing to publish"
            return _answer(200, outcome, detail, published=reported, dropped=dropped)
        try:
            await self.publisher.publish(normalised.messages)
        except KafkaUnavailableError as error:
            log.warning(
                "webhook not acknowledged: kafka unavailable", provider=provider, reason=str(error)
            )
            self.metrics.requests.labels(provider=provider, outcome=Outcome.UNAVAILABLE.value).inc()
            return _answer(503, Outcome.UNAVAILABLE, "Kafka unavailable; retry later")
        self.metrics.requests.labels(provider=provider, outcome=Outcome.ACCEPTED.value).inc()
        return _answer(
            200, Outcome.ACCEPTED, "published", published=len(normalised.messages), dropped=dropped
        )

    async def _report(self, statuses: Sequence[ProviderStatus]) -> int:
        if not statuses or self.statuses is None:
            return 0
        return await self.statuses.report(statuses)

    def rejected(self, rejection: WebhookRejectedError) -> JSONResponse:
        self.metrics.requests.labels(
            provider=rejection.provider, outcome=rejection.outcome.value
        ).inc()
        log.info(
            "webhook rejected",
            provider=rejection.provider,
            outcome=rejection.outcome.value,
            status=rejection.status,
        )
        return _answer(rejection.status, rejection.outcome, rejection.detail)

    def invalid(self, error: ValidationError, provider: str) -> WebhookRejectedError:
        return WebhookRejectedError(
            400, Outcome.INVALID, f"invalid payload: {describe_validation_error(error)}", provider
        )

    # ------------------------------------------------------------------ providers

    async def meta(self, request: Request, signature: str | None) -> Response:
        provider = "meta"
        try:
            body = await self.read_body(request, provider)
            secret = signatures.match_meta(
                signature, body, self.directory.candidate_secrets(META_CHANNELS)
            )
            if isinstance(secret, signatures.Verdict):
                raise self.signature_failure(secret, provider, "X-Hub-Signature-256")
            payload = self.parse_json(body, provider)
            provider = meta_provider(payload)
            try:
                normalised = normalise_meta(payload, self.directory, self.clock())
            except ValidationError as error:
                raise self.invalid(error, provider) from None
            self.check_accounts(normalised, secret, provider)
        except WebhookRejectedError as rejection:
            return self.rejected(rejection)
        return await self.deliver(normalised, provider)

    async def x(self, request: Request, signature: str | None) -> Response:
        provider = Channel.X.value
        try:
            body = await self.read_body(request, provider)
            secret = signatures.match_x(
                signature, body, self.directory.candidate_secrets([Channel.X])
            )
            if isinstance(secret, signatures.Verdict):
                raise self.signature_failure(secret, provider, "x-twitter-webhooks-signature")
            payload = self.parse_json(body, provider)
            try:
                normalised = normalise_x(payload, self.directory, self.clock())
            except ValidationError as error:
                raise self.invalid(error, provider) from None
            self.check_accounts(normalised, secret, provider)
        except WebhookRejectedError as rejection:
            return self.rejected(rejection)
        return await self.deliver(normalised, provider)

    async def telegram(self, request: Request, token: str | None, bot: str | None) -> Response:
        provider = Channel.TELEGRAM.value
        try:
            body = await self.read_body(request, provider)
            bot_id = self.telegram_bot(token, bot)
            payload = self.parse_json(body, provider)
            try:
                normalised = normalise_telegram(payload, bot_id, self.directory, self.clock())
            except ValidationError as error:
                raise self.invalid(error, provider) from None
        except WebhookRejectedError as rejection:
            return self.rejected(rejection)
        return await self.deliver(normalised, provider)

    def telegram_bot(self, token: str | None, bot: str | None) -> str:
        """Which bot a Telegram request is for, proven by its secret token."""
        header = "X-Telegram-Bot-Api-Secret-Token"
        if not token:
            raise self.signature_failure(signatures.Verdict.MISSING, "telegram", header)
        if bot is not None:
            expected = self.directory.secret_for(Channel.TELEGRAM, bot)
            if _BOT_ID.match(bot) and signatures.token_matches(token, expected):
                return bot
            raise self.signature_failure(signatures.Verdict.WRONG, "telegram", header)
        found = self.directory.telegram_bot_for_token(token)
        if found is not None:
            return found
        raise WebhookRejectedError(
            403,
            Outcome.BAD_SIGNATURE,
            f"{header} matches neither TELEGRAM_SECRET_TOKEN nor a bot of the accounts file",
            "telegram",
        )

    def meta_handshake(
        self, mode: str | None, token: str | None, challenge: str | None
    ) -> Response:
        ok = (
            mode == "subscribe"
            and challenge is not None
            and _CHALLENGE.match(challenge) is not None
            and signatures.token_matches(token, self.verify_token)
        )
        self.metrics.handshakes.labels(provider="meta", outcome="ok" if ok else "rejected").inc()
        if not ok or challenge is None:
            log.info("meta handshake rejected")
            return PlainTextResponse("handshake refused", status_code=403)
        return PlainTextResponse(challenge)

    def x_crc(self, client: str, crc_token: str | None, account: str | None) -> Response:
        # Limited before anything else: every call, answered or not, costs the caller.
        retry_after = self.crc_limiter.admit(client)
        if retry_after:
            self.metrics.handshakes.labels(provider="x", outcome="rate_limited").inc()
            log.info("x crc rate limited", retry_after=retry_after)
            return JSONResponse(
                {"status": "rate_limited", "detail": "too many CRC checks; retry later"},
                status_code=429,
                headers={"Retry-After": str(retry_after)},
            )
        if crc_token is None or not signatures.is_crc_token(crc_token):
            self.metrics.handshakes.labels(provider="x", outcome="rejected").inc()
            log.info("x crc rejected")
            return _answer(400, Outcome.INVALID, signatures.CRC_RULE)
        # An account with its own consumer secret registers its webhook URL with
        # ?account=<id>; without it, the deployment's X_CONSUMER_SECRET answers.
        key = self.directory.secret_for(Channel.X, account or "")
        self.metrics.handshakes.labels(provider="x", outcome="ok").inc()
        return JSONResponse({"response_token": signatures.x_crc_response(crc_token, key)})


def webhook_router(api: WebhookApi) -> APIRouter:
    """The ``/webhooks/...`` routes, documented in the OpenAPI schema."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"])

    @router.get(
        "/meta",
        response_class=PlainTextResponse,
        summary="Meta subscription handshake",
        responses={
            200: {"description": "The challenge, echoed.", "content": {"text/plain": {}}},
            403: {"description": "Wrong mode or verify token.", "content": {"text/plain": {}}},
        },
    )
    async def meta_handshake(
        mode: Annotated[str | None, Query(alias="hub.mode", max_length=64)] = None,
        verify_token: Annotated[
            str | None, Query(alias="hub.verify_token", max_length=1024)
        ] = None,
        challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=1024)] = None,
    ) -> Response:
        return api.meta_handshake(mode, verify_token, challenge)

    # Signature headers are read from the request directly (FastAPI's parameter machinery
    # costs more per request than the whole normalisation) and documented by hand.
    @router.post(
        "/meta",
        summary="WhatsApp Cloud API, Messenger and Instagram messaging webhooks",
        responses=POST_RESPONSES,
        openapi_extra=_post_extra("MetaWebhook", META_SIGNATURE),
    )
    async def meta_webhook(request: Request) -> Response:
        return await api.meta(request, request.headers.get(META_SIGNATURE))

    @router.get(
        "/x",
        summary="X challenge-response check (CRC)",
        responses={
            200: {"description": "The response token."},
            400: {"description": "crc_token missing or not shaped as X's.", **_ERROR_BODY},
            429: {
                "description": "Too many CRC checks (INGEST_SOCIAL_CRC_PER_CLIENT_PER_MINUTE, "
                "INGEST_SOCIAL_CRC_PER_MINUTE); see Retry-After.",
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                **_ERROR_BODY,
            },
        },
    )
    async def x_crc(
        request: Request,
        # Checked by the handler (400, after the rate limit), not by FastAPI (422):
        # the schema only documents it.
        crc_token: Annotated[
            str | None, Query(json_schema_extra={"pattern": signatures.CRC_PATTERN})
        ] = None,
        account: Annotated[str | None, Query(max_length=32, pattern=r"^[0-9]+$")] = None,
    ) -> Response:
        client = request.client.host if request.client else "unknown"
        return api.x_crc(client, crc_token, account)

    @router.post(
        "/x",
        summary="X Account Activity API (direct messages)",
        responses=POST_RESPONSES,
        openapi_extra=_post_extra("XWebhook", X_SIGNATURE),
    )
    async def x_webhook(request: Request) -> Response:
        return await api.x(request, request.headers.get(X_SIGNATURE))

    @router.post(
        "/telegram",
        summary="Telegram Bot API updates",
        responses=POST_RESPONSES,
        openapi_extra=_post_extra("TelegramUpdate", TELEGRAM_TOKEN_HEADER),
    )
    async def telegram_webhook(
        request: Request, bot: Annotated[str | None, Query(max_length=20)] = None
    ) -> Response:
        return await api.telegram(request, request.headers.get(TELEGRAM_TOKEN_HEADER), bot)

    return router


def _post_extra(schema: str, signature_header: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        "parameters": [
            {
                "name": signature_header,
                "in": "header",
                "required": False,
                "description": "The provider's signature (or secret token); 401 when absent.",
                "schema": {"type": "string", "maxLength": 1024},
            }
        ],
    }
