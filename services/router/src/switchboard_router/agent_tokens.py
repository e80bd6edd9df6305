"""Agent tokens: a bearer token that names one agent and expires (pure).

A browser console signs in as one agent, so its token must say which agent it is and
must stop working after a shift: ``sbagent.<agent id, base64url>.<expiry, unix
seconds>.<HMAC-SHA256 of both, base64url>``, signed with ``ROUTER_AGENT_TOKEN_SECRET``.
Stateless, so every router replica checks it without a lookup; rotating the secret
signs every agent out. Minted by ``POST /admin/agents/{agent_id}/tokens`` (admin token)
and by ``python -m switchboard_router agent-token <agent_id>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime

PREFIX = "sbagent"
#: A shift and a half: long enough for a working day, short enough to expire overnight.
DEFAULT_TTL_SECONDS = 12 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_AGENT_ID = 200


class AgentTokenError(ValueError):
    """An agent token that cannot be minted (bad agent id or lifetime)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AgentTokens:
    """Mints and checks agent tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if not secret.strip():
            raise AgentTokenError("the agent token secret is empty")
        self._key = secret.encode()

    def _mac(self, agent: str, expiry: str) -> str:
        signed = f"{PREFIX}.{agent}.{expiry}".encode("ascii")
        return _b64(hmac.new(self._key, signed, hashlib.sha256).digest())

    def mint(self, agent_id: str, *, now: datetime, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> str:
        """A token for ``agent_id`` valid for ``ttl_seconds`` from ``now``."""
        if not agent_id or len(agent_id) > MAX_AGENT_ID or not agent_id.isprintable():
            raise AgentTokenError(f"an agent id is 1-{MAX_AGENT_ID} printable characters")
        if not 60 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise AgentTokenError(f"a token lives 60-{MAX_TTL_SECONDS} seconds")
        agent = _b64(agent_id.encode())
        expiry = str(int(now.timestamp()) + ttl_seconds)
        return f"{PREFIX}.{agent}.{expiry}.{self._mac(agent, expiry)}"

    def verify(self, token: str, *, now: datetime) -> str | None:
        """The agent a token names, or None if it is not one of ours or has expired."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():
            return None
        _, agent, expiry, mac = parts
        try:
            expected = self._mac(agent, expiry)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
            return None
        if int(expiry) <= now.timestamp():
            return None
        try:
            return _unb64(agent).decode("utf-8")
        except (binascii.Error, ValueError):
            return None

    @staticmethod
    def expiry_of(token: str) -> datetime:
        """When a token this class minted expires (for the mint route's answer)."""
        return datetime.fromtimestamp(int(token.split(".")[2]), UTC)
