"""Pure normalisers: a provider's webhook payload in, ``MessageReceived`` events out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchboard_ingest_social.accounts import AccountDirectory
from switchboard_ingest_social.normalise.common import (
    Dropped,
    Inbound,
    MessageKind,
    Normalised,
)
from switchboard_ingest_social.normalise.messaging import OBJECTS as MESSAGING_OBJECTS
from switchboard_ingest_social.normalise.messaging import normalise_messaging
from switchboard_ingest_social.normalise.telegram import normalise_telegram
from switchboard_ingest_social.normalise.whatsapp import OBJECT as WHATSAPP_OBJECT
from switchboard_ingest_social.normalise.whatsapp import normalise_whatsapp
from switchboard_ingest_social.normalise.x import normalise_x

__all__ = [
    "Dropped",
    "Inbound",
    "MessageKind",
    "MetaEnvelope",
    "Normalised",
    "meta_provider",
    "normalise_meta",
    "normalise_telegram",
    "normalise_x",
]


class MetaEnvelope(BaseModel):
    """What every Meta webhook has: the object it is about and a list of entries."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    object: str = Field(min_length=1, max_length=64)
    entry: list[Any]


def meta_provider(payload: dict[str, Any]) -> str:
    """The metric label of a Meta webhook: its product, or ``meta`` when unknown."""
    obj = payload.get("object")
    if obj == WHATSAPP_OBJECT:
        return "whatsapp"
    if isinstance(obj, str) and obj in MESSAGING_OBJECTS:
        return MESSAGING_OBJECTS[obj].value
    return "meta"


def normalise_meta(
    payload: dict[str, Any], directory: AccountDirectory, received_at: datetime
) -> Normalised:
    """Normalise a Meta webhook (WhatsApp, Messenger or Instagram, by ``object``).

    Objects other than these three products (page feed, user, permissions) are
    counted as unknown and dropped. Raises ``pydantic.ValidationError`` if malformed.
    """
    obj = MetaEnvelope.model_validate(payload).object
    if obj == WHATSAPP_OBJECT:
        return normalise_whatsapp(payload, directory, received_at)
    if obj in MESSAGING_OBJECTS:
        return normalise_messaging(payload, directory, received_at)
    out = Normalised()
    out.drop("meta", Dropped.UNKNOWN_KIND)
    return out
