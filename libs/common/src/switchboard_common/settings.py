"""One settings base for every service (pydantic-settings).

Names of environment variables are those of CONTRACT.md; everything Switchboard adds is
prefixed ``SWITCHBOARD_`` or named after the service. A service subclasses
``ServiceSettings``, builds it once at start (``Settings.load()``) and passes it down;
nothing reads the environment anywhere else.

Secrets come from the environment or from mounted files: for any variable ``NAME``,
``NAME_FILE=/run/secrets/name`` reads the value from that file (Docker and Kubernetes
secrets). Development defaults for secrets exist only when ``SWITCHBOARD_ENV=dev``;
otherwise ``require_secrets`` refuses to start and names what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from switchboard_common.contract.topics import TopicNames


def env(*names: str) -> AliasChoices:
    """Read a field from the first of these environment variables."""
    return AliasChoices(*names)


class FileEnvSource(PydanticBaseSettingsSource):
    """``NAME_FILE`` holds the path of a file whose content is the value of ``NAME``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in _env_names(field, field_name):
            path = os.environ.get(f"{name}_FILE") or os.environ.get(f"{name.lower()}_file")
            if path:
                try:
                    return Path(path).read_text(encoding="utf-8").strip(), field_name, False
                except OSError as error:
                    raise ValueError(f"{name}_FILE={path}: cannot read ({error})") from error
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


def _env_names(field: FieldInfo, field_name: str) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias.upper()]
    return [field_name.upper()]


class SettingsError(RuntimeError):
    """Settings are missing or invalid; the message says which and how to fix it."""


class ServiceSettings(BaseSettings):
    """What every Switchboard service is configured with."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        env_ignore_empty=True,
    )

    #: The service's name, as in ``ce_source`` and logs; set by each subclass.
    service_name: ClassVar[str] = "switchboard"
    #: Secret fields that have development defaults (only used when env is dev).
    dev_secret_defaults: ClassVar[dict[str, str]] = {}

    environment: Literal["dev", "test", "production"] = Field(
        "production", validation_alias=env("SWITCHBOARD_ENV")
    )
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", validation_alias=env("KAFKA_BOOTSTRAP_SERVERS")
    )
    mongodb_url: SecretStr = Field(
        SecretStr("mongodb://localhost:27017"), validation_alias=env("MONGODB_URL")
    )
    mongodb_database: str = Field("switchboard", validation_alias=env("MONGODB_DATABASE"))
    topic_prefix: str = Field("", validation_alias=env("SWITCHBOARD_TOPIC_PREFIX"))
    http_host: str = Field("127.0.0.1", validation_alias=env("SWITCHBOARD_HTTP_HOST"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=env("SWITCHBOARD_LOG_LEVEL")
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias=env("SWITCHBOARD_LOG_FORMAT")
    )

    # Kafka security (all optional; PLAINTEXT when unset).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=env("KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", validation_alias=env("KAFKA_SASL_MECHANISM")
    )
    kafka_sasl_username: str | None = Field(None, validation_alias=env("KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias=env("KAFKA_SASL_PASSWORD"))
    kafka_ssl_cafile: Path | None = Field(None, validation_alias=env("KAFKA_SSL_CAFILE"))
    kafka_ssl_certfile: Path | None = Field(None, validation_alias=env("KAFKA_SSL_CERTFILE"))
    kafka_ssl_keyfile: Path | None = Field(None, validation_alias=env("KAFKA_SSL_KEYFILE"))
    # Producer tuning.
    kafka_linger_ms: int = Field(5, ge=0, le=1000, validation_alias=env("KAFKA_LINGER_MS"))
    kafka_compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "lz4", validation_alias=env("KAFKA_COMPRESSION")
    )

    #: Longest wait for one MongoDB reply: a hung server fails the operation (a transient
    #: error: the batch is retried, then redelivered) instead of blocking a consumer.
    mongodb_timeout_seconds: float = Field(
        20.0, gt=0, le=600, validation_alias=env("SWITCHBOARD_MONGODB_TIMEOUT_SECONDS")
    )
    #: A consumer with work pending and no batch finished for this long is stalled:
    #: ``/healthz`` fails so the replica is restarted.
    consumer_stall_seconds: float = Field(
        300.0, gt=0, validation_alias=env("SWITCHBOARD_CONSUMER_STALL_SECONDS")
    )
    #: How often consumer lag is read from the broker.
    consumer_lag_interval_seconds: float = Field(
        15.0, gt=0, le=3600, validation_alias=env("SWITCHBOARD_CONSUMER_LAG_INTERVAL_SECONDS")
    )

    # MongoDB TLS beyond what the URL can say (the URL may also carry tls=true etc.).
    mongodb_tls_ca_file: Path | None = Field(None, validation_alias=env("MONGODB_TLS_CA_FILE"))
    mongodb_tls_certificate_key_file: Path | None = Field(
        None, validation_alias=env("MONGODB_TLS_CERTIFICATE_KEY_FILE")
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: env or mounted files only
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileEnvSource(settings_cls), file_secret_settings)

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build the settings from the environment; raises ``SettingsError`` with clear text."""
        try:
            settings = cls(**overrides)
        except ValidationError as error:
            problems = "; ".join(
                f"{_describe_loc(cls, e['loc'])}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise SettingsError(f"{cls.service_name}: invalid settings: {problems}") from None
        return settings.with_dev_secrets()

    def with_dev_secrets(self) -> Self:
        """Fill unset secrets with development defaults when (and only when) env is dev,
        then refuse to continue if any secret is still missing."""
        missing = [name for name in self.dev_secret_defaults if getattr(self, name) is None]
        if missing and self.environment == "dev":
            filled = {n: SecretStr(self.dev_secret_defaults[n]) for n in missing}
            return self.model_copy(update=filled)
        if missing:
            names = ", ".join(_env_label(type(self), n) for n in missing)
            raise SettingsError(
                f"{self.service_name}: missing secrets: {names}. Set them in the environment "
                "or as NAME_FILE pointing at a mounted file (development defaults are only "
                "used with SWITCHBOARD_ENV=dev)."
            )
        return self

    @property
    def topics(self) -> TopicNames:
        """Deployed topic names (contract names behind ``topic_prefix``)."""
        return TopicNames(self.topic_prefix)


def _env_label(cls: type[BaseSettings], field_name: str) -> str:
    field = cls.model_fields.get(field_name)
    if field is None:
        return field_name
    return "/".join(_env_names(field, field_name))


def _describe_loc(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "settings"
    head = str(loc[0])
    for name, field in cls.model_fields.items():
        if head == name or head.upper() in _env_names(field, name):
            return _env_label(cls, name)
    return head
