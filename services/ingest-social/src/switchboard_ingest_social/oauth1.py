"""OAuth 1.0a request signing (RFC 5849, HMAC-SHA1), as X documents it for user-context
calls ("Authorizing a request", "Creating a signature"). X replies use it when their
credentials are an access token and its secret: those do not expire, unlike X's OAuth 2.0
user tokens (two hours, then a refresh Switchboard does not do). Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit


def percent(value: str) -> str:
    """RFC 3986 percent-encoding: everything but the unreserved characters."""
    return quote(value, safe="~-._")


def base_url(url: str) -> str:
    """The URL as signed: scheme and host in lower case, no query, no fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def signature(
    method: str, url: str, params: Mapping[str, str], consumer_secret: str, token_secret: str
) -> str:
    """The ``oauth_signature`` of a request whose query, form-body and ``oauth_*``
    parameters (not a JSON body) are ``params``."""
    pairs = sorted((percent(k), percent(v)) for k, v in params.items())
    joined = "&".join(f"{k}={v}" for k, v in pairs)
    text = "&".join((method.upper(), percent(base_url(url)), percent(joined)))
    key = f"{percent(consumer_secret)}&{percent(token_secret)}"
    # HMAC-SHA1 is the method the API takes; SHA-1's collision weakness does not reach HMAC.
    digest = hmac.new(key.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class OAuth1Credentials:
    """An app's consumer key and secret with a user's access token and its secret."""

    consumer_key: str
    consumer_secret: str
    token: str
    token_secret: str

    def authorization(
        self,
        method: str,
        url: str,
        *,
        nonce: str,
        timestamp: int,
        form: Mapping[str, str] | None = None,
    ) -> str:
        """The ``Authorization`` header for one request."""
        oauth = {
            "oauth_consumer_key": self.consumer_key,
            "oauth_nonce": nonce,
            "oauth_signature_method": "HMAC-SHA1",
            "oauth_timestamp": str(timestamp),
            "oauth_token": self.token,
            "oauth_version": "1.0",
        }
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        signed = {**query, **(form or {}), **oauth}
        oauth["oauth_signature"] = signature(
            method, url, signed, self.consumer_secret, self.token_secret
        )
        return "OAuth " + ", ".join(
            f'{percent(k)}="{percent(v)}"' for k, v in sorted(oauth.items())
        )


def header_params(header: str) -> dict[str, str]:
    """The parameters of an ``Authorization: OAuth ...`` header (for a server checking it)."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "oauth":
        return {}
    found: dict[str, str] = {}
    for item in rest.split(","):
        key, _, value = item.strip().partition("=")
        if key and len(value) >= 2 and value[0] == value[-1] == '"':
            found[unquote(key)] = unquote(value[1:-1])
    return found
