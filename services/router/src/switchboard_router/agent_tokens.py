"""Agent tokens: a bearer token that names one agent and expires (pure).

A browser console signs in as one agent, so its token must say which agent it is and
must stop working after a shift: ``sbagent.<agent id, base64url>.<issued, unix
milliseconds>.<expiry, unix seconds>.<HMAC-SHA256 of the rest, base64url>``, signed with
``ROUTER_AGENT_TOKEN_SECRET``. Checked without a lookup; the issue time lets an
administrator revoke one agent's tokens (``token_revocations``: every token issued up to
then), and rotating the secret signs every agent out. Minted by
``POST /admin/agents/{agent_id}/tokens`` (admin token) and by
``python -m switchboard_router agent-token <agent_id>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "sbagent"
#: A shift and a half: long enough for a working day, short enough to expire overnight.
DEFAULT_TTL_SECONDS = 12 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_AGENT_ID = 200


class AgentTokenError(ValueError):
    """An agent token that cannot be minted (bad agent id or lifetime)."""


@dataclass(frozen=True)
class SignedAgent:
    """What a valid agent token says: the agent, and when it was issued."""

    agent_id: str
    issued_ms: int


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

    def _mac(self, signed: str) -> str:
        return _b64(hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest())

    def mint(self, agent_id: str, *, now: datetime, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> str:
        """A token for ``agent_id`` valid for ``ttl_seconds`` from ``now``."""
        if not agent_id or len(agent_id) > MAX_AGENT_ID or not agent_id.isprintable():
            raise AgentTokenError(f"an agent id is 1-{MAX_AGENT_ID} printable characters")
        if not 60 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise AgentTokenError(f"a token lives 60-{MAX_TTL_SECONDS} seconds")
        agent = _b64(agent_id.encode())
        issued = str(int(now.timestamp() * 1000))
        expiry = str(int(now.timestamp()) + ttl_seconds)
        signed = f"{PREFIX}.{agent}.{issued}.{expiry}"
        return f"{signed}.{self._mac(signed)}"

    def check(self, token: str, *, now: datetime) -> SignedAgent | None:
        """The agent a token names and when it was issued, or None if it is not one of
        ours or has expired."""
        signed, _, mac = token.rpartition(".")
        parts = signed.split(".")
        if len(parts) != 4 or parts[0] != PREFIX or not all(p.isdigit() for p in parts[2:]):
            return None
        try:
            expected = self._mac(signed)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
            return None
        _, agent, issued, expiry = parts
        if int(expiry) <= now.timestamp():
            return None
        try:
            return SignedAgent(_unb64(agent).decode("utf-8"), int(issued))
        except (binascii.Error, ValueError):
            return None

    def verify(self, token: str, *, now: datetime) -> str | None:
        """The agent a token names, or None (``check`` without the issue time)."""
        signed = self.check(token, now=now)
        return None if signed is None else signed.agent_id

    @staticmethod
    def expiry_of(token: str) -> datetime:
        """When a token this class minted expires (for the mint route's answer)."""
        return datetime.fromtimestamp(int(token.split(".")[3]), UTC)
