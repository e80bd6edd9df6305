"""ingest-email's settings: one frozen object, built once at start (``IngestEmailSettings.load``).

Refuses to start (``SettingsError``) when it would accept mail for no domain or address
at all (never an open relay), when only one of the STARTTLS certificate and key is given,
or when an IMAP mailbox's configuration or password is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from switchboard_common.settings import ServiceSettings, SettingsError, env
from switchboard_ingest_email.admission import Limits
from switchboard_ingest_email.authentication import parse_resolver
from switchboard_ingest_email.recipients import RecipientPolicy, parse_tenants, split_list
from switchboard_ingest_email.replies import RelayConfig, parse_from_addresses

MIB = 1024 * 1024


class MailboxConfig(BaseModel):
    """One IMAP mailbox to poll (an item of ``INGEST_EMAIL_IMAP_MAILBOXES``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A short label for logs and metrics (bounded: one per configured mailbox).
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str
    port: int = Field(993, ge=1, le=65535)
    username: str
    #: Environment variable holding the password (``<NAME>_FILE`` also works).
    password_env: str | None = None
    #: A mounted file holding the password.
    password_file: Path | None = None
    mailbox: str = "INBOX"
    #: The support address the mailbox receives for (the event's ``account``); defaults
    #: to ``username`` when that is an address.
    account: str | None = None
    #: The tenant; defaults to the ``INGEST_EMAIL_TENANTS`` entry of the account.
    tenant: str | None = None
    #: CA bundle to verify the server with (self-signed servers); system CAs otherwise.
    ca_file: Path | None = None
    #: After publishing, move the message here instead of only flagging it \\Seen.
    move_to: str | None = None
    #: Seconds between polls when the server has no IDLE (and the longest IDLE wait).
    poll_interval_seconds: float = Field(60.0, gt=0, le=3600)
    #: Use IDLE when the server offers it.
    idle: bool = True
    #: Messages fetched per round.
    batch_size: int = Field(50, ge=1, le=1000)
    password: SecretStr | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _has_account(self) -> Self:
        if self.account is None and "@" not in self.username:
            raise ValueError(f"mailbox {self.name}: set `account` (the support address)")
        return self

    @property
    def support_address(self) -> str:
        return (self.account or self.username).strip().lower()


def _read_password(box: MailboxConfig) -> SecretStr:
    if box.password_file is not None:
        try:
            return SecretStr(box.password_file.read_text(encoding="utf-8").strip())
        except OSError as error:
            raise SettingsError(
                f"mailbox {box.name}: cannot read password_file ({error})"
            ) from None
    if box.password_env:
        value = os.environ.get(box.password_env)
        file_path = os.environ.get(f"{box.password_env}_FILE")
        if value:
            return SecretStr(value)
        if file_path:
            try:
                return SecretStr(Path(file_path).read_text(encoding="utf-8").strip())
            except OSError as error:
                raise SettingsError(
                    f"mailbox {box.name}: {box.password_env}_FILE cannot be read ({error})"
                ) from None
        raise SettingsError(
            f"mailbox {box.name}: missing secret {box.password_env} "
            f"(set it or {box.password_env}_FILE)"
        )
    raise SettingsError(f"mailbox {box.name}: set password_env or password_file")


def parse_mailboxes(text: str | None) -> tuple[MailboxConfig, ...]:
    """Mailboxes from YAML or JSON text (a list, or ``{mailboxes: [...]}``), with passwords."""
    if not text or not text.strip():
        return ()
    try:
        data: Any = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise SettingsError(
                f"INGEST_EMAIL_IMAP_MAILBOXES: not YAML or JSON ({error})"
            ) from None
    if isinstance(data, dict):
        data = data.get("mailboxes", [])
    if not isinstance(data, list):
        raise SettingsError("INGEST_EMAIL_IMAP_MAILBOXES: expected a list of mailboxes")
    boxes = []
    for item in data:
        try:
            box = MailboxConfig.model_validate(item)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise SettingsError(f"INGEST_EMAIL_IMAP_MAILBOXES: {problems}") from None
        boxes.append(box.model_copy(update={"password": _read_password(box)}))
    names = [b.name for b in boxes]
    if len(set(names)) != len(names):
        raise SettingsError("INGEST_EMAIL_IMAP_MAILBOXES: mailbox names must be unique")
    return tuple(boxes)


class IngestEmailSettings(ServiceSettings):
    """Environment of ingest-email (see the service README for every variable)."""

    service_name: ClassVar[str] = "ingest-email"

    support_email_domains: str = Field("", validation_alias=env("SUPPORT_EMAIL_DOMAINS"))
    support_email_addresses: str = Field(
        "", validation_alias=env("INGEST_EMAIL_ADDRESSES", "SUPPORT_EMAIL_ADDRESSES")
    )
    #: ``domain-or-address=tenant`` pairs, comma-separated.
    tenants_spec: str = Field("", validation_alias=env("INGEST_EMAIL_TENANTS"))

    smtp_host: str = Field("127.0.0.1", validation_alias=env("INGEST_EMAIL_SMTP_HOST"))
    smtp_port: int = Field(2525, ge=0, le=65535, validation_alias=env("INGEST_EMAIL_SMTP_PORT"))
    #: Name in the SMTP greeting and EHLO reply.
    smtp_hostname: str = Field(
        "switchboard-ingest-email", validation_alias=env("INGEST_EMAIL_SMTP_HOSTNAME")
    )
    http_port: int = Field(8001, ge=0, le=65535, validation_alias=env("INGEST_EMAIL_HTTP_PORT"))
    max_message_bytes: int = Field(
        25 * MIB, ge=1024, le=512 * MIB, validation_alias=env("INGEST_EMAIL_MAX_MESSAGE_BYTES")
    )
    tls_certfile: Path | None = Field(None, validation_alias=env("INGEST_EMAIL_TLS_CERTFILE"))
    tls_keyfile: Path | None = Field(None, validation_alias=env("INGEST_EMAIL_TLS_KEYFILE"))
    require_starttls: bool = Field(False, validation_alias=env("INGEST_EMAIL_REQUIRE_STARTTLS"))
    #: Longest wait for the raw store, and Kafka's delivery timeout for the event, before
    #: answering 451 (the sender retries later).
    publish_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias=env("INGEST_EMAIL_PUBLISH_TIMEOUT_SECONDS")
    )
    #: Messages being stored and published at once; more wait (backpressure).
    max_in_flight: int = Field(
        64, ge=1, le=10000, validation_alias=env("INGEST_EMAIL_MAX_IN_FLIGHT")
    )
    #: Seconds an idle SMTP connection is kept.
    smtp_idle_timeout_seconds: float = Field(
        300.0, gt=0, validation_alias=env("INGEST_EMAIL_SMTP_IDLE_TIMEOUT_SECONDS")
    )
    #: Days the raw mail (every byte received, attachments included) is kept.
    raw_retention_days: float = Field(
        30.0, gt=0, le=3650, validation_alias=env("INGEST_EMAIL_RAW_RETENTION_DAYS")
    )
    #: Seconds between two purges of raw mail past its retention.
    raw_purge_interval_seconds: float = Field(
        3600.0, gt=0, validation_alias=env("INGEST_EMAIL_RAW_PURGE_INTERVAL_SECONDS")
    )
    #: Connections the kernel holds for the SMTP listener until the service accepts them.
    #: A burst beyond it is not refused but left to the sender's TCP retransmissions, so a
    #: busy service could leave a sender with no reply at all instead of a prompt 421;
    #: the kernel caps it at ``net.core.somaxconn``.
    smtp_listen_backlog: int = Field(
        1024, ge=1, le=65_535, validation_alias=env("INGEST_EMAIL_SMTP_LISTEN_BACKLOG")
    )
    #: Open SMTP connections at once; more are refused with 421.
    max_sessions: int = Field(
        100, ge=1, le=100_000, validation_alias=env("INGEST_EMAIL_MAX_SESSIONS")
    )
    #: Open SMTP connections from one IP address; more are refused with 421.
    max_sessions_per_ip: int = Field(
        20, ge=1, le=100_000, validation_alias=env("INGEST_EMAIL_MAX_SESSIONS_PER_IP")
    )
    #: Transactions (MAIL FROM) per minute from one IP address; more get 451 4.7.1.
    messages_per_ip_per_minute: int = Field(
        300, ge=1, le=1_000_000, validation_alias=env("INGEST_EMAIL_MESSAGES_PER_IP_PER_MINUTE")
    )
    #: Accepted recipients per message; more get 452 4.5.3 (RFC 5321 asks for at least 100).
    max_recipients: int = Field(
        100, ge=1, le=10_000, validation_alias=env("INGEST_EMAIL_MAX_RECIPIENTS")
    )
    #: The memory the process may use (the container's limit); the memory budget for
    #: messages is derived from it unless given explicitly.
    memory_limit_bytes: int = Field(
        512 * MIB, ge=64 * MIB, validation_alias=env("INGEST_EMAIL_MEMORY_LIMIT_BYTES")
    )
    #: Bytes of memory messages being received, parsed, stored and published may use.
    memory_budget_bytes: int | None = Field(
        None, ge=1, validation_alias=env("INGEST_EMAIL_MEMORY_BUDGET_BYTES")
    )
    #: IMAP mailboxes as YAML or JSON (or ``INGEST_EMAIL_IMAP_MAILBOXES_FILE``: a file of it).
    imap_mailboxes_spec: str | None = Field(
        None, validation_alias=env("INGEST_EMAIL_IMAP_MAILBOXES")
    )

    #: How the From domain is checked (see ``authentication``): ``dkim`` verifies DKIM
    #: signatures here, ``authentication-results`` trusts an MTA in front, ``off`` does
    #: neither (every sender then counts as unauthenticated for identity linking).
    sender_auth: Literal["dkim", "authentication-results", "off"] = Field(
        "dkim", validation_alias=env("INGEST_EMAIL_SENDER_AUTH")
    )
    #: Comma-separated authserv-ids whose ``Authentication-Results`` are trusted.
    authserv_ids: str = Field("", validation_alias=env("INGEST_EMAIL_AUTHSERV_IDS"))
    #: DNS resolver for DKIM keys: ``ip``, ``ip:port`` or ``[v6]:port``; empty: the
    #: system's.
    dns_resolver: str = Field("", validation_alias=env("INGEST_EMAIL_DNS_RESOLVER"))
    dns_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias=env("INGEST_EMAIL_DNS_TIMEOUT_SECONDS")
    )

    #: Replies to customers (``replies.py``): the relay they are submitted to; unset, the
    #: service sends nothing and the replies wait on their topic until it is set.
    outbound_smtp_url: str = Field("", validation_alias=env("OUTBOUND_SMTP_URL"))
    outbound_smtp_password: SecretStr | None = Field(
        None, validation_alias=env("OUTBOUND_SMTP_PASSWORD")
    )
    #: The From of replies per support domain: ``domain=Display Name <address>;...``.
    #: Domains not listed reply from the address the customer wrote to.
    outbound_email_from: str = Field("", validation_alias=env("OUTBOUND_EMAIL_FROM"))
    #: CA bundle the relay's certificate is checked against (default: the system's).
    outbound_smtp_ca_file: Path | None = Field(None, validation_alias=env("OUTBOUND_SMTP_CA_FILE"))
    outbound_smtp_timeout_seconds: float = Field(
        30.0, gt=0, le=600, validation_alias=env("OUTBOUND_SMTP_TIMEOUT_SECONDS")
    )
    #: First retry delay of a temporary relay failure (then 4 times longer each time, with jitter).
    outbound_retry_seconds: float = Field(
        1.0, ge=0, le=60, validation_alias=env("INGEST_EMAIL_OUTBOUND_RETRY_SECONDS")
    )
    replies_batch_max_records: int = Field(
        100, ge=1, le=1000, validation_alias=env("INGEST_EMAIL_REPLIES_BATCH_MAX_RECORDS")
    )
    _mailboxes: tuple[MailboxConfig, ...] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("INGEST_EMAIL_TLS_CERTFILE and INGEST_EMAIL_TLS_KEYFILE go together")
        parse_tenants(self.tenants_spec)
        if self.dns_resolver:
            try:
                parse_resolver(self.dns_resolver)
            except ValueError:
                raise ValueError(
                    "INGEST_EMAIL_DNS_RESOLVER must be an IP address, ip:port or [v6]:port"
                ) from None
        if self.sender_auth == "authentication-results" and not split_list(self.authserv_ids):
            raise ValueError(
                "INGEST_EMAIL_SENDER_AUTH=authentication-results needs INGEST_EMAIL_AUTHSERV_IDS "
                "(the authserv-id your MTA writes in Authentication-Results)"
            )
        parse_from_addresses(self.outbound_email_from)
        if self.outbound_smtp_url:
            self.relay  # noqa: B018 - checks the URL: a bad one stops the service at start
        return self

    @property
    def reply_senders(self) -> dict[str, str]:
        """Support domain → the From of its replies."""
        return parse_from_addresses(self.outbound_email_from)

    @property
    def relay(self) -> RelayConfig | None:
        """The outbound relay, when ``OUTBOUND_SMTP_URL`` is set."""
        if not self.outbound_smtp_url:
            return None
        password = self.outbound_smtp_password
        return RelayConfig.parse(
            self.outbound_smtp_url,
            password=password.get_secret_value() if password is not None else None,
            ca_file=self.outbound_smtp_ca_file,
            timeout=self.outbound_smtp_timeout_seconds,
        )

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build and check the settings; raises ``SettingsError`` with clear text."""
        settings = super().load(**overrides)
        if settings.recipient_policy.empty:
            raise SettingsError(
                "ingest-email: no support domain or address configured, so every recipient "
                "would be refused (and accepting all would make an open relay). Set "
                "SUPPORT_EMAIL_DOMAINS (comma-separated domains) and/or INGEST_EMAIL_ADDRESSES."
            )
        problem = settings.limits.problem()
        if problem is not None:
            raise SettingsError(f"ingest-email: {problem}.")
        settings._mailboxes = parse_mailboxes(settings.imap_mailboxes_spec)
        return settings

    @property
    def limits(self) -> Limits:
        """What the SMTP server takes on (sessions, rates, recipients, memory)."""
        budget = self.memory_budget_bytes
        if budget is None:
            budget = Limits.budget_for(self.memory_limit_bytes, self.max_sessions)
        return Limits(
            max_sessions=self.max_sessions,
            max_sessions_per_client=self.max_sessions_per_ip,
            messages_per_client_per_minute=self.messages_per_ip_per_minute,
            max_recipients=self.max_recipients,
            max_message_bytes=self.max_message_bytes,
            memory_budget_bytes=budget,
            memory_limit_bytes=self.memory_limit_bytes,
        )

    @property
    def recipient_policy(self) -> RecipientPolicy:
        """The accepted domains and addresses, with their tenants."""
        return RecipientPolicy.of(
            split_list(self.support_email_domains),
            split_list(self.support_email_addresses),
            parse_tenants(self.tenants_spec),
        )

    @property
    def mailboxes(self) -> tuple[MailboxConfig, ...]:
        """IMAP mailboxes with their passwords (read once by ``load``)."""
        if self._mailboxes is None:
            return parse_mailboxes(self.imap_mailboxes_spec)
        return self._mailboxes
