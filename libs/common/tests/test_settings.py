from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field, SecretStr

from switchboard_common.settings import ServiceSettings, SettingsError, env

pytestmark = pytest.mark.unit


class WebhookSettings(ServiceSettings):
    service_name: ClassVar[str] = "ingest-social"
    dev_secret_defaults: ClassVar[dict[str, str]] = {"meta_app_secret": "dev-meta-secret"}

    meta_app_secret: SecretStr | None = Field(None, validation_alias=env("META_APP_SECRET"))
    http_port: int = Field(8002, validation_alias=env("INGEST_SOCIAL_HTTP_PORT"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SWITCHBOARD_ENV",
        "META_APP_SECRET",
        "META_APP_SECRET_FILE",
        "KAFKA_BOOTSTRAP_SERVERS",
        "MONGODB_URL",
        "SWITCHBOARD_TOPIC_PREFIX",
        "INGEST_SOCIAL_HTTP_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_contract_environment_names_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    settings = WebhookSettings.load()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.mongodb_url.get_secret_value() == "mongodb://localhost:27017"
    assert settings.mongodb_database == "switchboard"
    assert settings.topics.inbound == "support.inbound.v1"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("SWITCHBOARD_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("INGEST_SOCIAL_HTTP_PORT", "9002")
    settings = WebhookSettings.load()
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.topics.inbound == "staging.support.inbound.v1"
    assert settings.http_port == 9002


def test_outside_dev_a_missing_secret_stops_start_up_and_is_named() -> None:
    with pytest.raises(SettingsError, match="missing secrets: META_APP_SECRET"):
        WebhookSettings.load()


def test_dev_fills_missing_secrets_with_development_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    settings = WebhookSettings.load()
    assert settings.meta_app_secret is not None
    assert settings.meta_app_secret.get_secret_value() == "dev-meta-secret"


def test_secrets_can_come_from_mounted_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "meta_app_secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("META_APP_SECRET_FILE", str(secret))
    settings = WebhookSettings.load()
    assert settings.meta_app_secret is not None
    assert settings.meta_app_secret.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)


def test_an_unreadable_secret_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("META_APP_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match=r"META_APP_SECRET_FILE=.*: cannot read"):
        WebhookSettings.load()


def test_invalid_values_name_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    monkeypatch.setenv("INGEST_SOCIAL_HTTP_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="INGEST_SOCIAL_HTTP_PORT"):
        WebhookSettings.load()


def test_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    settings = WebhookSettings.load()
    with pytest.raises(ValueError, match="frozen"):
        settings.http_port = 1  # type: ignore[misc]
