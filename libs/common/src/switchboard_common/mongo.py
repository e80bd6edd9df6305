"""MongoDB client factory: PyMongo's native async client (Motor is deprecated)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.settings import ServiceSettings

Document = dict[str, Any]


def make_mongo_client(settings: ServiceSettings, **overrides: Any) -> AsyncMongoClient[Document]:
    """An ``AsyncMongoClient`` for the configured URL, with time-zone-aware datetimes.

    Connecting is lazy: the first operation (or ``/readyz``) reaches the server. TLS and
    credentials come from the URL or from the ``MONGODB_TLS_*`` settings. Every reply is
    awaited at most ``mongodb_timeout_seconds`` (``NetworkTimeout``, a transient error).
    """
    options: dict[str, Any] = {
        "appname": f"switchboard-{settings.service_name}",
        "tz_aware": True,
        "serverSelectionTimeoutMS": 5000,
        "connectTimeoutMS": 5000,
        # Without it a server that accepts but never answers blocks the caller forever.
        "socketTimeoutMS": int(settings.mongodb_timeout_seconds * 1000),
        "retryWrites": True,
    }
    if settings.mongodb_tls_ca_file:
        options["tls"] = True
        options["tlsCAFile"] = str(settings.mongodb_tls_ca_file)
    if settings.mongodb_tls_certificate_key_file:
        options["tls"] = True
        options["tlsCertificateKeyFile"] = str(settings.mongodb_tls_certificate_key_file)
    options.update(overrides)
    return AsyncMongoClient(settings.mongodb_url.get_secret_value(), **options)


def database(
    client: AsyncMongoClient[Document], settings: ServiceSettings
) -> AsyncDatabase[Document]:
    """The service's database."""
    return client[settings.mongodb_database]
