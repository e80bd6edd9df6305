"""webchat's settings: one frozen object, built once at start (``load``)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from switchboard_common.settings import ServiceSettings, SettingsError, env

#: Origins the widget may be embedded from in development (its own demo page).
DEV_ORIGINS = ("http://127.0.0.1:8005", "http://localhost:8005")


class WebchatSettings(ServiceSettings):
    """Environment of webchat (the common variables are in the root README).

    Outside ``SWITCHBOARD_ENV=dev`` both secrets and ``WEBCHAT_ALLOWED_ORIGINS`` are
    required; each secret may come from ``NAME_FILE``.
    """

    service_name: ClassVar[str] = "webchat"
    dev_secret_defaults: ClassVar[dict[str, str]] = {
        "identity_secret": "dev-webchat-identity-secret",
        "token_secret": "dev-webchat-token-secret",
    }

    http_port: int = Field(8005, ge=0, le=65535, validation_alias=env("WEBCHAT_HTTP_PORT"))

    #: Origins (``scheme://host[:port]``) whose pages may open the socket: the shop's
    #: own sites. Comma-separated; required outside dev.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=env("WEBCHAT_ALLOWED_ORIGINS")
    )
    #: The site the widget serves: the ``account`` of its messages and replies.
    site_id: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        validation_alias=env("WEBCHAT_SITE_ID"),
    )
    #: The site's secret for identity verification: the shop's server signs a signed-in
    #: customer's email with it (``data-user-hash``).
    identity_secret: SecretStr | None = Field(None, validation_alias=env("WEBCHAT_IDENTITY_SECRET"))
    #: Signs the visitor tokens the widget keeps (never leaves the service).
    token_secret: SecretStr | None = Field(None, validation_alias=env("WEBCHAT_TOKEN_SECRET"))
    #: Longest message a visitor may send (the router's web chat limit).
    max_message_chars: int = Field(
        10_000, ge=1, le=10_000, validation_alias=env("WEBCHAT_MAX_MESSAGE_CHARS")
    )
    #: Largest WebSocket frame read; a bigger one closes the socket (1009).
    max_frame_bytes: int = Field(
        64 * 1024, ge=1024, le=1024 * 1024, validation_alias=env("WEBCHAT_MAX_FRAME_BYTES")
    )
    #: Messages one visitor may send at once, then one per ``visitor_interval``.
    visitor_burst: int = Field(10, ge=1, le=10_000, validation_alias=env("WEBCHAT_VISITOR_BURST"))
    visitor_per_second: float = Field(
        1.0, gt=0, le=1000, validation_alias=env("WEBCHAT_VISITOR_PER_SECOND")
    )
    #: Messages from one client address at once (an office behind one address), then
    #: this many a second.
    ip_burst: int = Field(60, ge=1, le=100_000, validation_alias=env("WEBCHAT_IP_BURST"))
    ip_per_second: float = Field(
        10.0, gt=0, le=10_000, validation_alias=env("WEBCHAT_IP_PER_SECOND")
    )
    #: Open sockets per client address in one replica.
    max_connections_per_ip: int = Field(
        20, ge=1, le=10_000, validation_alias=env("WEBCHAT_MAX_CONNECTIONS_PER_IP")
    )
    #: Seconds a new socket has to say hello before it is closed.
    hello_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias=env("WEBCHAT_HELLO_TIMEOUT_SECONDS")
    )
    #: How often each replica looks for replies stored by the others.
    poll_interval_seconds: float = Field(
        1.0, gt=0, le=60, validation_alias=env("WEBCHAT_POLL_INTERVAL_SECONDS")
    )
    #: Seconds to wait for Kafka's acknowledgement of a message before ``unavailable``.
    publish_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias=env("WEBCHAT_PUBLISH_TIMEOUT_SECONDS")
    )
    #: First retry delay of a reply the mailbox did not take (then 4 and 16 times it).
    outbound_retry_seconds: float = Field(
        1.0, ge=0, le=60, validation_alias=env("WEBCHAT_OUTBOUND_RETRY_SECONDS")
    )
    replies_batch_max_records: int = Field(
        100, ge=1, le=1000, validation_alias=env("WEBCHAT_REPLIES_BATCH_MAX_RECORDS")
    )

    #: Off unless set: a reply to a vouched visitor (one with an email) that no widget
    #: has shown within this many seconds also goes to them by email.
    email_fallback_seconds: float | None = Field(
        None, gt=0, le=7 * 24 * 3600, validation_alias=env("WEBCHAT_EMAIL_FALLBACK_SECONDS")
    )
    #: The support address those emails come from (where the customer's answer goes);
    #: required with the fallback.
    email_fallback_from: str | None = Field(
        None,
        pattern=r"^[^@\s]+@[^@\s]+$",
        validation_alias=env("WEBCHAT_EMAIL_FALLBACK_FROM"),
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            # As browsers send them: scheme and host lower-case, no trailing slash.
            return tuple(o.strip().rstrip("/").lower() for o in value.split(",") if o.strip())
        return value

    def with_dev_secrets(self) -> WebchatSettings:
        """Secrets as the base class fills them; then the dev origins, only in dev."""
        if self.email_fallback_seconds is not None and self.email_fallback_from is None:
            raise SettingsError(
                f"{self.service_name}: WEBCHAT_EMAIL_FALLBACK_SECONDS needs "
                "WEBCHAT_EMAIL_FALLBACK_FROM, the support address the emails come from"
            )
        settings = super().with_dev_secrets()
        if settings.allowed_origins:
            return settings
        if settings.environment == "dev":
            return settings.model_copy(update={"allowed_origins": DEV_ORIGINS})
        raise SettingsError(
            f"{self.service_name}: WEBCHAT_ALLOWED_ORIGINS is not set: name the origins "
            "(https://shop.example.com,...) whose pages embed the widget"
        )
