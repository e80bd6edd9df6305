"""``make run`` gives the router its development API tokens and prints them, in dev only,
and never prints a token the caller set."""

from __future__ import annotations

import pytest

from switchboard_devkit.supervisor import router_tokens
from switchboard_router.settings import DEV_TOKENS

pytestmark = pytest.mark.unit


def test_in_dev_the_router_gets_the_development_tokens_and_they_are_printed() -> None:
    env = {"SWITCHBOARD_ENV": "dev"}
    printed = "\n".join(router_tokens(env))
    for variable, token in DEV_TOKENS.items():
        assert env[variable] == token
        assert f"{variable}={token}" in printed
    assert f"Authorization: Bearer {DEV_TOKENS['ROUTER_READ_TOKEN']}" in printed


def test_tokens_the_caller_set_are_kept_and_not_printed() -> None:
    env = {
        "SWITCHBOARD_ENV": "dev",
        "ROUTER_READ_TOKEN": "mine-read",
        "ROUTER_ADMIN_TOKEN_FILE": "/run/secrets/admin",
    }
    printed = "\n".join(router_tokens(env))
    assert env["ROUTER_READ_TOKEN"] == "mine-read"  # noqa: S105
    assert "ROUTER_ADMIN_TOKEN" not in env
    assert "mine-read" not in printed
    assert "dev-router" not in printed


def test_outside_dev_nothing_is_given() -> None:
    env = {"SWITCHBOARD_ENV": "production"}
    assert router_tokens(env) == []
    assert env == {"SWITCHBOARD_ENV": "production"}
