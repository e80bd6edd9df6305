"""ingest-social's settings: contract names, dev-only secret defaults, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_common.settings import SettingsError
from switchboard_ingest_social.settings import IngestSocialSettings

pytestmark = pytest.mark.unit

SECRETS = ("META_APP_SECRET", "META_VERIFY_TOKEN", "X_CONSUMER_SECRET", "TELEGRAM_SECRET_TOKEN")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SECRETS, *(f"{s}_FILE" for s in SECRETS), "SWITCHBOARD_ENV"):
        monkeypatch.delenv(name, raising=False)
    for name in ("INGEST_SOCIAL_HTTP_PORT", "INGEST_SOCIAL_ACCOUNTS_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_outside_dev_every_missing_secret_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        IngestSocialSettings.load()
    for name in SECRETS:
        assert name in str(caught.value)


def test_dev_fills_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    settings = IngestSocialSettings.load()
    assert settings.http_port == 8002
    assert settings.meta_app_secret is not None
    assert settings.meta_app_secret.get_secret_value() == "dev-meta-app-secret"
    assert settings.service_name == "ingest-social"


def test_environment_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.setenv("INGEST_SOCIAL_HTTP_PORT", "9102")
    monkeypatch.setenv("INGEST_SOCIAL_ACCOUNTS_FILE", str(tmp_path / "a.yaml"))
    monkeypatch.setenv("INGEST_SOCIAL_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("INGEST_SOCIAL_UNKNOWN_ACCOUNTS", "ignore")
    settings = IngestSocialSettings.load()
    assert settings.http_port == 9102
    assert settings.accounts_file == tmp_path / "a.yaml"
    assert settings.max_body_bytes == 2048
    assert settings.publish_timeout_seconds == 2.5
    assert settings.unknown_accounts == "ignore"
    assert settings.telegram_secret_token is not None
    assert settings.telegram_secret_token.get_secret_value() == "value-of-TELEGRAM_SECRET_TOKEN"
    assert "value-of-META_APP_SECRET" not in repr(settings)


def test_invalid_limits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    monkeypatch.setenv("INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS", "0")
    with pytest.raises(SettingsError, match="INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS"):
        IngestSocialSettings.load()
    monkeypatch.delenv("INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS")
    monkeypatch.setenv("INGEST_SOCIAL_CRC_PER_MINUTE", "0")
    with pytest.raises(SettingsError, match="INGEST_SOCIAL_CRC_PER_MINUTE"):
        IngestSocialSettings.load()


def test_x_replies_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    monkeypatch.delenv("X_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("X_API_URL", raising=False)
    settings = IngestSocialSettings.load()
    assert (settings.x_access_token, settings.x_api_url) == (None, "https://api.x.com")
    monkeypatch.setenv("X_ACCESS_TOKEN", "value-of-X_ACCESS_TOKEN")
    monkeypatch.setenv("X_API_URL", "http://127.0.0.1:9")
    settings = IngestSocialSettings.load()
    assert settings.x_access_token is not None
    assert settings.x_access_token.get_secret_value() == "value-of-X_ACCESS_TOKEN"
    assert settings.x_api_url == "http://127.0.0.1:9"
    assert "value-of-X_ACCESS_TOKEN" not in repr(settings)
