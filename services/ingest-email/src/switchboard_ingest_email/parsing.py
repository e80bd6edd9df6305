"""MIME parsing: raw message bytes to a ``ParsedEmail`` of plain data. Pure and total.

Built on the standard library's ``email`` package with ``policy.default``. Every step that
can fail on hostile or broken input (header parsing, charsets, transfer encodings, MIME
structure) is guarded: what cannot be read is reported in ``errors`` and parsing goes on,
so ``parse_email`` returns for any bytes at all and never raises.

Header helpers (safe strings, message ids, auto-submitted detection) are in ``headers``.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from switchboard_common.contract import Attachment
from switchboard_ingest_email.headers import (
    SURROGATES,
    clean_header,
    clean_text,
    is_auto_submitted,
    msg_ids,
    normalise_msg_id,
    raw_header,
)
from switchboard_ingest_email.text import html_to_text, tidy

MAX_ERRORS = 50
MAX_ERROR_LENGTH = 200
MAX_ATTACHMENTS = 500


class _CachedHeadersPolicy(EmailPolicy):
    """``policy.default`` that parses each distinct header value once.

    ``policy.default`` builds a structured header object on every access, and the parser
    and ``get_content_type`` access Content-Type over and over (measured: ~20 parses per
    message, most of the parsing time). Header objects are immutable, so sharing them is
    safe; the cache is bounded (entries and value length).
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        if len(value) > 4096:  # keep the cache small: rare long headers are parsed afresh
            return policy.default.header_fetch_parse(name, value)
        return _parse_header(name, value)


@functools.lru_cache(maxsize=256)
def _parse_header(name: str, value: str) -> Any:
    return policy.default.header_fetch_parse(name, value)


_PARSER = BytesParser(policy=_CachedHeadersPolicy())
_NON_ASCII = re.compile(rb"[\x80-\xff]")

# Labels that mail clients use but Python's codecs do not know, or where the label's
# usual meaning is a superset (as WHATWG's encoding standard maps them for the web).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-8-e": "iso-8859-8",
    "x-user-defined": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "unicode-1-1-utf-7": "utf-7",
    "windows-874": "cp874",
    "utf8": "utf-8",
}


@dataclass
class ParsedEmail:
    """What could be read from one message (mutable while parsing, then handed on)."""

    from_address: str | None = None
    from_name: str | None = None
    recipients: list[str] = field(default_factory=list)
    subject: str | None = None
    sent_at: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    auto_submitted: bool = False
    errors: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        """Record a parse problem (bounded in count and length, no duplicates)."""
        message = message[:MAX_ERROR_LENGTH]
        if message not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


# --------------------------------------------------------------------------- headers


def _header(msg: Message, name: str, parsed: ParsedEmail) -> Any:
    """The structured header object, or None; parse failures become parse errors."""
    try:
        value = msg.get(name)
    except Exception as error:  # noqa: BLE001 - any header parser failure is a parse error
        parsed.error(f"unreadable {name} header ({type(error).__name__})")
        return None
    defects = getattr(value, "defects", ())
    for defect in defects:
        parsed.error(f"{name} header: {type(defect).__name__}")
    return value


def _decoded_header(msg: Message, name: str, parsed: ParsedEmail) -> str | None:
    raw = raw_header(msg, name)
    if raw is None:
        return None
    # Undeclared 8-bit bytes: the structured parser would turn them into U+FFFD.
    value = None if SURROGATES.search(raw) else _header(msg, name, parsed)
    if value is None:
        try:
            value = str(make_header(decode_header(clean_text(raw))))
        except Exception:  # noqa: BLE001 - fall back to the undecoded text
            value = clean_text(raw)
    return clean_header(str(value))


def _addresses(msg: Message, name: str, parsed: ParsedEmail) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs of an address header."""
    value = _header(msg, name, parsed)
    pairs: list[tuple[str, str]] = []
    try:
        if value is not None and hasattr(value, "addresses"):
            pairs = [(a.display_name, a.addr_spec) for a in value.addresses]
        else:
            raw = raw_header(msg, name)
            pairs = getaddresses([raw]) if raw else []
    except Exception as error:  # noqa: BLE001 - a broken address list is a parse error
        parsed.error(f"unreadable {name} addresses ({type(error).__name__})")
        raw = raw_header(msg, name)
        pairs = getaddresses([raw]) if raw else []
    out = []
    for display, address in pairs:
        cleaned = clean_header(address).lower().strip("<> ")
        if "@" in cleaned and " " not in cleaned:
            out.append((clean_header(display or ""), cleaned))
    return out


def _parse_date(msg: Message, parsed: ParsedEmail) -> datetime | None:
    raw = raw_header(msg, "Date")
    if raw is None:
        return None
    try:
        moment = parsedate_to_datetime(clean_header(raw))
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed.error("unreadable Date header")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- bodies


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    label = charset.strip().strip('"').lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_text(data: bytes, charset: str | None, where: str, parsed: ParsedEmail) -> str:
    """Text of a part: its declared charset, or UTF-8, or Windows-1252; never raises."""
    codec = _codec(charset)
    if charset and codec is None:
        parsed.error(f"unknown charset {clean_header(charset)[:40]!r} in {where}")
    if codec is None or (codec == "cp1252" and _NON_ASCII.search(data)):
        # Undeclared, unknown or "ascii" with 8-bit bytes: UTF-8 is most likely.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            codec = "cp1252"
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        parsed.error(f"invalid {codec} bytes in {where}")
        return data.decode(codec, errors="replace")
    except Exception:  # noqa: BLE001 - some codecs fail in other ways on garbage
        parsed.error(f"undecodable {where}")
        return data.decode("utf-8", errors="replace")


def _payload_bytes(part: Message, parsed: ParsedEmail) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as error:  # noqa: BLE001 - a broken transfer encoding is a parse error
        parsed.error(f"undecodable {part.get_content_type()} part ({type(error).__name__})")
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", errors="surrogateescape")
    return b""


def _body_text(part: Message, parsed: ParsedEmail) -> str:
    ctype = part.get_content_type()
    text = decode_text(_payload_bytes(part, parsed), part.get_content_charset(), ctype, parsed)
    if ctype == "text/html":
        try:
            return html_to_text(text)
        except Exception:  # noqa: BLE001 - keep the markup rather than lose the text
            parsed.error("unreadable HTML body")
    return tidy(text)


def _find_body(msg: EmailMessage, parsed: ParsedEmail) -> Message | None:
    try:
        return msg.get_body(preferencelist=("plain", "html"))
    except Exception as error:  # noqa: BLE001 - fall back to no identifiable body
        parsed.error(f"no identifiable body ({type(error).__name__})")
        return None


# --------------------------------------------------------------------------- attachments


def attachment_kind(content_type: str) -> str:
    """Bounded category of an attachment (the ``Attachment.kind`` extension)."""
    maintype, _, subtype = content_type.partition("/")
    if maintype in ("image", "audio", "video"):
        return maintype
    if maintype == "message":
        return "message"
    documents = ("pdf", "msword", "rtf", "opendocument", "officedocument", "ms-excel", "csv")
    if maintype == "text" or any(d in subtype for d in documents):
        return "document"
    return "file"


def _attachment(
    part: Message, data: bytes, parsed: ParsedEmail, *, in_related: bool = False
) -> Attachment:
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001 - an unreadable filename is not worth losing the file
        parsed.error("unreadable attachment filename")
        filename = None
    content_type = clean_header(part.get_content_type())[:255] or "application/octet-stream"
    disposition = part.get_content_disposition()
    return Attachment(
        filename=clean_header(filename) if filename else None,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        kind=attachment_kind(content_type),
        # Embedded: said so, or referenced by Content-ID from the HTML (multipart/related).
        inline=disposition == "inline"
        or ("Content-ID" in part and (in_related or disposition is None)),
    )


def _message_part_bytes(part: Message, parsed: ParsedEmail) -> bytes:
    payload = part.get_payload()
    try:
        if isinstance(payload, list):
            return b"".join(m.as_bytes() for m in payload if isinstance(m, Message))
    except Exception:  # noqa: BLE001 - an embedded message that cannot be re-serialised
        parsed.error(f"unreadable {part.get_content_type()} part")
        return b""
    if isinstance(payload, str):
        return payload.encode("utf-8", errors="surrogateescape")
    return b""


def _collect_attachments(
    part: Message,
    body: Message | None,
    parsed: ParsedEmail,
    *,
    in_alternative: bool,
    in_related: bool = False,
) -> None:
    if len(parsed.attachments) >= MAX_ATTACHMENTS:
        return
    if part.get_content_maintype() == "message":
        # Nested messages (forwards, bounce copies, delivery reports) are one attachment.
        parsed.attachments.append(_attachment(part, _message_part_bytes(part, parsed), parsed))
        return
    if part.is_multipart():
        subtype = part.get_content_subtype()
        for sub in part.iter_parts() if isinstance(part, EmailMessage) else ():
            _collect_attachments(
                sub,
                body,
                parsed,
                in_alternative=in_alternative or subtype == "alternative",
                in_related=subtype == "related",
            )
        return
    if part is body:
        return
    if (
        in_alternative
        and part.get_content_type() in ("text/plain", "text/html")
        and part.get_content_disposition() != "attachment"
        and not part.get_param("name")
        and not part.get_param("filename", header="content-disposition")
    ):
        return  # another rendering of the body, not an attachment
    data = _payload_bytes(part, parsed)
    parsed.attachments.append(_attachment(part, data, parsed, in_related=in_related))


# --------------------------------------------------------------------------- entry point


def parse_email(raw: bytes, *, mail_from: str | None = None) -> ParsedEmail:
    """Parse one message. Total: returns for any input and never raises.

    ``mail_from`` is the SMTP envelope sender (``""`` for the null reverse-path, None when
    unknown, e.g. fetched by IMAP); it is the sender when the message has no usable From.
    """
    parsed = ParsedEmail()
    try:
        _parse_into(raw, mail_from, parsed)
    except Exception as error:  # noqa: BLE001 - the last guard: keep what is known, say why
        parsed.error(f"parser failure ({type(error).__name__})")
        if not parsed.text:
            parsed.text = tidy(decode_text(raw, None, "message", parsed))
    return parsed


def _parse_into(raw: bytes, mail_from: str | None, parsed: ParsedEmail) -> None:
    msg = _PARSER.parsebytes(raw)
    assert isinstance(msg, EmailMessage)  # noqa: S101 - policy.default always builds these

    senders = _addresses(msg, "From", parsed) or _addresses(msg, "Sender", parsed)
    if senders:
        parsed.from_name, parsed.from_address = senders[0]
        parsed.from_name = parsed.from_name or None
    else:
        parsed.error("no From address")
    recipients = _addresses(msg, "To", parsed) + _addresses(msg, "Cc", parsed)
    parsed.recipients = list(dict.fromkeys(address for _, address in recipients))[:100]
    parsed.subject = _decoded_header(msg, "Subject", parsed)
    parsed.sent_at = _parse_date(msg, parsed)
    parsed.message_id = normalise_msg_id(raw_header(msg, "Message-ID"))
    parsed.in_reply_to = normalise_msg_id(raw_header(msg, "In-Reply-To"))
    parsed.references = msg_ids(raw_header(msg, "References"))
    parsed.auto_submitted = is_auto_submitted(msg, parsed.from_address, mail_from)

    body = _find_body(msg, parsed)
    if body is not None:
        parsed.text = _body_text(body, parsed)
        _collect_attachments(msg, body, parsed, in_alternative=False)
    elif not msg.is_multipart() and msg.get_content_maintype() in ("text", "multipart"):
        # A multipart whose boundary is missing is a single blob: its text is all we have.
        parsed.text = tidy(_body_text_raw(msg, parsed))
    else:
        _collect_attachments(msg, body, parsed, in_alternative=False)

    for part in msg.walk():
        for defect in part.defects:
            parsed.error(type(defect).__name__)


def _body_text_raw(msg: Message, parsed: ParsedEmail) -> str:
    return decode_text(_payload_bytes(msg, parsed), msg.get_content_charset(), "body", parsed)
