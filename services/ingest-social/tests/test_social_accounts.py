"""The accounts file: tenants, per-account secrets by reference, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from switchboard_common.contract import Channel
from switchboard_devtools.testing.social import (
    BOT,
    GLOBEX_META_SECRET,
    GLOBEX_PAGE,
    META_SECRET,
    OTHER_BOT,
    PAGE,
    TELEGRAM_OTHER_TOKEN,
    TELEGRAM_TOKEN,
    default_secrets,
)
from switchboard_ingest_social.accounts import (
    LONE_TELEGRAM_BOT,
    META_CHANNELS,
    AccountDirectory,
    AccountsFileError,
    load_directory,
)

pytestmark = pytest.mark.unit


def test_tenants_and_secrets_resolve_per_account(directory: AccountDirectory) -> None:
    assert directory.tenant(Channel.MESSENGER, PAGE) == "acme"
    assert directory.tenant(Channel.MESSENGER, GLOBEX_PAGE) == "globex"
    assert directory.tenant(Channel.MESSENGER, "999") is None
    assert directory.secret_for(Channel.MESSENGER, PAGE) == META_SECRET.encode()
    assert directory.secret_for(Channel.MESSENGER, GLOBEX_PAGE) == GLOBEX_META_SECRET.encode()
    assert directory.secret_for(Channel.MESSENGER, "999") == META_SECRET.encode()
    assert set(directory.candidate_secrets(META_CHANNELS)) == {
        META_SECRET.encode(),
        GLOBEX_META_SECRET.encode(),
    }
    assert directory.signed_by(Channel.MESSENGER, GLOBEX_PAGE, GLOBEX_META_SECRET.encode())
    assert not directory.signed_by(Channel.MESSENGER, GLOBEX_PAGE, META_SECRET.encode())


def test_telegram_bots_are_recognised_by_their_secret_token(directory: AccountDirectory) -> None:
    assert directory.telegram_bot_for_token(TELEGRAM_TOKEN) == BOT
    assert directory.telegram_bot_for_token(TELEGRAM_OTHER_TOKEN) == OTHER_BOT
    assert directory.telegram_bot_for_token("nope") is None
    assert directory.telegram_bot_for_token(TELEGRAM_TOKEN + " ") is None


def test_telegram_secret_token_alone_serves_one_bot(tmp_path: Path) -> None:
    alone = load_directory(None, default_secrets())
    assert alone.telegram_bot_for_token(TELEGRAM_TOKEN) == LONE_TELEGRAM_BOT
    assert alone.telegram_bot_for_token(TELEGRAM_OTHER_TOKEN) is None
    # A file whose bots all have their own tokens leaves the deployment's to the lone bot.
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n  - {channel: telegram, account: '2', secret_env: OWN}\n", encoding="utf-8"
    )
    mixed = load_directory(path, default_secrets(), environ={"OWN": TELEGRAM_OTHER_TOKEN})
    assert mixed.telegram_bot_for_token(TELEGRAM_OTHER_TOKEN) == "2"
    assert mixed.telegram_bot_for_token(TELEGRAM_TOKEN) == LONE_TELEGRAM_BOT


def test_unknown_accounts_policy(directory: AccountDirectory) -> None:
    assert directory.admits(Channel.MESSENGER, "999")
    strict = AccountDirectory(directory.accounts, directory.default_secrets, "ignore")
    assert not strict.admits(Channel.MESSENGER, "999")
    assert strict.admits(Channel.MESSENGER, PAGE)


def test_secrets_can_come_from_mounted_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "globex"
    secret_file.write_text("from-a-file\n")
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n  - {channel: instagram, account: '42', tenant: t, secret_env: IG_SECRET}\n"
    )
    directory = load_directory(
        path, default_secrets(), environ={"IG_SECRET_FILE": str(secret_file)}
    )
    assert directory.secret_for(Channel.INSTAGRAM, "42") == b"from-a-file"
    assert "from-a-file" not in repr(directory)


def test_an_account_may_name_its_own_send_token(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        "  - {channel: telegram, account: '7012345679', send_token_env: GLOBEX_BOT}\n"
        "  - {channel: whatsapp, account: '106540352242922'}\n",
        encoding="utf-8",
    )
    directory = load_directory(
        path, default_secrets(), environ={"GLOBEX_BOT": "7012345679:from-the-env"}
    )
    assert directory.send_tokens(Channel.TELEGRAM) == {"7012345679": "7012345679:from-the-env"}
    assert directory.send_tokens(Channel.WHATSAPP) == {}
    assert "from-the-env" not in repr(directory)


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        ("accounts: [", {}, "not valid YAML"),
        ("accounts:\n  - {channel: fax, account: '1'}\n", {}, "accounts.0.channel"),
        ("accounts:\n  - {channel: x, account: '1', secret: inline}\n", {}, "secret"),
        ("accounts:\n  - {channel: x, account: '1', secret_env: NOPE}\n", {}, "NOPE is not set"),
        (
            "accounts:\n  - {channel: telegram, account: '1', send_token_env: GONE}\n",
            {},
            "accounts.0: send_token_env GONE is not set",
        ),
        (
            "accounts:\n  - {channel: x, account: '1'}\n  - {channel: x, account: '1'}\n",
            {},
            "listed twice",
        ),
        (
            "accounts:\n  - {channel: telegram, account: '1'}\n"
            "  - {channel: telegram, account: '2', secret_env: SAME}\n",
            {"SAME": TELEGRAM_TOKEN},
            "share a secret token",
        ),
    ],
)
def test_a_bad_accounts_file_is_a_clear_error(
    tmp_path: Path, content: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(content)
    with pytest.raises(AccountsFileError, match=message):
        load_directory(path, default_secrets(), environ=environ)


def test_an_unreadable_accounts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AccountsFileError, match=r"missing\.yaml: cannot read"):
        load_directory(tmp_path / "missing.yaml", {Channel.X: SecretStr("s")})


def test_no_file_means_no_accounts_and_the_deployment_secrets() -> None:
    directory = load_directory(None, default_secrets())
    assert directory.accounts == {}
    assert (
        directory.secret_for(Channel.X, "1")
        == default_secrets()[Channel.X].get_secret_value().encode()
    )
