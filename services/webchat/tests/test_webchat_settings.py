"""webchat's settings: the contract's names, secrets and origins required outside dev."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_common.settings import SettingsError
from switchboard_webchat.settings import DEV_ORIGINS, WebchatSettings

pytestmark = pytest.mark.unit

NAMES = (
    "SWITCHBOARD_ENV",
    "WEBCHAT_ALLOWED_ORIGINS",
    "WEBCHAT_IDENTITY_SECRET",
    "WEBCHAT_TOKEN_SECRET",
    "WEBCHAT_HTTP_PORT",
    "WEBCHAT_SITE_ID",
    "WEBCHAT_EMAIL_FALLBACK_SECONDS",
    "WEBCHAT_EMAIL_FALLBACK_FROM",
)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


def test_dev_has_defaults_for_secrets_and_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    settings = WebchatSettings.load()
    assert settings.http_port == 8005
    assert settings.site_id == "default"
    assert settings.allowed_origins == DEV_ORIGINS
    assert settings.token_secret is not None
    assert settings.max_message_chars == 10_000


def test_outside_dev_the_secrets_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBCHAT_ALLOWED_ORIGINS", "https://shop.example")
    with pytest.raises(SettingsError, match="WEBCHAT_IDENTITY_SECRET"):
        WebchatSettings.load()


def test_outside_dev_the_origins_are_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from a mounted file\n")
    monkeypatch.setenv("WEBCHAT_IDENTITY_SECRET_FILE", str(secret))
    monkeypatch.setenv("WEBCHAT_TOKEN_SECRET", "t")
    with pytest.raises(SettingsError, match="WEBCHAT_ALLOWED_ORIGINS"):
        WebchatSettings.load()
    monkeypatch.setenv("WEBCHAT_ALLOWED_ORIGINS", " https://shop.example/ , https://b.example")
    settings = WebchatSettings.load()
    assert settings.allowed_origins == ("https://shop.example", "https://b.example")
    assert settings.identity_secret is not None
    assert settings.identity_secret.get_secret_value() == "from a mounted file"


def test_a_site_id_is_one_word(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    monkeypatch.setenv("WEBCHAT_SITE_ID", "shop/1")
    with pytest.raises(SettingsError, match="WEBCHAT_SITE_ID"):
        WebchatSettings.load()


def test_the_email_fallback_needs_the_address_it_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_ENV", "dev")
    assert WebchatSettings.load().email_fallback_seconds is None  # off by default
    monkeypatch.setenv("WEBCHAT_EMAIL_FALLBACK_SECONDS", "300")
    with pytest.raises(SettingsError, match="WEBCHAT_EMAIL_FALLBACK_FROM"):
        WebchatSettings.load()
    monkeypatch.setenv("WEBCHAT_EMAIL_FALLBACK_FROM", "support@shop.example")
    assert WebchatSettings.load().email_fallback_seconds == 300
