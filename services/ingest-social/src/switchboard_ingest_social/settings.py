"""ingest-social's settings: one frozen object, built once at start (``load``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from switchboard_common.settings import ServiceSettings, env


class IngestSocialSettings(ServiceSettings):
    """Environment of ingest-social (the common variables are in the root README).

    The four provider secrets are the contract's names. Outside ``SWITCHBOARD_ENV=dev``
    a missing one stops start-up and is named; each may come from ``NAME_FILE``.
    """

    service_name: ClassVar[str] = "ingest-social"
    dev_secret_defaults: ClassVar[dict[str, str]] = {
        "meta_app_secret": "dev-meta-app-secret",
        "meta_verify_token": "dev-meta-verify-token",
        "x_consumer_secret": "dev-x-consumer-secret",
        "telegram_secret_token": "dev-telegram-secret-token",
    }

    http_port: int = Field(8002, ge=0, le=65535, validation_alias=env("INGEST_SOCIAL_HTTP_PORT"))

    meta_app_secret: SecretStr | None = Field(None, validation_alias=env("META_APP_SECRET"))
    meta_verify_token: SecretStr | None = Field(None, validation_alias=env("META_VERIFY_TOKEN"))
    x_consumer_secret: SecretStr | None = Field(None, validation_alias=env("X_CONSUMER_SECRET"))
    telegram_secret_token: SecretStr | None = Field(
        None, validation_alias=env("TELEGRAM_SECRET_TOKEN")
    )

    #: Replies (``replies.py``): the access token WhatsApp replies are sent with, and the
    #: token of the bot Telegram replies are sent from; an account of the accounts file
    #: may name its own (``send_token_env``). With neither, that channel's replies wait
    #: on their topic.
    whatsapp_access_token: SecretStr | None = Field(
        None, validation_alias=env("WHATSAPP_ACCESS_TOKEN")
    )
    telegram_bot_token: SecretStr | None = Field(None, validation_alias=env("TELEGRAM_BOT_TOKEN"))
    #: The page access token Messenger and Instagram replies are sent with (a page of
    #: its own: the accounts file's ``send_token_env``).
    meta_page_access_token: SecretStr | None = Field(
        None, validation_alias=env("META_PAGE_ACCESS_TOKEN")
    )
    #: What X replies are sent with, as the business account the customer wrote to (an
    #: account of its own: the accounts file's ``send_token_env``): ``<access token>:
    #: <access token secret>`` for OAuth 1.0a (with X_CONSUMER_KEY and X_CONSUMER_SECRET;
    #: these do not expire), or an OAuth 2.0 user-context token (``dm.write``; X expires
    #: it after two hours and Switchboard does not refresh it).
    x_access_token: SecretStr | None = Field(None, validation_alias=env("X_ACCESS_TOKEN"))
    #: The X app's consumer (API) key; its secret is X_CONSUMER_SECRET.
    x_consumer_key: str | None = Field(None, validation_alias=env("X_CONSUMER_KEY"))
    meta_graph_api_url: str = Field(
        "https://graph.facebook.com", validation_alias=env("META_GRAPH_API_URL")
    )
    meta_graph_api_version: str = Field(
        "v21.0", pattern=r"^v\d+\.\d+$", validation_alias=env("META_GRAPH_API_VERSION")
    )
    telegram_api_url: str = Field(
        "https://api.telegram.org", validation_alias=env("TELEGRAM_API_URL")
    )
    x_api_url: str = Field("https://api.x.com", validation_alias=env("X_API_URL"))
    #: Seconds to wait for a provider's answer to one send.
    send_timeout_seconds: float = Field(
        15.0, gt=0, le=120, validation_alias=env("INGEST_SOCIAL_SEND_TIMEOUT_SECONDS")
    )
    #: First retry delay after a provider did not take a reply (then 4 and 16 times it).
    outbound_retry_seconds: float = Field(
        1.0, ge=0, le=60, validation_alias=env("INGEST_SOCIAL_OUTBOUND_RETRY_SECONDS")
    )
    replies_batch_max_records: int = Field(
        100, ge=1, le=1000, validation_alias=env("INGEST_SOCIAL_REPLIES_BATCH_MAX_RECORDS")
    )

    #: YAML file mapping provider accounts to tenants and per-account secrets (README).
    accounts_file: Path | None = Field(None, validation_alias=env("INGEST_SOCIAL_ACCOUNTS_FILE"))
    #: What to do with a verified webhook for an account the accounts file does not list:
    #: ``accept`` (publish with ``tenant`` null) or ``ignore`` (count and drop).
    unknown_accounts: Literal["accept", "ignore"] = Field(
        "accept", validation_alias=env("INGEST_SOCIAL_UNKNOWN_ACCOUNTS")
    )
    #: Largest webhook body accepted; bigger ones get 413 without being read to the end.
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        validation_alias=env("INGEST_SOCIAL_MAX_BODY_BYTES"),
    )
    #: Seconds to wait for Kafka's acknowledgement of a POST's messages before answering 503.
    publish_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias=env("INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS")
    )
    #: X CRC checks answered per minute to one client address (burst: as many at once);
    #: X itself checks at registration, hourly and when asked. Over it: 429.
    crc_per_client_per_minute: int = Field(
        10, ge=1, le=100_000, validation_alias=env("INGEST_SOCIAL_CRC_PER_CLIENT_PER_MINUTE")
    )
    #: X CRC checks answered per minute in total, whoever asks. Over it: 429.
    crc_per_minute: int = Field(
        60, ge=1, le=1_000_000, validation_alias=env("INGEST_SOCIAL_CRC_PER_MINUTE")
    )
