"""A sample deployment and the providers' sample webhooks, for tests and benchmarks.

The payloads in ``social_samples/`` are written from the providers' documented webhook formats
(WhatsApp Cloud API, Messenger Platform, Instagram messaging, X Account Activity API,
Telegram Bot API) with made-up ids and people. ``signed_headers`` signs a body exactly
as each provider does. Nothing here is used by the service itself.
"""

# The secrets below belong to a made-up test deployment, never to a real one:
# ruff: noqa: S105
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from switchboard_common.contract import Channel
from switchboard_ingest_social import signatures

if TYPE_CHECKING:  # test-only dependency: imported by the tests that use this type
    import httpx

    from switchboard_ingest_social.app import IngestSocial

SAMPLES = Path(__file__).parent / "social_samples"

META_SECRET = "test-meta-app-secret"
GLOBEX_META_SECRET = "test-globex-meta-app-secret"
VERIFY_TOKEN = "test-meta-verify-token"
X_SECRET = "test-x-consumer-secret"
TELEGRAM_TOKEN = "test-telegram-secret-token"
TELEGRAM_OTHER_TOKEN = "test-telegram-other-bot-token"

WHATSAPP_NUMBER = "106540352242922"
PAGE = "108457628476532"
GLOBEX_PAGE = "208457628476533"
IG_ACCOUNT = "17841405822304914"
X_ACCOUNT = "4337869213"
BOT = "7012345678"
OTHER_BOT = "7012345679"

RECEIVED_AT = datetime(2026, 6, 8, 21, 0, 0, tzinfo=UTC)

ACCOUNTS_YAML = f"""
accounts:
  - {{channel: whatsapp, account: "{WHATSAPP_NUMBER}", tenant: acme}}
  - {{channel: messenger, account: "{PAGE}", tenant: acme}}
  - channel: messenger
    account: "{GLOBEX_PAGE}"
    tenant: globex
    secret_env: GLOBEX_META_APP_SECRET
  - {{channel: instagram, account: "{IG_ACCOUNT}", tenant: acme}}
  - {{channel: x, account: "{X_ACCOUNT}", tenant: acme}}
  - {{channel: telegram, account: "{BOT}", tenant: acme}}
  - {{channel: telegram, account: "{OTHER_BOT}", tenant: globex, secret_env: OTHER_BOT_TOKEN}}
"""
ACCOUNTS_ENV = {
    "GLOBEX_META_APP_SECRET": GLOBEX_META_SECRET,
    "OTHER_BOT_TOKEN": TELEGRAM_OTHER_TOKEN,
}


def default_secrets() -> dict[Channel, SecretStr]:
    return {
        Channel.WHATSAPP: SecretStr(META_SECRET),
        Channel.MESSENGER: SecretStr(META_SECRET),
        Channel.INSTAGRAM: SecretStr(META_SECRET),
        Channel.X: SecretStr(X_SECRET),
        Channel.TELEGRAM: SecretStr(TELEGRAM_TOKEN),
    }


def load_sample(name: str) -> dict[str, Any]:
    """A sample payload by name (``social_samples/<name>.json``), as a fresh dict."""
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text("utf-8"))
    return loaded


def encode(payload: dict[str, Any]) -> bytes:
    """JSON bytes as providers send them (compact, UTF-8)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signed_headers(provider: str, body: bytes, secret: str | None = None) -> dict[str, str]:
    """Headers a provider sends with ``body``: ``meta``, ``x`` or ``telegram``."""
    headers = {"content-type": "application/json"}
    if provider == "meta":
        key = (secret or META_SECRET).encode()
        headers["X-Hub-Signature-256"] = signatures.meta_signature(body, key)
    elif provider == "x":
        key = (secret or X_SECRET).encode()
        headers["x-twitter-webhooks-signature"] = signatures.x_signature(body, key)
    elif provider == "telegram":
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret or TELEGRAM_TOKEN
    else:
        raise ValueError(f"unknown provider {provider!r}")
    return headers


def accounts_environment() -> dict[str, str]:
    """Environment the sample accounts file references (its secret_env names)."""
    return dict(ACCOUNTS_ENV)


@dataclass(frozen=True)
class RunningSocial:
    """ingest-social running in this test's event loop, and a client for it."""

    url: str
    http: httpx.AsyncClient
    parts: IngestSocial

    async def post(
        self, provider: str, body: bytes, *, secret: str | None = None, query: str = ""
    ) -> httpx.Response:
        """POST ``body`` to the provider's webhook, signed as that provider signs."""
        return await self.http.post(
            f"/webhooks/{provider}{query}",
            content=body,
            headers=signed_headers(provider, body, secret),
        )

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text
