"""How each provider signs its webhooks, as pure functions over bytes and secrets.

Every comparison is constant-time (``hmac.compare_digest``) and every HMAC is computed
over the raw request body exactly as received, before any JSON parsing. The signing
functions are the same ones the tests and the benchmark use to sign their payloads, so
"signed as the provider signs" has one definition.

- Meta (WhatsApp, Messenger, Instagram): ``X-Hub-Signature-256: sha256=<hex>``, the
  HMAC-SHA256 of the body keyed with the app secret.
- X (Account Activity API): ``x-twitter-webhooks-signature: sha256=<base64>``, the
  HMAC-SHA256 of the body keyed with the consumer secret; the CRC answer is
  ``sha256=<base64 HMAC-SHA256 of crc_token>`` with the same key. Being the same
  function, a CRC answer for a text that is a webhook body would be a valid signature
  of that body: only tokens shaped as X's (short base64 text, never JSON) are answered.
- Telegram: ``X-Telegram-Bot-Api-Secret-Token`` carries the secret given to
  ``setWebhook`` verbatim (no HMAC).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from enum import StrEnum


class Verdict(StrEnum):
    """Outcome of a signature check."""

    MISSING = "missing"  # no signature header: 401
    WRONG = "wrong"  # a signature that no configured secret produces: 403


def meta_signature(body: bytes, app_secret: bytes) -> str:
    """The ``X-Hub-Signature-256`` header value Meta sends for ``body``."""
    return "sha256=" + hmac.new(app_secret, body, hashlib.sha256).hexdigest()


def x_signature(body: bytes, consumer_secret: bytes) -> str:
    """The ``x-twitter-webhooks-signature`` header value X sends for ``body``."""
    digest = hmac.new(consumer_secret, body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


#: X's CRC tokens are base64 text of a few dozen characters (base64 of a UUID: 48).
CRC_PATTERN = r"^[A-Za-z0-9+/=_-]{8,128}$"
_CRC_TOKEN = re.compile(CRC_PATTERN)
CRC_RULE = "crc_token must be 8-128 characters of A-Z a-z 0-9 + / = _ -, and not JSON"


def is_crc_token(text: str) -> bool:
    """Whether ``text`` may be answered as a CRC token: X's alphabet and length, and not
    something a webhook could carry as its body (no JSON value at all)."""
    if not _CRC_TOKEN.match(text):
        return False
    try:
        json.loads(text)  # digits alone, for instance, are a JSON number
    except ValueError:
        return True
    return False


def x_crc_response(crc_token: str, consumer_secret: bytes) -> str:
    """The ``response_token`` that answers X's challenge-response check.

    Raises ``ValueError`` for a text that is not a CRC token (``is_crc_token``): this
    signature must never be obtainable for something that could be a webhook body.
    """
    if not is_crc_token(crc_token):
        raise ValueError(CRC_RULE)
    return x_signature(crc_token.encode(), consumer_secret)


def _match(
    header: str | None, body: bytes, secrets: Iterable[bytes], scheme: str
) -> bytes | Verdict:
    if not header:
        return Verdict.MISSING
    presented = header.strip().encode()
    found: bytes | None = None
    # Check every candidate (no early exit) so timing does not tell which one matched.
    for secret in secrets:
        expected = (
            meta_signature(body, secret) if scheme == "meta" else x_signature(body, secret)
        ).encode()
        if hmac.compare_digest(presented, expected) and found is None:
            found = secret
    return found if found is not None else Verdict.WRONG


def match_meta(header: str | None, body: bytes, secrets: Iterable[bytes]) -> bytes | Verdict:
    """The app secret whose signature of ``body`` equals ``header``, or why none does."""
    return _match(header, body, secrets, "meta")


def match_x(header: str | None, body: bytes, secrets: Iterable[bytes]) -> bytes | Verdict:
    """The consumer secret whose signature of ``body`` equals ``header``, or why none does."""
    return _match(header, body, secrets, "x")


def token_matches(presented: str | None, secret: bytes) -> bool:
    """Constant-time comparison of a presented token (Telegram, Meta verify token)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), secret)
