"""Fixtures of ingest-email's tests: the service in-process, SMTP senders, TLS files."""

from __future__ import annotations

import base64
import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.servers.local import port_open
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
    smtputf8: bool = False,
) -> SmtpReply:
    """Send like a mail server would (EHLO, MAIL FROM with SIZE, RCPT, DATA). Blocking:
    call it through ``asyncio.to_thread`` when the server runs in the test's loop."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.example.net", timeout=60) as client:
        client.ehlo()
        if starttls_cafile is not None:
            client.starttls(context=ssl.create_default_context(cafile=str(starttls_cafile)))
            client.ehlo()
        options = ["BODY=8BITMIME"]
        if declare_size:
            options.append(f"SIZE={len(data)}")
        if smtputf8:
            options.append("SMTPUTF8")
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


@dataclass(frozen=True)
class Dovecot:
    """A private Dovecot IMAP server (IMAPS on 127.0.0.1) with one passwd-file user."""

    port: int
    cafile: Path
    username: str
    password: str

    def client(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.cafile))
        client = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=30)
        client.login(self.username, self.password)
        return client


@pytest.fixture
def dovecot(tls_files: tuple[Path, Path]) -> Iterator[Dovecot]:
    """Dovecot from Debian (``dovecot-imapd``) on a free port with its own configuration,
    state and mail directories, started for this test and stopped afterwards."""
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(binary).exists():
        raise RuntimeError(
            "dovecot missing: Debian package dovecot-imapd; `make apt-test` installs it"
        )
    cert, key = tls_files
    # Not under pytest's 0700 temp root: Dovecot's unprivileged users must reach the files.
    root = Path(tempfile.mkdtemp(prefix="switchboard-dovecot-"))
    root.chmod(0o755)
    port = free_port()
    username, password = "support@support.example.com", "imap-secret"
    if os.geteuid() == 0:
        internal_user, login_user = "dovecot", "dovenull"
        mail_uid = pwd.getpwnam("dovecot").pw_uid
    else:  # an unprivileged run: everything as the current user
        internal_user = login_user = pwd.getpwuid(os.geteuid()).pw_name
        mail_uid = os.geteuid()
    home = root / "home"
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(home, mail_uid, pwd.getpwuid(mail_uid).pw_gid)
    (root / "passwd").write_text(f"{username}:{{PLAIN}}{password}::::\n")
    shutil.copy(cert, root / "cert.pem")
    shutil.copy(key, root / "key.pem")
    config = root / "dovecot.conf"
    config.write_text(
        textwrap.dedent(
            f"""\
            base_dir = {root}/run
            state_dir = {root}/state
            log_path = {root}/dovecot.log
            protocols = imap
            listen = 127.0.0.1
            ssl = required
            ssl_cert = <{root}/cert.pem
            ssl_key = <{root}/key.pem
            auth_mechanisms = plain login
            default_internal_user = {internal_user}
            default_internal_group = {grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name}
            default_login_user = {login_user}
            first_valid_uid = 1
            mail_location = maildir:{home}/%n/Maildir
            passdb {{
              driver = passwd-file
              args = scheme=PLAIN username_format=%u {root}/passwd
            }}
            userdb {{
              driver = static
              args = uid={mail_uid} gid={pwd.getpwuid(mail_uid).pw_gid} home={home}/%n
            }}
            service imap-login {{
              chroot =
              inet_listener imap {{
                port = 0
              }}
              inet_listener imaps {{
                port = {port}
                ssl = yes
              }}
            }}
            service anvil {{
              chroot =
            }}
            """
        )
    )
    # Dovecot daemonises: its children inherit stdout/stderr, so no pipes (they would never
    # reach EOF); start-up errors go to a file. Our own binary and config: no untrusted input.
    with (root / "start.log").open("wb") as start_log:
        started = subprocess.run(  # noqa: S603 - see above
            [binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=start_log,
            stderr=subprocess.STDOUT, check=False, timeout=30,
        )  # fmt: skip
    if started.returncode != 0:
        output = (root / "start.log").read_text(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"dovecot failed to start: {output}")
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                log = (root / "dovecot.log").read_text(errors="replace")
                raise RuntimeError(f"dovecot did not start:\n{log}")
            time.sleep(0.1)
        yield Dovecot(port, cert, username, password)
    finally:
        pidfile = root / "run" / "master.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- DKIM and DNS


@dataclass(frozen=True)
class DkimKey:
    """An RSA key pair made for the test: the PEM private key (RFC 8017, as dkimpy signs
    with) and the TXT record that publishes its public half."""

    private_pem: bytes
    txt: bytes

    def sign(self, data: bytes, domain: str, selector: str = "sel") -> bytes:
        """``data`` with a ``DKIM-Signature`` of ``domain`` prepended."""
        signature = dkim.sign(
            data, selector.encode(), domain.encode(), self.private_pem,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )  # fmt: skip
        return bytes(signature) + data


def _openssl(*args: str, stdin: bytes = b"") -> bytes:
    return subprocess.run(  # noqa: S603 - a fixed command line, no user input
        ["openssl", *args],  # noqa: S607 - openssl from PATH, as on any Debian machine
        input=stdin, check=True, capture_output=True,
    ).stdout  # fmt: skip


@pytest.fixture(scope="session")
def dkim_key() -> DkimKey:
    """A fresh 2048-bit RSA DKIM key (never a fixture file: nothing secret in the repo)."""
    key = _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
    private = _openssl("rsa", "-traditional", stdin=key)
    public = _openssl("rsa", "-pubout", "-outform", "DER", stdin=key)
    return DkimKey(private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))


class DnsStub:
    """A DNS server on 127.0.0.1 (UDP) answering TXT questions from ``records``; every
    other name is NXDOMAIN. Runs in a thread; the service under test asks it for keys."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.questions: list[str] = []
        #: Hear the questions but never answer (a resolver that is down).
        self.silent = False
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            self.questions.append(name)
            if self.silent:
                continue
            value = self.records.get(name)
            if value is None or question.rdtype != dns.rdatatype.TXT:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                chunks = " ".join(
                    '"' + value[i : i + 255].decode() + '"' for i in range(0, len(value), 255)
                )
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", chunks))
            self._socket.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture
def dns_stub() -> Iterator[DnsStub]:
    """A local DNS server for DKIM keys (nothing here reaches a real resolver)."""
    stub = DnsStub()
    try:
        yield stub
    finally:
        stub.close()
