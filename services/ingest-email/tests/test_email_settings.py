"""Settings and the recipient policy: refuse to start rather than run as an open relay."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_common.settings import SettingsError
from switchboard_ingest_email.recipients import RecipientPolicy, parse_tenants, split_list
from switchboard_ingest_email.settings import IngestEmailSettings, parse_mailboxes

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SUPPORT_EMAIL_DOMAINS", "INGEST_EMAIL_ADDRESSES", "SUPPORT_EMAIL_ADDRESSES",
                 "INGEST_EMAIL_TENANTS", "INGEST_EMAIL_IMAP_MAILBOXES",
                 "INGEST_EMAIL_IMAP_MAILBOXES_FILE", "INGEST_EMAIL_TLS_CERTFILE",
                 "INGEST_EMAIL_TLS_KEYFILE", "INGEST_EMAIL_SENDER_AUTH",
                 "INGEST_EMAIL_AUTHSERV_IDS", "INGEST_EMAIL_DNS_RESOLVER"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_no_domain_and_no_address_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="open relay"):
        IngestEmailSettings.load()


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_EMAIL_DOMAINS", "support.example.com")
    settings = IngestEmailSettings.load()
    assert settings.smtp_port == 2525
    assert settings.http_port == 8001
    assert settings.max_message_bytes == 25 * 1024 * 1024
    assert settings.mailboxes == ()
    assert settings.service_name == "ingest-email"


def test_sender_check_defaults_to_dkim_and_trusting_an_mta_needs_its_authserv_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPPORT_EMAIL_DOMAINS", "support.example.com")
    settings = IngestEmailSettings.load()
    assert (settings.sender_auth, settings.dns_resolver) == ("dkim", "")
    monkeypatch.setenv("INGEST_EMAIL_SENDER_AUTH", "authentication-results")
    with pytest.raises(SettingsError, match="INGEST_EMAIL_AUTHSERV_IDS"):
        IngestEmailSettings.load()
    monkeypatch.setenv("INGEST_EMAIL_AUTHSERV_IDS", "mx.support.example.com")
    assert IngestEmailSettings.load().sender_auth == "authentication-results"
    monkeypatch.setenv("INGEST_EMAIL_DNS_RESOLVER", "[::1]:5353")
    assert IngestEmailSettings.load().dns_resolver == "[::1]:5353"
    monkeypatch.setenv("INGEST_EMAIL_DNS_RESOLVER", "dns.example.com")
    with pytest.raises(SettingsError, match="must be an IP address"):
        IngestEmailSettings.load()
    monkeypatch.delenv("INGEST_EMAIL_DNS_RESOLVER")
    monkeypatch.setenv("INGEST_EMAIL_SENDER_AUTH", "spf-maybe")
    with pytest.raises(SettingsError, match="INGEST_EMAIL_SENDER_AUTH"):
        IngestEmailSettings.load()


def test_explicit_addresses_alone_are_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_EMAIL_ADDRESSES", "Help@Acme.example, billing@acme.example")
    policy = IngestEmailSettings.load().recipient_policy
    assert policy.accepts("help@acme.example")
    assert not policy.accepts("sales@acme.example")


def test_certificate_without_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_EMAIL_DOMAINS", "support.example.com")
    monkeypatch.setenv("INGEST_EMAIL_TLS_CERTFILE", "/etc/cert.pem")
    with pytest.raises(SettingsError, match="go together"):
        IngestEmailSettings.load()


def test_policy_accepts_configured_domains_and_addresses_only() -> None:
    policy = RecipientPolicy.of(["support.example.com"], ["vip@partner.example"])
    assert policy.accepts("help@support.example.com")
    assert policy.accepts("<Help@SUPPORT.example.com>")
    assert policy.accepts("VIP@partner.example")
    assert not policy.accepts("other@partner.example")
    assert not policy.accepts("help@evil.support.example.com")  # no subdomains
    assert not policy.accepts("help@support.example.com.evil.org")
    assert not policy.accepts("@support.example.com")
    assert not policy.accepts("support.example.com")
    assert RecipientPolicy.of([]).empty


def test_tenants_by_address_first_then_domain() -> None:
    tenants = parse_tenants("support.example.com=acme, vip@support.example.com=gold")
    policy = RecipientPolicy.of(["support.example.com"], tenants=tenants)
    assert policy.tenant_for("vip@support.example.com") == "gold"
    assert policy.tenant_for("help@Support.Example.com") == "acme"
    assert policy.tenant_for("x@other.example") is None
    with pytest.raises(ValueError, match="domain-or-address=tenant"):
        parse_tenants("support.example.com")


def test_split_list() -> None:
    assert split_list(" A.com, b.com  a.com,,") == ("a.com", "b.com")
    assert split_list(None) == ()


def test_mailboxes_from_yaml_with_passwords_from_env_and_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("GMAIL_PW", "from-env")
    boxes = parse_mailboxes(
        f"""
mailboxes:
  - name: gmail
    host: imap.gmail.com
    username: support@acme.example
    password_env: GMAIL_PW
  - name: exchange
    host: outlook.office365.com
    username: svc-support
    account: Help@Acme.example
    password_file: {secret}
    move_to: Processed
    idle: false
"""
    )
    gmail, exchange = boxes
    assert gmail.password is not None
    assert gmail.password.get_secret_value() == "from-env"
    assert gmail.support_address == "support@acme.example"
    assert gmail.port == 993
    assert exchange.password is not None
    assert exchange.password.get_secret_value() == "from-file"
    assert exchange.support_address == "help@acme.example"


def test_mailbox_configuration_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="missing secret NOPE"):
        parse_mailboxes('[{"name": "a", "host": "h", "username": "a@b.c", "password_env": "NOPE"}]')
    with pytest.raises(SettingsError, match="set `account`"):
        parse_mailboxes('[{"name": "a", "host": "h", "username": "svc", "password_env": "X"}]')
    monkeypatch.setenv("X", "pw")
    with pytest.raises(SettingsError, match="unique"):
        parse_mailboxes(
            '[{"name": "a", "host": "h", "username": "a@b.c", "password_env": "X"},'
            ' {"name": "a", "host": "h", "username": "a@b.c", "password_env": "X"}]'
        )


def test_mailboxes_file_is_read_through_the_file_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "mailboxes.json"
    config.write_text('[{"name": "m", "host": "h", "username": "a@b.c", "password_env": "P"}]')
    monkeypatch.setenv("SUPPORT_EMAIL_DOMAINS", "b.c")
    monkeypatch.setenv("INGEST_EMAIL_IMAP_MAILBOXES_FILE", str(config))
    monkeypatch.setenv("P", "pw")
    assert [b.name for b in IngestEmailSettings.load().mailboxes] == ["m"]
