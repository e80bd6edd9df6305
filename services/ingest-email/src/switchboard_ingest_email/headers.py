"""Header helpers for parsing: safe strings, message ids, and auto-submitted detection. Pure.

Identifiers (``Message-ID``, ``In-Reply-To``, ``References``) are normalised to
``<local@domain>`` with whitespace removed and the domain lower-cased (the local part is
case-sensitive by RFC 5322), so the same id written by different clients compares equal.
"""

from __future__ import annotations

import hashlib
import re
from email.message import Message

MAX_REFERENCES = 50
MAX_HEADER_CHARS = 2000

_MSG_ID = re.compile(r"<([^<>]*)>")
SURROGATES = re.compile(r"[\udc80-\udcff]+")
_HEADER_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


# --------------------------------------------------------------------------- strings


def clean_text(value: str) -> str:
    """A string safe to serialise: undecoded 8-bit bytes (surrogate escapes) decoded as
    UTF-8 or, failing that, Windows-1252."""

    def fix(match: re.Match[str]) -> str:
        raw = bytes(ord(c) - 0xDC00 for c in match.group())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("cp1252", errors="replace")

    return SURROGATES.sub(fix, value)


def clean_header(value: str) -> str:
    """A header value on one line, without control characters, bounded in length."""
    return _HEADER_CONTROL.sub(" ", clean_text(value)).strip()[:MAX_HEADER_CHARS]


def normalise_msg_id(value: str | None) -> str | None:
    """``<local@domain>`` from a Message-ID-like header value, or None if there is none."""
    ids = msg_ids(value, limit=1)
    return ids[0] if ids else None


def msg_ids(value: str | None, *, limit: int = MAX_REFERENCES) -> list[str]:
    """Every message id in a header value, in order, normalised and without duplicates.

    Beyond ``limit`` ids the first one (the thread root) and the most recent ones are kept.
    """
    if not value:
        return []
    value = clean_text(value)
    found = _MSG_ID.findall(value)
    if not found:
        # Some clients omit the angle brackets.
        found = [token for token in re.split(r"[\s,]+", value) if token]
    out: list[str] = []
    seen: set[str] = set()
    for raw in found:
        ident = re.sub(r"\s+", "", raw)
        if not ident:
            continue
        local, at, domain = ident.rpartition("@")
        ident = f"{local}@{domain.lower()}" if at else ident
        normalised = f"<{ident[:MAX_HEADER_CHARS]}>"
        if normalised not in seen:
            seen.add(normalised)
            out.append(normalised)
    if len(out) > limit:
        out = [out[0], *out[len(out) - limit + 1 :]] if limit > 1 else out[:1]
    return out


def message_id_for(sender: str, parsed_message_id: str | None, raw: bytes) -> str:
    """The deterministic ``message_id`` of an email from ``sender`` (the event's sender).

    ``email:<sha256 of sender and normalised Message-ID>`` when the message has one, else
    ``email:raw:<sha256 of sender and raw bytes>``: re-delivery (SMTP retry, IMAP re-fetch,
    the same message by SMTP and by IMAP) maps to the same id, while another sender who
    reuses a Message-ID (by accident or to suppress someone's mail) gets an id of its own.
    Hashing keeps the addresses out of ids that are logged.
    """
    scope = sender.encode("utf-8", errors="surrogateescape") + b"\n"
    if parsed_message_id:
        return "email:" + hashlib.sha256(scope + parsed_message_id.encode()).hexdigest()
    return "email:raw:" + hashlib.sha256(scope + raw).hexdigest()


# --------------------------------------------------------------------------- raw headers


def raw_header(msg: Message, name: str) -> str | None:
    """The header's source text, unparsed (a fallback when structured parsing fails)."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return str(value)
    return None


# --------------------------------------------------------------------------- auto-submitted

_AUTO_HEADERS = ("X-Auto-Response-Suppress", "List-Id", "List-Unsubscribe", "X-Autoreply",
                 "X-Autorespond")  # fmt: skip
_DAEMONS = ("mailer-daemon", "postmaster")


def is_auto_submitted(msg: Message, from_address: str | None, mail_from: str | None) -> bool:
    """True for auto-replies, bounces and bulk mail (RFC 3834 and common practice)."""
    auto = (raw_header(msg, "Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return True
    precedence = (raw_header(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return True
    if any(raw_header(msg, name) is not None for name in _AUTO_HEADERS):
        return True
    if msg.get_content_type() == "multipart/report":
        return True
    if mail_from is not None and mail_from.strip("<> ") == "":
        return True  # the null reverse-path: bounces and other notifications
    return bool(from_address and from_address.split("@")[0] in _DAEMONS)
