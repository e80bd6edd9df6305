"""Who is at the other end of a socket: visitor tokens and vouched identities. Pure.

A visitor token is ``<visitor id>.<HMAC-SHA256(token secret, visitor id), base64url>``:
the widget keeps it, so a returning visitor is the same visitor (and reads the same
mailbox) without an account, and nobody can claim another visitor's id without the
service's secret.

A site vouches for a signed-in customer as Intercom and Chatwoot do: its server computes
``hex(HMAC-SHA256(identity secret, email))`` and puts it beside the email in the page.
Only then does the visitor write as that email (the same customer as their mail).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

VISITOR_ID = re.compile(r"^v_[A-Za-z0-9_-]{16,64}$")
#: Deliberately loose (one ``@``, no spaces): the site vouches for the address, this
#: only keeps what is not an address out of identities.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}$")


def new_visitor_id() -> str:
    """A fresh visitor id: ``v_`` and 128 random bits (never contains ``@``)."""
    return "v_" + secrets.token_urlsafe(16)


def _mac(secret: bytes, value: str) -> bytes:
    return hmac.new(secret, value.encode(), hashlib.sha256).digest()


def issue_token(secret: bytes, visitor_id: str) -> str:
    """The token that proves ``visitor_id`` to this service."""
    signature = base64.urlsafe_b64encode(_mac(secret, visitor_id)).rstrip(b"=").decode()
    return f"{visitor_id}.{signature}"


def verify_token(secret: bytes, token: str) -> str | None:
    """The visitor id of a token this service issued; None for anything else."""
    visitor_id, dot, _ = token.rpartition(".")
    if not dot or not VISITOR_ID.match(visitor_id):
        return None
    # Compared as bytes: a str comparison raises on non-ASCII input (anyone's hello).
    expected = issue_token(secret, visitor_id).encode()
    return visitor_id if hmac.compare_digest(expected, token.encode()) else None


def identity_hash(secret: bytes, email: str) -> str:
    """What the shop's server computes for a signed-in customer (lower-case hex)."""
    return hmac.new(secret, email.encode(), hashlib.sha256).hexdigest()


def verify_identity(secret: bytes, email: str, given: str) -> bool:
    """Whether ``given`` is the site's hash of ``email`` (an address at all, too)."""
    if not EMAIL.match(email):
        return False
    expected = identity_hash(secret, email).encode()
    return hmac.compare_digest(expected, given.strip().lower().encode())


@dataclass(frozen=True)
class Visitor:
    """Who a socket speaks for, once its hello was accepted."""

    site: str
    visitor_id: str
    #: The address the site vouched for, lower-cased; None for an anonymous visitor.
    email: str | None = None
    name: str | None = None

    @property
    def recipient(self) -> str:
        """Whose mailbox the socket reads: the vouched email or the visitor id, which is
        also how the router addresses replies (visitor ids never contain ``@``)."""
        return self.email if self.email is not None else self.visitor_id

    @property
    def identity(self) -> str:
        """The router's identity of the sender (the inbound record key)."""
        if self.email is not None:
            return f"email:{self.email}"
        return f"webchat:{self.site}:{self.visitor_id}"
