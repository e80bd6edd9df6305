"""Fixtures of ingest-email's tests: the service in-process, SMTP senders, TLS files."""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard_devkit.inprocess import free_port, running
from switchboard_ingest_email.app import IngestEmail, build
from switchboard_ingest_email.settings import IngestEmailSettings

SUPPORT_DOMAIN = "support.example.com"


@dataclass(frozen=True)
class SmtpReply:
    """The server's answer to a whole transaction (or to the step that refused it)."""

    code: int
    message: str
    refused: dict[str, tuple[int, bytes]]


@dataclass
class RunningService:
    service: IngestEmail
    base_url: str
    smtp_port: int
    settings: IngestEmailSettings


SettingsFactory = Callable[..., IngestEmailSettings]


@pytest.fixture
def make_settings(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> SettingsFactory:
    """Settings for this test's servers, topics and database, plus ``env`` overrides."""

    def factory(**env: str) -> IngestEmailSettings:
        values = {
            **service_env,
            "SUPPORT_EMAIL_DOMAINS": SUPPORT_DOMAIN,
            "INGEST_EMAIL_TENANTS": f"{SUPPORT_DOMAIN}=acme",
            "INGEST_EMAIL_SMTP_PORT": str(free_port()),
            "INGEST_EMAIL_HTTP_PORT": str(free_port()),
            "INGEST_EMAIL_MAX_MESSAGE_BYTES": str(256 * 1024),
            **env,
        }
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        return IngestEmailSettings.load()

    return factory


@pytest.fixture
async def ingest_email(make_settings: SettingsFactory) -> AsyncIterator[RunningService]:
    """The service running in this test's loop against the real servers."""
    settings = make_settings()
    service = build(settings)
    async with running(service.runtime) as base_url:
        yield RunningService(service, base_url, settings.smtp_port, settings)


def send_mail(
    port: int,
    data: bytes,
    *,
    mail_from: str = "ana@example.com",
    rcpt_to: tuple[str, ...] = (f"help@{SUPPORT_DOMAIN}",),
    declare_size: bool = True,
    starttls_cafile: Path | None = None,
) -> SmtpReply:
    """Send like a mail server would (EHLO, MAIL FROM with SIZE, RCPT, DATA). Blocking:
    call it through ``asyncio.to_thread`` when the server runs in the test's loop."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.example.net", timeout=60) as client:
        client.ehlo()
        if starttls_cafile is not None:
            import ssl

            client.starttls(context=ssl.create_default_context(cafile=str(starttls_cafile)))
            client.ehlo()
        options = ["BODY=8BITMIME"]
        if declare_size:
            options.append(f"SIZE={len(data)}")
        code, message = client.mail(mail_from, options)
        if code != 250:
            client.rset()
            return SmtpReply(code, message.decode(), {})
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in rcpt_to:
            rcode, rmessage = client.rcpt(rcpt)
            if rcode not in (250, 251):
                refused[rcpt] = (rcode, rmessage)
        if len(refused) == len(rcpt_to):
            client.rset()
            first = next(iter(refused.values()))
            return SmtpReply(first[0], first[1].decode(), refused)
        code, message = client.data(data)
        return SmtpReply(code, message.decode(), refused)


@pytest.fixture
def smtp_send() -> Callable[..., SmtpReply]:
    """``send_mail`` (see its docstring)."""
    return send_mail


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0.0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture
def metric() -> Callable[..., float]:
    """``metric_value`` (see its docstring)."""
    return metric_value


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(  # noqa: S603 - a fixed command line, no user input
        [  # noqa: S607 - openssl from PATH, as on any Debian machine
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
