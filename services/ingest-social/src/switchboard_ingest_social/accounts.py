"""Provider accounts: which tenant each page, number, account or bot belongs to, and
which secret signs its webhooks.

The accounts file (``INGEST_SOCIAL_ACCOUNTS_FILE``, YAML) lists accounts; secrets are
never written in it, only referenced by the name of an environment variable (read from
``NAME`` or from the file named by ``NAME_FILE``)::

    accounts:
      - channel: whatsapp            # whatsapp | messenger | instagram | x | telegram
        account: "106540352242922"   # phone_number_id, page id, IG account id, X user id, bot id
        tenant: acme
      - channel: messenger
        account: "1122334455667788"
        tenant: globex
        secret_env: GLOBEX_META_APP_SECRET   # this page's Meta app signs with another secret

An account without ``secret_env`` is signed with the deployment's secret of its provider
(``META_APP_SECRET``, ``X_CONSUMER_SECRET``, ``TELEGRAM_SECRET_TOKEN``). Without a file
(or with no bot of the file using it) ``TELEGRAM_SECRET_TOKEN`` alone serves one bot,
whose updates are filed under ``LONE_TELEGRAM_BOT``: Telegram's updates do not name the
bot, and the bot's id is not needed to receive them.

``AccountDirectory`` is plain data: loading reads files and the environment once at
start; lookups afterwards are pure.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from switchboard_common.cloudevents import describe_validation_error
from switchboard_common.contract import Channel

#: Which deployment-wide secret signs each channel when an account has none of its own.
META_CHANNELS = frozenset({Channel.WHATSAPP, Channel.MESSENGER, Channel.INSTAGRAM})
SOCIAL_CHANNELS = (*sorted(META_CHANNELS), Channel.X, Channel.TELEGRAM)

UnknownAccounts = Literal["accept", "ignore"]
#: The account of the deployment's one bot when the accounts file does not name it.
LONE_TELEGRAM_BOT = "default"


class AccountsFileError(ValueError):
    """The accounts file is unreadable or invalid; the message says where and why."""


class _AccountEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["whatsapp", "messenger", "instagram", "x", "telegram"]
    account: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")
    tenant: str | None = Field(None, min_length=1, max_length=128)
    secret_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    #: The variable holding what replies from this account are sent with (a WhatsApp
    #: access token, a page access token, an X user-context token, a Telegram bot token).
    send_token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")


class _AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: list[_AccountEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Account:
    """One provider account of this deployment."""

    channel: Channel
    account: str
    tenant: str | None
    #: The account's own signing secret, or None to use the provider-wide one.
    secret: SecretStr | None = field(default=None, repr=False)
    #: What replies from this account are sent with, or None for the deployment's.
    send_token: SecretStr | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AccountDirectory:
    """Accounts by (channel, account id), plus the provider-wide secrets.

    ``secret_for`` answers which secret must have signed a webhook for an account;
    ``candidate_secrets`` lists every secret a request of a provider may be signed with.
    """

    accounts: Mapping[tuple[Channel, str], Account]
    default_secrets: Mapping[Channel, SecretStr]
    unknown: UnknownAccounts = "accept"

    def lookup(self, channel: Channel, account: str) -> Account | None:
        """The configured account, or None when the file does not list it."""
        return self.accounts.get((channel, account))

    def admits(self, channel: Channel, account: str) -> bool:
        """Whether a message for this account is published (known, or unknown accepted)."""
        return self.unknown == "accept" or (channel, account) in self.accounts

    def tenant(self, channel: Channel, account: str) -> str | None:
        known = self.lookup(channel, account)
        return known.tenant if known else None

    def secret_for(self, channel: Channel, account: str) -> bytes:
        """The secret that must sign webhooks for this account."""
        known = self.lookup(channel, account)
        if known is not None and known.secret is not None:
            return known.secret.get_secret_value().encode()
        return self.default_secrets[channel].get_secret_value().encode()

    def candidate_secrets(self, channels: Iterable[Channel]) -> list[bytes]:
        """Distinct secrets that may sign a request for any of these channels."""
        wanted = set(channels)
        found = [self.default_secrets[c].get_secret_value().encode() for c in sorted(wanted)]
        for (channel, _), account in sorted(self.accounts.items()):
            if channel in wanted and account.secret is not None:
                found.append(account.secret.get_secret_value().encode())
        return list(dict.fromkeys(found))

    def send_tokens(self, channel: Channel) -> dict[str, str]:
        """The accounts of ``channel`` with a send token of their own, and the token."""
        return {
            account: known.send_token.get_secret_value()
            for (listed, account), known in sorted(self.accounts.items())
            if listed == channel and known.send_token is not None
        }

    def signed_by(self, channel: Channel, account: str, secret: bytes) -> bool:
        """Whether ``secret`` is the one that signs this account's webhooks (constant time)."""
        return hmac.compare_digest(self.secret_for(channel, account), secret)

    def telegram_bot_for_token(self, token: str) -> str | None:
        """The bot whose secret token equals ``token``: a bot of the file, else the lone
        bot of ``TELEGRAM_SECRET_TOKEN``; None when no secret matches.

        Every secret is compared, in constant time, whatever matches. Bots of the file
        have distinct tokens (checked at load), so at most one of them matches.
        """
        presented = token.encode()
        listed = [
            account.account
            for (channel, _), account in sorted(self.accounts.items())
            if channel == Channel.TELEGRAM
            and hmac.compare_digest(presented, self.secret_for(channel, account.account))
        ]
        default = self.default_secrets.get(Channel.TELEGRAM)
        lone = default is not None and hmac.compare_digest(
            presented, default.get_secret_value().encode()
        )
        if listed:
            return listed[0]
        return LONE_TELEGRAM_BOT if lone else None


def load_directory(
    path: Path | None,
    default_secrets: Mapping[Channel, SecretStr],
    *,
    unknown: UnknownAccounts = "accept",
    environ: Mapping[str, str] | None = None,
) -> AccountDirectory:
    """Read the accounts file (if any) and resolve its secret references.

    Raises ``AccountsFileError`` naming the file, the entry and the problem: unreadable
    file, invalid YAML, unknown keys, a duplicate account, a ``secret_env`` or
    ``send_token_env`` that is not set, or two Telegram bots with the same secret token
    (they could not be told apart).
    """
    environ = os.environ if environ is None else environ
    if path is None:
        return AccountDirectory({}, dict(default_secrets), unknown)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise AccountsFileError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise AccountsFileError(f"{path}: not valid YAML ({error})") from None
    try:
        parsed = _AccountsFile.model_validate(raw)
    except ValidationError as error:
        raise AccountsFileError(f"{path}: {describe_validation_error(error)}") from None
    accounts: dict[tuple[Channel, str], Account] = {}
    for index, entry in enumerate(parsed.accounts):
        channel = Channel(entry.channel)
        if (channel, entry.account) in accounts:
            raise AccountsFileError(
                f"{path}: accounts.{index}: {entry.channel} account {entry.account} is listed twice"
            )
        where = f"{path}: accounts.{index}"
        secret = _referenced(where, "secret_env", entry.secret_env, environ)
        send_token = _referenced(where, "send_token_env", entry.send_token_env, environ)
        accounts[(channel, entry.account)] = Account(
            channel, entry.account, entry.tenant, secret, send_token
        )
    directory = AccountDirectory(accounts, dict(default_secrets), unknown)
    _check_telegram_tokens_distinct(path, directory)
    return directory


def _referenced(
    where: str, key: str, name: str | None, environ: Mapping[str, str]
) -> SecretStr | None:
    """The secret an entry's ``key`` names (``NAME`` or ``NAME_FILE``); an entry naming
    one that is not set stops start-up."""
    if name is None:
        return None
    value = _read_secret(name, environ)
    if value is None:
        raise AccountsFileError(f"{where}: {key} {name} is not set (set {name} or {name}_FILE)")
    return SecretStr(value)


def _read_secret(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(name)
    if value:
        return value
    file = environ.get(f"{name}_FILE")
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    return None


def _check_telegram_tokens_distinct(path: Path, directory: AccountDirectory) -> None:
    # Telegram requests carry no bot id: the secret token is how a bot is recognised.
    seen: dict[bytes, str] = {}
    for (channel, account), _ in sorted(directory.accounts.items()):
        if channel != Channel.TELEGRAM:
            continue
        secret = directory.secret_for(channel, account)
        if secret in seen:
            raise AccountsFileError(
                f"{path}: telegram bots {seen[secret]} and {account} share a secret token; "
                "give each bot its own secret_env (setWebhook secret_token) so their "
                "updates can be told apart"
            )
        seen[secret] = account
