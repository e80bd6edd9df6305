"""Sender identities: one canonical string per sender, built from the event (pure).

The forms are fixed with the ingest services and used for inbound record keys and for
``GET /customers?identity=``:

- ``email:<lower-cased address>``
- ``whatsapp:<E.164 phone>``
- ``x:<user id>``
- ``messenger:<page id>:<psid>``, ``instagram:<ig account id>:<igsid>``,
  ``telegram:<bot id>:<user id>``, ``webchat:<site id>:<visitor id>`` (ids that only mean
  something within one account).

A web chat visitor the embedding site vouches for (an HMAC of their email, checked by the
webchat service) writes as ``email``: their identity is that address, the same customer
as their mail.

The identity is always built from the event's ``sender`` and ``account``, never from the
record key, so a producer's key mistake cannot file a message under someone else.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from switchboard_common.contract import Channel, MessageReceived, SenderKind

IdentityKind = Literal["email", "whatsapp", "x", "messenger", "instagram", "telegram", "webchat"]


class IdentityError(ValueError):
    """A sender or a query that does not make a valid identity; the message says why."""


@dataclass(frozen=True)
class _Form:
    kind: IdentityKind
    sender_kind: SenderKind
    account_scoped: bool


_FORMS: dict[Channel, _Form] = {
    Channel.EMAIL: _Form("email", SenderKind.EMAIL, account_scoped=False),
    Channel.WHATSAPP: _Form("whatsapp", SenderKind.PHONE, account_scoped=False),
    Channel.X: _Form("x", SenderKind.X_USER_ID, account_scoped=False),
    Channel.MESSENGER: _Form("messenger", SenderKind.PSID, account_scoped=True),
    Channel.INSTAGRAM: _Form("instagram", SenderKind.IGSID, account_scoped=True),
    Channel.TELEGRAM: _Form("telegram", SenderKind.TELEGRAM_USER_ID, account_scoped=True),
    Channel.WEBCHAT: _Form("webchat", SenderKind.WEBCHAT_VISITOR, account_scoped=True),
}
#: Sender kinds a channel takes besides its own: a vouched web chat visitor is an email.
_ALSO: dict[Channel, dict[SenderKind, _Form]] = {
    Channel.WEBCHAT: {SenderKind.EMAIL: _FORMS[Channel.EMAIL]},
}
_BY_KIND: dict[str, _Form] = {form.kind: form for form in _FORMS.values()}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_NOISE = re.compile(r"[\s\-().]")
_PLAIN_ID = re.compile(r"^[^\s:]+$")


def normalise_email(value: str) -> str:
    """Lower-cased address without display decorations; raises ``IdentityError``."""
    address = value.strip()
    if address.lower().startswith("mailto:"):
        address = address[len("mailto:") :]
    address = address.strip().strip("<>").strip().lower()
    if not _EMAIL.match(address):
        raise IdentityError(f"not an email address: {len(value)} characters")
    return address


def normalise_phone(value: str) -> str:
    """E.164 (``+`` and 7-15 digits). Spaces, dashes, dots and brackets are dropped; a
    bare international number (as WhatsApp's ``wa_id``) or a ``00`` prefix gets its ``+``.
    Raises ``IdentityError`` for anything else."""
    phone = _PHONE_NOISE.sub("", value.strip())
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    elif phone.isdigit():
        phone = "+" + phone
    if not _E164.match(phone):
        raise IdentityError("not an E.164 phone number")
    return phone


def _plain_id(value: str, what: str) -> str:
    text = value.strip()
    if not _PLAIN_ID.match(text):
        raise IdentityError(f"{what} must be non-empty without spaces or ':'")
    return text


def identity_of(message: MessageReceived) -> str:
    """The canonical identity of a message's sender; raises ``IdentityError`` when the
    sender kind does not belong on the channel or an account-scoped id lacks its account."""
    form = _ALSO.get(message.channel, {}).get(message.sender.kind) or _FORMS[message.channel]
    if message.sender.kind != form.sender_kind:
        raise IdentityError(
            f"sender kind {message.sender.kind.value!r} does not belong on channel "
            f"{message.channel.value!r} (expected {form.sender_kind.value!r})"
        )
    value = message.sender.value
    if form.kind == "email":
        return f"email:{normalise_email(value)}"
    if form.kind == "whatsapp":
        return f"whatsapp:{normalise_phone(value)}"
    user = _plain_id(value, "sender id")
    if not form.account_scoped:
        return f"{form.kind}:{user}"
    if message.account is None:
        raise IdentityError(f"{form.kind} sender ids are scoped to an account: account missing")
    return f"{form.kind}:{_plain_id(message.account, 'account')}:{user}"


#: ``linked_by`` of an identity first seen on email whose sender was not authenticated:
#: it got a customer of its own and is never evidence for linking or merging.
UNAUTHENTICATED = "unauthenticated"


def may_link(message: MessageReceived) -> bool:
    """Whether this message may link its sender's identity to an existing customer.

    Email only when its sender is authenticated (DMARC-aligned DKIM/SPF, see ingest-email):
    anyone can write any From, so unauthenticated mail must not pull a customer's profile,
    tier and history onto whoever wrote it. Other channels' senders are named by the
    provider's signed webhook.
    """
    return message.channel != Channel.EMAIL or message.sender_authenticated is True


def parse_identity(text: str) -> str:
    """Normalise an identity given by a person (a query parameter, an admin request).

    Accepts the canonical forms, case-insensitive kinds, and lenient spelling of emails
    and phones. Raises ``IdentityError`` with what is expected.
    """
    kind, sep, rest = text.strip().partition(":")
    form = _BY_KIND.get(kind.lower())
    if not sep or form is None:
        raise IdentityError(
            "identity must be <kind>:<value> with kind one of " + ", ".join(sorted(_BY_KIND))
        )
    if form.kind == "email":
        return f"email:{normalise_email(rest)}"
    if form.kind == "whatsapp":
        return f"whatsapp:{normalise_phone(rest)}"
    if not form.account_scoped:
        return f"{form.kind}:{_plain_id(rest, 'user id')}"
    account, sep, user = rest.partition(":")
    if not sep:
        raise IdentityError(f"{form.kind} identities are {form.kind}:<account id>:<user id>")
    return f"{form.kind}:{_plain_id(account, 'account')}:{_plain_id(user, 'user id')}"


def profile_key_for(identity: str) -> tuple[str, Literal["verified_email", "phone"]] | None:
    """The profile key that links a new identity to an existing customer, with its rule.

    An email identity links through a verified email of a profile; a WhatsApp identity is a
    phone number, so a phone known from a profile links it. Other identities never link
    automatically.
    """
    kind, _, value = identity.partition(":")
    if kind == "email":
        return f"email:{value}", "verified_email"
    if kind == "whatsapp":
        return f"phone:{value}", "phone"
    return None


def identities_for_profile_key(key: str) -> tuple[str, ...]:
    """The identities a profile key stands for (inverse of ``profile_key_for``)."""
    kind, _, value = key.partition(":")
    if kind == "email":
        return (f"email:{value}",)
    if kind == "phone":
        return (f"whatsapp:{value}",)
    return ()


def pseudonym(identity: str) -> str:
    """A short stable hash of an identity, for keys and state that need not carry it."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]
